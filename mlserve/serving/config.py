"""The MLSERVE_* configuration keys: defaults in one block, validated by name."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from mlserve.store import StoreError, validate_alias, validate_name

__all__ = ["DEFAULTS", "ConfigError", "ServingConfig"]

#: Every configuration key with its default. Keys set in ``app.config`` win
#: over these; arguments to ``mlserve.blueprint(...)`` win over ``app.config``.
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "MLSERVE_STORE": None,  # a folder path or a ModelStore (MLServe extension only)
        "MLSERVE_URL_PREFIX": "",  # where the MLServe extension mounts the blueprint
        "MLSERVE_MAX_BODY_BYTES": 64 * 1024 * 1024,  # larger bodies get 413, as Triton
        "MLSERVE_RELOAD_INTERVAL": 2.0,  # seconds between store checks; 0 disables polling
        "MLSERVE_DEFAULT_MODEL": None,  # the model behind /invocations (default: the only one)
        "MLSERVE_DEFAULT_ALIAS": "production",  # the alias used when a request names none
        "MLSERVE_WARMUP": True,  # one predict on a zero row before a version takes traffic
        "MLSERVE_ADMIN_ENABLED": True,  # POST /admin/reload
    }
)


class ConfigError(ValueError):
    """A MLSERVE_* configuration value is invalid; the message names the key."""


@dataclass(frozen=True)
class ServingConfig:
    max_body_bytes: int
    reload_interval: float
    default_model: str | None
    default_alias: str | None
    warmup: bool
    admin_enabled: bool

    @classmethod
    def from_mapping(
        cls, config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
    ) -> "ServingConfig":
        """Read and validate the keys from ``config`` (e.g. ``app.config``)."""
        values = dict(DEFAULTS)
        values.update({k: v for k, v in config.items() if k in DEFAULTS})
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        unknown = [k for k in config if k.startswith("MLSERVE_") and k not in DEFAULTS]
        if unknown:
            raise ConfigError(
                f"unknown configuration key {unknown[0]}; known keys: {', '.join(DEFAULTS)}"
            )
        return cls(
            max_body_bytes=_positive_int(values, "MLSERVE_MAX_BODY_BYTES"),
            reload_interval=_non_negative_float(values, "MLSERVE_RELOAD_INTERVAL"),
            default_model=_optional_name(values, "MLSERVE_DEFAULT_MODEL", "model name"),
            default_alias=_optional_name(values, "MLSERVE_DEFAULT_ALIAS", "alias"),
            warmup=_bool(values, "MLSERVE_WARMUP"),
            admin_enabled=_bool(values, "MLSERVE_ADMIN_ENABLED"),
        )


def _positive_int(values: Mapping[str, Any], key: str) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer (bytes), got {value!r}")
    return value


def _non_negative_float(values: Mapping[str, Any], key: str) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{key} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _optional_name(values: Mapping[str, Any], key: str, what: str) -> str | None:
    value = values[key]
    if value is None or value == "":
        return None
    try:
        return validate_alias(value) if what == "alias" else validate_name(value, what)
    except StoreError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _bool(values: Mapping[str, Any], key: str) -> bool:
    value = values[key]
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be True or False, got {value!r}")
    return value
