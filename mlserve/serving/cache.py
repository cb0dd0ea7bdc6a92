"""The prediction cache (MLSERVE_CACHE): an LRU per worker, or Redis shared by all.

The key hashes the model name, the resolved version, the outputs asked for
and the decoded rows (dtype, shape and bytes), so a new version or an alias
move never answers from an old version's entries, and two bodies that decode
to the same rows share one entry. Any failure of the cache (Redis down, slow,
garbage) is counted in ``mlserve_cache_errors_total`` and the request is
computed as if there were no cache: never a 500, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import Counter

__all__ = ["PredictionCache", "make_cache"]

HITS = Counter("mlserve_cache_hits", "Predictions answered from the cache.", ["model"])
MISSES = Counter("mlserve_cache_misses", "Predictions not in the cache.", ["model"])
ERRORS = Counter("mlserve_cache_errors", "Cache failures (answered without the cache).", ["model"])

_MAGIC = b"MLSC1"
_REDIS_PREFIX = "mlserve:cache:"


def cache_key(name: str, version: int, outputs: Sequence[str], rows: np.ndarray) -> str:
    """The entry's key: sha256 of model, version, outputs and the canonical decoded rows."""
    canonical = getattr(rows, "canonical_bytes", None)  # a pipeline's columns (tabular.py)
    if canonical is not None:
        return hashlib.sha256(f"{name}\0{version}\0{','.join(outputs)}\0".encode()
                              + canonical()).hexdigest()
    rows = np.ascontiguousarray(rows)
    h = hashlib.sha256()
    h.update(f"{name}\0{version}\0{','.join(outputs)}\0{rows.dtype.str}\0{rows.shape}\0".encode())
    h.update(memoryview(rows).cast("B"))
    return h.hexdigest()


def encode_results(results: Mapping[str, np.ndarray]) -> bytes:
    """Results as bytes: magic, a JSON header (name, dtype, shape each), raw arrays."""
    arrays = {k: np.ascontiguousarray(v) for k, v in results.items()}
    header = json.dumps([[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()]).encode()
    parts = [_MAGIC, struct.pack("<I", len(header)), header]
    parts.extend(a.tobytes() for a in arrays.values())
    return b"".join(parts)


def decode_results(data: bytes) -> dict[str, np.ndarray]:
    """The inverse of encode_results; ValueError on anything malformed."""
    if not isinstance(data, bytes) or not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
        raise ValueError("not a cache entry")
    (n,) = struct.unpack_from("<I", data, len(_MAGIC))
    offset = len(_MAGIC) + 4
    if n > len(data) - offset:
        raise ValueError("truncated cache entry header")
    header = json.loads(data[offset : offset + n])
    offset += n
    results: dict[str, np.ndarray] = {}
    if not isinstance(header, list):
        raise TypeError("bad cache entry header")
    for item in header:
        key, dtype_text, shape = item
        dtype = np.dtype(dtype_text)
        if dtype.hasobject or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError("bad cache entry array")
        size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if size > len(data) - offset:
            raise ValueError("truncated cache entry")
        results[str(key)] = np.frombuffer(data, dtype, count=size // max(dtype.itemsize, 1),
                                          offset=offset).reshape(shape)  # fmt: skip
        offset += size
    if offset != len(data):
        raise ValueError("trailing bytes in cache entry")
    return results


class _MemoryBackend:
    """An LRU of at most ``max_entries`` entries with per-entry expiry (one per worker)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, dict[str, np.ndarray]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: str, results: dict[str, np.ndarray], ttl_s: float) -> None:
        frozen = {}
        for name, array in results.items():
            array = np.array(array, copy=True)
            array.flags.writeable = False
            frozen[name] = array
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl_s, frozen)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


class _RedisBackend:
    """One cache for every worker and host: redis-py with a short socket timeout."""

    def __init__(self, url: str, timeout_s: float) -> None:
        import redis

        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
        )  # fmt: skip

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        data = self._client.get(_REDIS_PREFIX + key)
        return None if data is None else decode_results(data)

    def put(self, key: str, results: dict[str, np.ndarray], ttl_s: float) -> None:
        self._client.set(_REDIS_PREFIX + key, encode_results(results), px=max(1, int(ttl_s * 1000)))


class PredictionCache:
    """get/put of a model version's outputs for a batch of rows; failures are misses."""

    def __init__(self, backend: Any, ttl_s: float, models: Mapping[str, Any]) -> None:
        self._backend = backend
        self.ttl_s = ttl_s
        self._models = dict(models)

    def ttl_for(self, name: str) -> float | None:
        """The TTL of model ``name``'s entries, or None when it is not cached."""
        option = self._models.get(name, True)
        if option is False:
            return None
        if isinstance(option, Mapping) and "ttl_s" in option:
            return float(option["ttl_s"])
        return self.ttl_s

    def get(self, name: str, key: str) -> dict[str, np.ndarray] | None:
        try:
            results = self._backend.get(key)
        except Exception:  # noqa: BLE001 - any cache failure (incl. garbage): compute as if no cache
            ERRORS.labels(name).inc()
            results = None
        if results is None:
            MISSES.labels(name).inc()
            return None
        HITS.labels(name).inc()
        return results

    def put(self, name: str, key: str, results: dict[str, np.ndarray], ttl_s: float) -> None:
        try:
            self._backend.put(key, results, ttl_s)
        except Exception:  # noqa: BLE001 - any cache failure only costs the entry
            ERRORS.labels(name).inc()


def make_cache(
    spec: str | None, max_entries: int, ttl_s: float, models: Mapping[str, Any] | None,
    timeout_s: float = 0.05,
) -> PredictionCache | None:  # fmt: skip
    """The cache MLSERVE_CACHE names: None (off), "memory" or "redis://host:port/db"."""
    if spec is None or spec == "" or spec is False:
        return None
    if spec == "memory":
        backend: Any = _MemoryBackend(max_entries)
    elif isinstance(spec, str) and spec.startswith(("redis://", "rediss://", "unix://")):
        backend = _RedisBackend(spec, timeout_s)
    else:
        raise ValueError(f"MLSERVE_CACHE must be 'memory' or a redis:// URL, got {spec!r}")
    return PredictionCache(backend, ttl_s, models or {})
