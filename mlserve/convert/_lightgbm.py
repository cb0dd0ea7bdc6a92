"""Converter for LightGBM models (filled in below)."""
CONVERTERS = {}
