"""Serving: the Flask blueprint, the MLServe extension, codecs and the runtime."""

from mlserve.serving.blueprint import blueprint, serving_state
from mlserve.serving.config import ConfigError, ServingConfig
from mlserve.serving.extension import MLServe

__all__ = ["ConfigError", "MLServe", "ServingConfig", "blueprint", "serving_state"]
