"""The MLSERVE_* configuration keys: defaults in one block, validated by name."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from mlserve.serving.batching import BatchConfig, BatchingError, parse_batching
from mlserve.store import StoreError, validate_alias, validate_name

__all__ = ["DEFAULTS", "ConfigError", "ServingConfig", "parse_environ", "url_prefix"]

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
        # micro-batching (mlserve/serving/batching.py)
        "MLSERVE_BATCHING": True,  # coalesce concurrent requests for one model version
        "MLSERVE_BATCH_MAX_SIZE": 64,  # most rows in one batched core call
        "MLSERVE_BATCH_MAX_DELAY_MS": 2.0,  # longest a queued request waits for others
        "MLSERVE_BATCHING_MODELS": None,  # per model: {"name": {option: value, ...} or False}
        # the admin endpoints (POST /admin/reload, /v2/repository/models/<name>/load|unload):
        # None = on only with MLSERVE_API_KEYS (and then only for keys with the admin scope);
        # True opens them without keys too; False turns them off
        "MLSERVE_ADMIN_ENABLED": None,
        "MLSERVE_MAX_ROWS": 100_000,  # rows per request; more get 413 (checked before decoding binary)
        # security (mlserve/serving/security.py)
        "MLSERVE_API_KEYS": None,  # path to a keys file (mlserve keys create); None: no auth
        "MLSERVE_OPEN_ENDPOINTS": ("health",),  # need no key: health, metrics, docs
        "MLSERVE_RATE_LIMIT": None,  # per client, e.g. "100/second" or "10/second;1000/hour"
        "MLSERVE_MODEL_RATE_LIMITS": None,  # per client and model, e.g. {"churn": "20/second"}
        "MLSERVE_RATE_LIMIT_STORAGE": "memory://",  # per worker; "redis://..." to share
        "MLSERVE_CORS_ORIGINS": None,  # None: no CORS headers; "*" or a list of origins
        # operations (mlserve/serving/metrics.py)
        "MLSERVE_METRICS_ENABLED": True,  # GET /metrics (Prometheus)
        "MLSERVE_ACCESS_LOG": True,  # one JSON line per request on the "mlserve.access" logger
        # mlserve serve's worker (mlserve/serving/worker.py): a request not in full by
        # then gets 408; counted from its start, not reset by each byte
        "MLSERVE_CLIENT_TIMEOUT": 30.0,
        # the prediction cache (mlserve/serving/cache.py): None (off), "memory" or "redis://..."
        "MLSERVE_CACHE": None,
        "MLSERVE_CACHE_MAX_ENTRIES": 10_000,  # the memory cache's LRU size (per worker)
        "MLSERVE_CACHE_TTL_S": 300.0,  # seconds an entry lives
        "MLSERVE_CACHE_MODELS": None,  # per model: {"churn": {"ttl_s": 60}, "tiny": False}
        "MLSERVE_CACHE_TIMEOUT_MS": 50.0,  # Redis socket timeout; slower counts as an error
        # a canary split picks the version by a stable hash of this request header's
        # value (e.g. "X-User-ID"); None, or a request without it: a random pick
        "MLSERVE_CANARY_KEY_HEADER": None,
        # JWT / OAuth2 bearer tokens (mlserve/serving/jwt_auth.py): a JWKS file path or an
        # https:// URL; None: off. Issuer and audience are required with it
        "MLSERVE_JWT_JWKS": None,
        "MLSERVE_JWT_JWKS_TTL_S": 300.0,  # a JWKS URL is fetched again after this
        "MLSERVE_JWT_ISSUER": None,  # the tokens' "iss"
        "MLSERVE_JWT_AUDIENCE": None,  # this API's "aud" (comma-separated or a list for several)
        "MLSERVE_JWT_ALGORITHMS": ("RS256", "ES256"),  # public-key algorithms only
        "MLSERVE_JWT_LEEWAY_S": 30.0,  # clock skew allowed on exp and nbf
        # payload logging (mlserve/serving/payload_log.py): None (off), a file path or "stderr"
        "MLSERVE_PAYLOAD_LOG": None,
        "MLSERVE_PAYLOAD_LOG_SAMPLE": 1.0,  # the fraction of predict requests logged (0..1)
        "MLSERVE_PAYLOAD_LOG_MAX_BYTES": 100 * 1024 * 1024,  # rotate the file at this size (0: never)
        "MLSERVE_PAYLOAD_LOG_BACKUPS": 5,  # rotated files kept (payload.jsonl.1 ... .5)
        "MLSERVE_PAYLOAD_LOG_MAX_LINE_BYTES": 4096,  # PIPE_BUF: lines of several workers never mix
        "MLSERVE_PAYLOAD_LOG_QUEUE": 10_000,  # lines waiting for the writer; more are dropped
        # drift monitoring (mlserve/serving/drift.py): off by default, as it keeps (the bins
        # of) the served rows of each version in every worker; on: GET /drift/<name>
        "MLSERVE_DRIFT": False,
        "MLSERVE_DRIFT_WINDOW": 10_000,  # rows per model version (the newest)
        "MLSERVE_DRIFT_PSI_THRESHOLD": 0.2,  # a feature at or above this PSI is "drifted"
        # shadow traffic (mlserve/serving/shadow.py; set per alias in the store)
        "MLSERVE_SHADOW_QUEUE": 1024,  # requests waiting for the shadow; more are dropped
        # the KServe V2 gRPC service (mlserve/serving/grpc_service.py): the port it listens
        # on in each worker of mlserve serve (None: off), and the most RPCs it runs or
        # queues at once (more get RESOURCE_EXHAUSTED)
        "MLSERVE_GRPC_PORT": None,
        "MLSERVE_GRPC_MAX_CONCURRENT_RPCS": 256,
        # image models (mlserve.with_image_input): an uploaded image whose header claims
        # more pixels is a 400 before it is decoded (Pillow's own default limit)
        "MLSERVE_MAX_IMAGE_PIXELS": 89_478_485,
        # mlserve serve's app answers V1 predict requests ahead of Flask's dispatch, with
        # the same responses (mlserve/serving/fastpath.py); False: all through Flask
        "MLSERVE_FAST_PATH": True,
    }
)

#: Keys whose environment value is JSON (a mapping). Every other key's value is
#: read by the type of its default (see :func:`parse_environ`).
JSON_ENV_KEYS = frozenset(
    {"MLSERVE_BATCHING_MODELS", "MLSERVE_MODEL_RATE_LIMITS", "MLSERVE_CACHE_MODELS"}
)
#: Booleans whose default is None (unset means "decide from other settings").
OPTIONAL_BOOL_ENV_KEYS = frozenset({"MLSERVE_ADMIN_ENABLED"})


class ConfigError(ValueError):
    """A MLSERVE_* configuration value is invalid; the message names the key."""


@dataclass(frozen=True)
class ServingConfig:
    max_body_bytes: int
    reload_interval: float
    default_model: str | None
    default_alias: str | None
    warmup: bool
    admin_enabled: bool | None  # None: on only with API keys (see Guard.admin_enabled)
    batching: tuple[BatchConfig, Mapping[str, BatchConfig]] = (BatchConfig(), MappingProxyType({}))
    max_rows: int = DEFAULTS["MLSERVE_MAX_ROWS"]
    api_keys: str | None = None
    open_endpoints: frozenset[str] = frozenset({"health"})
    rate_limit: str | None = None
    model_rate_limits: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    rate_limit_storage: str = "memory://"
    cors_origins: tuple[str, ...] | None = None
    metrics_enabled: bool = True
    access_log: bool = True
    client_timeout: float = DEFAULTS["MLSERVE_CLIENT_TIMEOUT"]
    cache: Any = None  # a cache.PredictionCache, or None (off)
    canary_key_header: str | None = None
    jwt: Any = None  # a jwt_auth.JwtVerifier, or None (off)
    payload_log: Any = None  # a payload_log.PayloadLog, or None (off)
    drift: bool = False
    drift_window: int = DEFAULTS["MLSERVE_DRIFT_WINDOW"]
    drift_psi_threshold: float = DEFAULTS["MLSERVE_DRIFT_PSI_THRESHOLD"]
    shadow_queue: int = DEFAULTS["MLSERVE_SHADOW_QUEUE"]
    grpc_port: int | None = None
    grpc_max_concurrent_rpcs: int = DEFAULTS["MLSERVE_GRPC_MAX_CONCURRENT_RPCS"]
    max_image_pixels: int = DEFAULTS["MLSERVE_MAX_IMAGE_PIXELS"]

    def batching_for(self, name: str) -> BatchConfig:
        """The batching options of model ``name`` (its MLSERVE_BATCHING_MODELS entry, or the global ones)."""
        default, per_model = self.batching
        return per_model.get(name, default)

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
            admin_enabled=_optional_bool(values, "MLSERVE_ADMIN_ENABLED"),
            batching=_batching(values),
            max_rows=_positive_int(values, "MLSERVE_MAX_ROWS", "rows"),
            api_keys=_optional_path(values, "MLSERVE_API_KEYS"),
            open_endpoints=_open_endpoints(values, "MLSERVE_OPEN_ENDPOINTS"),
            rate_limit=_optional_rate_limit(values, "MLSERVE_RATE_LIMIT"),
            model_rate_limits=_model_rate_limits(values, "MLSERVE_MODEL_RATE_LIMITS"),
            rate_limit_storage=_storage_uri(values, "MLSERVE_RATE_LIMIT_STORAGE"),
            cors_origins=_cors_origins(values, "MLSERVE_CORS_ORIGINS"),
            metrics_enabled=_bool(values, "MLSERVE_METRICS_ENABLED"),
            access_log=_bool(values, "MLSERVE_ACCESS_LOG"),
            client_timeout=_positive_float(values, "MLSERVE_CLIENT_TIMEOUT"),
            cache=_cache(values),
            canary_key_header=_optional_header(values, "MLSERVE_CANARY_KEY_HEADER"),
            jwt=_jwt(values),
            payload_log=_payload_log(values),
            drift=_bool(values, "MLSERVE_DRIFT"),
            drift_window=_drift_window(values, "MLSERVE_DRIFT_WINDOW"),
            drift_psi_threshold=_psi_threshold(values, "MLSERVE_DRIFT_PSI_THRESHOLD"),
            shadow_queue=_positive_int(values, "MLSERVE_SHADOW_QUEUE", "requests"),
            grpc_port=_optional_port(values, "MLSERVE_GRPC_PORT"),
            grpc_max_concurrent_rpcs=_positive_int(
                values, "MLSERVE_GRPC_MAX_CONCURRENT_RPCS", "RPCs"
            ),
            max_image_pixels=_positive_int(values, "MLSERVE_MAX_IMAGE_PIXELS", "pixels"),
        )

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> "ServingConfig":
        """Read and validate the MLSERVE_* environment variables (see :func:`parse_environ`)."""
        return cls.from_mapping(parse_environ(environ), overrides)


def parse_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The MLSERVE_* configuration keys set in ``environ`` (default: ``os.environ``), typed.

    Each value is read by the type of the key's default: booleans from
    true/false/1/0 (yes/no, on/off), integers, floats, lists as comma-separated
    text, mappings (:data:`JSON_ENV_KEYS`) as JSON; text as it is. An empty
    variable counts as unset. Other MLSERVE_* variables (build switches such as
    MLSERVE_BLAS) are not configuration keys and are left alone. A value that
    does not parse raises :class:`ConfigError` naming the variable and the value.
    """
    environ = os.environ if environ is None else environ
    values = {}
    for key, default in DEFAULTS.items():
        text = environ.get(key)
        if text is None or text.strip() == "":
            continue
        values[key] = _parse_environ_value(key, text.strip(), default)
    return values


def url_prefix(value: Any, key: str = "MLSERVE_URL_PREFIX") -> str | None:
    """Where to mount the blueprint: None for the root, else "/path" (no trailing slash)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{key} must be '' or start with '/', got {value!r}")
    return value.rstrip("/") or None


_TRUE_TEXTS = ("true", "1", "yes", "on")
_FALSE_TEXTS = ("false", "0", "no", "off")


def _parse_environ_value(key: str, text: str, default: Any) -> Any:
    where = f"{key} (from the environment)"
    if key in JSON_ENV_KEYS:
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{where} must be JSON, got {text!r}: {exc}") from None
    if isinstance(default, bool) or key in OPTIONAL_BOOL_ENV_KEYS:
        if text.lower() in _TRUE_TEXTS:
            return True
        if text.lower() in _FALSE_TEXTS:
            return False
        raise ConfigError(f"{where} must be true or false (or 1/0), got {text!r}")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {text!r}") from None
    if isinstance(default, (tuple, list)):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return text  # text keys, and those without a default (paths, names, "a,b" lists)


def _batching(values: Mapping[str, Any]) -> tuple[BatchConfig, Mapping[str, BatchConfig]]:
    try:
        return parse_batching(
            values["MLSERVE_BATCHING"],
            values["MLSERVE_BATCH_MAX_SIZE"],
            values["MLSERVE_BATCH_MAX_DELAY_MS"],
            values["MLSERVE_BATCHING_MODELS"],
        )
    except BatchingError as exc:
        raise ConfigError(str(exc)) from None


def _positive_int(values: Mapping[str, Any], key: str, unit: str = "bytes") -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer ({unit}), got {value!r}")
    return value


def _positive_float(values: Mapping[str, Any], key: str) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key} must be a number of seconds > 0, got {value!r}")
    return float(value)


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


def _optional_bool(values: Mapping[str, Any], key: str) -> bool | None:
    value = values[key]
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{key} must be True, False or None (unset), got {value!r}")
    return value


OPEN_ENDPOINT_GROUPS = ("health", "metrics", "docs")


def _optional_path(values: Mapping[str, Any], key: str) -> str | None:
    value = values[key]
    if value is None or value == "":
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{key} must be a file path, got {value!r}")
    return os.fspath(value)


def _open_endpoints(values: Mapping[str, Any], key: str) -> frozenset[str]:
    value = values[key]
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if value is None:
        value = ()
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        v in OPEN_ENDPOINT_GROUPS for v in value
    ):
        raise ConfigError(
            f"{key} must be a list of {', '.join(OPEN_ENDPOINT_GROUPS)}, got {value!r}"
        )
    return frozenset(value)


def _rate_limit_text(key: str, value: Any) -> str:
    from mlserve.serving.security import parse_rate_limit

    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a rate limit like '100/second', got {value!r}")
    try:
        return parse_rate_limit(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r} is not a rate limit like '100/second': {exc}") from None


def _optional_rate_limit(values: Mapping[str, Any], key: str) -> str | None:
    value = values[key]
    if value is None or value == "":
        return None
    return _rate_limit_text(key, value)


def _model_rate_limits(values: Mapping[str, Any], key: str) -> Mapping[str, str]:
    value = values[key] or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must map model names to rate limits, got {value!r}")
    limits = {}
    for name, text in value.items():
        try:
            validate_name(name, "model name")
        except (StoreError, TypeError) as exc:
            raise ConfigError(f"{key}: {exc}") from None
        limits[name] = _rate_limit_text(f"{key}[{name!r}]", text)
    return MappingProxyType(limits)


def _storage_uri(values: Mapping[str, Any], key: str) -> str:
    value = values[key]
    if not isinstance(value, str) or "://" not in value:
        raise ConfigError(f"{key} must be a storage URI like 'memory://', got {value!r}")
    return value


def _cors_origins(values: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = values[key]
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be '*', an origin or a list of origins, got {value!r}")
    return tuple(value)


def _cache(values: Mapping[str, Any]) -> Any:
    from mlserve.serving.cache import make_cache

    spec = values["MLSERVE_CACHE"]
    if spec is None or spec == "":
        return None
    models = values["MLSERVE_CACHE_MODELS"] or {}
    if not isinstance(models, Mapping) or not all(
        v is False or v is True or (isinstance(v, Mapping) and set(v) <= {"ttl_s"})
        for v in models.values()
    ):
        raise ConfigError(
            'MLSERVE_CACHE_MODELS must map model names to false, true or {"ttl_s": seconds}'
        )
    try:
        return make_cache(
            spec,
            _positive_int(values, "MLSERVE_CACHE_MAX_ENTRIES"),
            _positive_float(values, "MLSERVE_CACHE_TTL_S"),
            models,
            _positive_float(values, "MLSERVE_CACHE_TIMEOUT_MS") / 1000.0,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")


def _optional_header(values: Mapping[str, Any], key: str) -> str | None:
    value = values[key]
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise ConfigError(f"{key} must be an HTTP header name such as X-User-ID, got {value!r}")
    return value


def _jwt(values: Mapping[str, Any]) -> Any:
    from mlserve.serving.jwt_auth import make_verifier

    if values["MLSERVE_JWT_JWKS"] is None or values["MLSERVE_JWT_JWKS"] == "":
        return None
    leeway = values["MLSERVE_JWT_LEEWAY_S"]
    if isinstance(leeway, bool) or not isinstance(leeway, (int, float)) or not leeway >= 0:
        raise ConfigError(f"MLSERVE_JWT_LEEWAY_S must be a number of seconds >= 0, got {leeway!r}")
    try:
        return make_verifier(
            values["MLSERVE_JWT_JWKS"],
            _positive_float(values, "MLSERVE_JWT_JWKS_TTL_S"),
            values["MLSERVE_JWT_ISSUER"],
            values["MLSERVE_JWT_AUDIENCE"],
            values["MLSERVE_JWT_ALGORITHMS"],
            float(leeway),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _payload_log(values: Mapping[str, Any]) -> Any:
    from mlserve.serving.payload_log import make_payload_log

    target = values["MLSERVE_PAYLOAD_LOG"]
    if target is None or target == "":
        return None
    sample = values["MLSERVE_PAYLOAD_LOG_SAMPLE"]
    if isinstance(sample, bool) or not isinstance(sample, (int, float)) or not 0 <= sample <= 1:
        raise ConfigError(f"MLSERVE_PAYLOAD_LOG_SAMPLE must be a number in [0, 1], got {sample!r}")
    max_bytes = values["MLSERVE_PAYLOAD_LOG_MAX_BYTES"]
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ConfigError(
            f"MLSERVE_PAYLOAD_LOG_MAX_BYTES must be an integer >= 0 (bytes; 0: never rotate), "
            f"got {max_bytes!r}"
        )
    backups = values["MLSERVE_PAYLOAD_LOG_BACKUPS"]
    if isinstance(backups, bool) or not isinstance(backups, int) or backups < 0:
        raise ConfigError(f"MLSERVE_PAYLOAD_LOG_BACKUPS must be an integer >= 0, got {backups!r}")
    line = _positive_int(values, "MLSERVE_PAYLOAD_LOG_MAX_LINE_BYTES")
    if line < 512:
        raise ConfigError(f"MLSERVE_PAYLOAD_LOG_MAX_LINE_BYTES must be at least 512, got {line!r}")
    try:
        return make_payload_log(
            target, float(sample), max_bytes, backups, line,
            _positive_int(values, "MLSERVE_PAYLOAD_LOG_QUEUE", "lines"),
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
def _drift_window(values: Mapping[str, Any], key: str) -> int:
    value = _positive_int(values, key, "rows")
    if value > 10_000_000:
        raise ConfigError(f"{key} must be at most 10000000 rows, got {value!r}")
    return value


def _psi_threshold(values: Mapping[str, Any], key: str) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(f"{key} must be a number > 0 (a PSI such as 0.2), got {value!r}")
    return float(value)
def _optional_port(values: Mapping[str, Any], key: str) -> int | None:
    """A TCP port (0: any free one), also as the text of an environment variable."""
    value = values[key]
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{key} must be a port number from 0 to 65535, got {value!r}")
    return value
