"""Converter for XGBoost models (filled in below)."""
CONVERTERS = {}
