"""API keys, scopes, rate limits and CORS for the serving blueprint.

API keys
--------
Off by default. ``MLSERVE_API_KEYS`` (``mlserve serve --api-keys FILE``) names
a keys file written by ``mlserve keys create``; the file holds, per key, an id,
its scopes and the SHA-256 of the key, never the key itself. A key is
``mls_`` followed by 32 random bytes (``secrets.token_urlsafe``): with 256 bits
of entropy nobody can find a key from its hash by guessing, however fast the
hash is, so a fast hash is the right one here. Slow password hashes (bcrypt,
scrypt, argon2) exist to protect low-entropy passwords and would cost
milliseconds of CPU on every request. The hash of the presented key is compared
with every stored hash by :func:`hmac.compare_digest`, without stopping at the
first match, so the time taken says nothing about which key or how much of it
matched.

Clients send ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Scopes:

* ``predict``           predict with any model
* ``predict:<model>``   predict with that model only
* ``read``              metadata, listings, health details, /openapi.json, /metrics
* ``admin``             POST /admin/reload and the Triton repository's load/unload
                        (and only those: admin does not imply the others)

A missing, malformed, unknown or revoked key is a 401 with one fixed body
(no hint which it was); a valid key without the scope is a 403. Endpoints in
``MLSERVE_OPEN_ENDPOINTS`` (default: the health checks) need no key. The
keys file is re-read when it changes (checked at most once a second), so a
revoked key stops working within a second in every worker, without a restart.

Rate limits
-----------
``MLSERVE_RATE_LIMIT`` ("100/second", "10/second;1000/hour") limits each
client, identified by its key id when keys are on and by its address
otherwise, over all endpoints except the open ones;
``MLSERVE_MODEL_RATE_LIMITS`` (``{"churn": "20/second"}``) adds a limit per
client and model on the predict endpoints. Over a limit is a 429 with
Retry-After. The counting is done by ``limits``, the engine of Flask-Limiter,
called from the blueprint itself (a blueprint mounted into someone's app must
not install an app-wide Flask-Limiter of its own, and the per-model limit needs
the model name that only the blueprint's routing knows). Storage is
``MLSERVE_RATE_LIMIT_STORAGE`` ("memory://" by default): memory storage is per
process, so under gunicorn each worker counts on its own and a client can get
up to ``workers x limit``; point it at a shared store ("redis://host:6379") for
one limit across workers and hosts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from mlserve.serving.errors import ServingError
from mlserve.store import StoreError, validate_name

__all__ = [
    "ADMIN",
    "PREDICT",
    "READ",
    "ApiKey",
    "Forbidden",
    "KeyFile",
    "KeyFileError",
    "RateLimiter",
    "TooManyRequests",
    "Unauthorized",
    "create_key",
    "hash_key",
    "list_keys",
    "revoke_key",
    "validate_scope",
]

PREDICT = "predict"
READ = "read"
ADMIN = "admin"
OPEN = "open"
KEY_PREFIX = "mls_"
KEY_BYTES = 32
KEYFILE_VERSION = 1
RECHECK_SECONDS = 1.0
MAX_KEY_CHARS = 256

UNAUTHORIZED_MESSAGE = "unauthorized: send a valid API key (Authorization: Bearer <key> or X-API-Key)"
FORBIDDEN_MESSAGE = "forbidden: the API key does not have the scope this request needs"


class Unauthorized(ServingError):
    """No valid API key (one fixed message: which part was wrong is not said)."""

    status = 401

    def __init__(self) -> None:
        super().__init__(UNAUTHORIZED_MESSAGE)
        self.headers = {"WWW-Authenticate": 'Bearer realm="mlserve"'}


class Forbidden(ServingError):
    """A valid key without the scope the request needs (``needed``: the scopes that would do)."""

    status = 403

    def __init__(self, needed: Sequence[str] = ()) -> None:
        # the holder of a valid key may learn which scope to ask for; nothing about other keys
        detail = f"; it needs {' or '.join(map(repr, needed))}" if needed else ""
        super().__init__(FORBIDDEN_MESSAGE + detail)


class TooManyRequests(ServingError):
    """Over a rate limit; Retry-After says when to try again."""

    status = 429

    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded: {limit}; retry after {retry_after} s")
        self.headers = {"Retry-After": str(retry_after)}


class KeyFileError(ValueError):
    """The keys file cannot be read or is malformed; the message names the file."""


# ------------------------------------------------------------------- keys


def hash_key(token: str) -> str:
    """The stored form of a key: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def validate_scope(scope: str) -> str:
    """``scope`` if it is predict, predict:<model>, read or admin, else ValueError."""
    if scope in (PREDICT, READ, ADMIN):
        return scope
    if scope.startswith(PREDICT + ":"):
        try:
            validate_name(scope[len(PREDICT) + 1 :], "model name")
        except StoreError as exc:
            raise ValueError(f"invalid scope {scope!r}: {exc}") from None
        return scope
    raise ValueError(f"invalid scope {scope!r}; use predict, predict:<model>, read or admin")


@dataclass(frozen=True)
class ApiKey:
    """One entry of the keys file (no secret in it: ``digest`` is the key's SHA-256)."""

    id: str
    digest: str
    scopes: frozenset[str]
    created: str = ""

    def allows(self, kind: str, model: str | None = None) -> bool:
        if kind == PREDICT:
            return PREDICT in self.scopes or (
                model is not None and f"{PREDICT}:{model}" in self.scopes
            )
        return kind in self.scopes

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.digest,
            "scopes": sorted(self.scopes),
            "created": self.created,
        }


def _read_entries(path: str) -> list[ApiKey]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise KeyFileError(f"keys file {path!r} does not exist (create it with mlserve keys create)") from None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read keys file {path!r}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeyFileError(f"keys file {path!r}: expected an object with a 'keys' list")
    if data.get("version") != KEYFILE_VERSION:
        raise KeyFileError(
            f"keys file {path!r} is version {data.get('version')!r}; this mlserve reads {KEYFILE_VERSION}"
        )
    keys = []
    for position, entry in enumerate(data["keys"]):
        try:
            digest = entry["sha256"]
            if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
                raise ValueError("sha256 must be 64 lowercase hex digits")
            scopes = frozenset(validate_scope(s) for s in entry["scopes"])
            keys.append(ApiKey(str(entry["id"]), digest, scopes, str(entry.get("created", ""))))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyFileError(f"keys file {path!r}: entry {position} is malformed: {exc}") from None
    return keys


def _write_entries(path: str, keys: Sequence[ApiKey]) -> None:
    """Write the keys file atomically (temporary file, fsync, rename), readable by the owner only."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": KEYFILE_VERSION, "keys": [k.to_json() for k in keys]}, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def create_key(path: str, scopes: Iterable[str], name: str | None = None) -> tuple[str, ApiKey]:
    """Add a new key to the keys file (created if missing); return (the key, its entry).

    The key itself is returned once and stored nowhere.
    """
    scopes = frozenset(validate_scope(s) for s in scopes)
    if not scopes:
        raise ValueError("a key needs at least one scope")
    keys = _read_entries(path) if os.path.exists(path) else []
    key_id = name or "key_" + secrets.token_hex(4)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key_id):
        raise ValueError(f"invalid key name {key_id!r}: use 1-64 letters, digits, '_', '.', '-'")
    if any(k.id == key_id for k in keys):
        raise ValueError(f"a key named {key_id!r} already exists in {path}")
    token = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    entry = ApiKey(key_id, hash_key(token), scopes, created)
    _write_entries(path, [*keys, entry])
    return token, entry


def revoke_key(path: str, key_id: str) -> ApiKey:
    """Remove the key ``key_id`` from the keys file; return its entry (KeyError if absent)."""
    keys = _read_entries(path)
    kept = [k for k in keys if k.id != key_id]
    if len(kept) == len(keys):
        raise KeyError(key_id)
    _write_entries(path, kept)
    return next(k for k in keys if k.id == key_id)


def list_keys(path: str) -> list[ApiKey]:
    return _read_entries(path)


class KeyFile:
    """The keys of a keys file, re-read when the file changes (checked at most once a second).

    A file that becomes unreadable or malformed after a good load keeps the
    last good keys (and logs); one that is bad at start-up is an error.
    """

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._stat: tuple[int, int, int] | None = None
        self._keys: tuple[ApiKey, ...] = ()
        self._checked = 0.0
        self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            if force:
                _read_entries(self.path)  # raises KeyFileError naming the problem
            return
        if not force and stamp == self._stat:
            return
        try:
            keys = tuple(_read_entries(self.path))
        except KeyFileError:
            if force:
                raise
            import logging

            logging.getLogger("mlserve.serving").error(
                "mlserve: keys file %s is malformed; keeping the previous keys", self.path
            )
            return
        self._keys, self._stat = keys, stamp

    def keys(self) -> tuple[ApiKey, ...]:
        now = time.monotonic()
        if now - self._checked >= RECHECK_SECONDS and self._lock.acquire(blocking=False):
            try:
                self._checked = now
                self._reload()
            finally:
                self._lock.release()
        return self._keys

    def authenticate(self, token: str | None) -> ApiKey | None:
        """The entry whose hash matches ``token`` (compared with every entry in constant time)."""
        if not token or len(token) > MAX_KEY_CHARS:
            return None
        digest = hash_key(token).encode()
        match = None
        for key in self.keys():
            if hmac.compare_digest(key.digest.encode(), digest):
                match = key
        return match


def token_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    value = headers.get("X-API-Key")
    return value.strip() if value else None


# ------------------------------------------------------------ rate limits


class RateLimiter:
    """Per-client limits (all endpoints) and per-client-and-model limits (predict)."""

    def __init__(
        self,
        limit: str | None,
        model_limits: Mapping[str, str],
        storage_uri: str,
    ) -> None:
        from limits import parse_many
        from limits.storage import storage_from_string
        from limits.strategies import SlidingWindowCounterRateLimiter

        self.global_items = parse_many(limit) if limit else []
        self.model_items = {name: parse_many(text) for name, text in model_limits.items()}
        self.storage = storage_from_string(storage_uri)
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)

    @property
    def enabled(self) -> bool:
        return bool(self.global_items or self.model_items)

    def check(self, client: str, model: str | None) -> None:
        """Count one request; raise TooManyRequests if it is over a limit."""
        checks = [(item, ("mlserve", client)) for item in self.global_items]
        if model is not None:
            checks += [(item, ("mlserve", client, model)) for item in self.model_items.get(model, ())]
        for item, identifiers in checks:
            if not self.strategy.hit(item, *identifiers):
                stats = self.strategy.get_window_stats(item, *identifiers)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                raise TooManyRequests(str(item), retry)


def parse_rate_limit(text: str) -> str:
    """``text`` if the limits library can read it ("100/second", "5/minute;100/hour"), else ValueError."""
    from limits import parse_many

    parse_many(text)
    return text


# ------------------------------------------------------- the request guard

#: endpoint name -> what it needs: OPEN-able group or a scope kind
_HEALTH = frozenset({"v2_live", "v2_ready", "ping", "health", "root_live"})
_PREDICT_ENDPOINTS = frozenset({"v1_model", "v2_infer", "v2_infer_version", "invocations", "predict",
                                "recommend", "similar"})  # fmt: skip
_ADMIN_ENDPOINTS = frozenset({"admin_reload", "repository_load", "repository_unload"})
# the blueprint's answers to a wrong method or an unknown path under its prefix: they
# reveal nothing a key protects, so they need none (a 405 says the same with or without)
_ROUTING_ERRORS = frozenset({"wrong_method", "no_route"})
_GROUPS = {"health": _HEALTH, "metrics": frozenset({"metrics"}), "docs": frozenset({"openapi", "docs", "docs_asset"})}
_CORS_ALLOW_HEADERS = [
    "Authorization", "Content-Type", "Content-Encoding", "X-API-Key", "X-Request-ID",
    "Inference-Header-Content-Length",
]  # fmt: skip
_CORS_EXPOSE_HEADERS = [
    "X-Request-ID", "X-Model-Version", "Server-Timing", "Retry-After",
    "Inference-Header-Content-Length",
]  # fmt: skip


class Guard:
    """Keys, scopes, rate limits and CORS of one mounted blueprint (built from its config)."""

    def __init__(self, config: Any) -> None:
        self.keys = KeyFile(config.api_keys) if config.api_keys else None
        self.jwt = getattr(config, "jwt", None)  # a jwt_auth.JwtVerifier (MLSERVE_JWT_JWKS)
        # keys, tokens or both: a request may present either (see jwt_auth)
        self.authenticates = self.keys is not None or self.jwt is not None
        self.open = frozenset().union(_ROUTING_ERRORS, *(_GROUPS[g] for g in config.open_endpoints))
        # closed by default: without keys nobody could be told apart from an admin
        self.admin_enabled = (
            config.admin_enabled if config.admin_enabled is not None else self.authenticates
        )
        self.admin_disabled_reason = (
            "MLSERVE_ADMIN_ENABLED is False"
            if config.admin_enabled is False
            else "no API keys are configured, so no client can prove it is an admin; "
            "set MLSERVE_API_KEYS (mlserve serve --api-keys) and use a key with the admin "
            "scope (or MLSERVE_JWT_JWKS and a token with it), or set "
            "MLSERVE_ADMIN_ENABLED=True to open them to every client"
        )
        limiter = RateLimiter(
            config.rate_limit, config.model_rate_limits, config.rate_limit_storage
        )
        self.limiter = limiter if limiter.enabled else None
        self.cors_origins = config.cors_origins
        self._cors_options: dict[str, Any] | None = None
        # without keys or limits, check() has nothing to do (the request path skips it)
        self.active = self.authenticates or self.limiter is not None

    def required(self, endpoint: str, method: str) -> str:
        """What ``endpoint`` needs: OPEN, READ, PREDICT or ADMIN."""
        if endpoint in self.open:
            return OPEN
        if endpoint in _ADMIN_ENDPOINTS:
            return ADMIN
        if endpoint in _PREDICT_ENDPOINTS and method == "POST":
            return PREDICT
        return READ

    def check(
        self, endpoint: str, method: str, headers: Mapping[str, str], client: str | None,
        model: Any,
    ) -> ApiKey | None:  # fmt: skip
        """Authenticate, authorize and count one request; return the key used (if any).

        ``model`` is a callable giving the model a predict request names (or None):
        called only for predict endpoints, after authentication.
        """
        need = self.required(endpoint, method)
        if need == OPEN:
            return None
        key = None
        model_name = None
        if need == PREDICT:
            model_name = model()
        if self.authenticates:
            key = self._authenticate(token_from_headers(headers))
            if key is None:
                raise Unauthorized()
            if not key.allows(need, model_name):
                raise Forbidden(
                    [PREDICT, *([f"{PREDICT}:{model_name}"] if model_name else [])]
                    if need == PREDICT
                    else [need]
                )
        if self.limiter is not None:
            who = f"key:{key.id}" if key is not None else f"addr:{client or '-'}"
            self.limiter.check(who, model_name)
        return key

    def _authenticate(self, token: str | None) -> ApiKey | None:
        """The key or token's principal, or None: a JWT has two dots, an mlserve key none."""
        if not token:
            return None
        if self.jwt is not None and token.count(".") == 2:
            return self.jwt.authenticate(token)  # type: ignore[no-any-return]
        if self.keys is not None:
            return self.keys.authenticate(token)
        return None

    def cors_headers(self, app: Any, response: Any) -> None:
        """Add CORS headers (flask-cors) to ``response`` if MLSERVE_CORS_ORIGINS is set."""
        if self.cors_origins is None:
            return
        from flask_cors.core import get_cors_options, set_cors_headers

        if self._cors_options is None:
            self._cors_options = get_cors_options(
                app,
                {
                    "origins": list(self.cors_origins),
                    "allow_headers": _CORS_ALLOW_HEADERS,
                    "expose_headers": _CORS_EXPOSE_HEADERS,
                    "methods": ["GET", "POST", "OPTIONS"],
                    "max_age": 600,
                    "send_wildcard": self.cors_origins == ("*",),
                },
            )
        set_cors_headers(response, self._cors_options)
