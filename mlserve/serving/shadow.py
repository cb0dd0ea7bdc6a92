"""Shadow traffic: a copy of the requests an alias answers goes to another version.

``store.set_shadow("churn", "production", 4)`` (or ``mlserve shadow churn
production 4``) writes the shadow into the model's manifest, so every worker
and host serving the store sees it at its next reload. A request that
``production`` answers (it names no version: the alias, or the default alias)
is answered as always; after its answer is computed, its rows and outputs are
appended to a bounded deque (full: the copy is dropped and counted). A
:class:`~mlserve.serving.deferred.Flusher` thread runs version 4 on the copies
(the rows of many requests in one call) and compares: for a classifier or
k-means, whether the labels are equal; for a regressor, the absolute
difference. The client never waits for, or sees, the shadow.

Metrics (counters, summed over gunicorn workers like the others), labelled
``model``, ``alias`` and ``version`` (the shadow's):

================================== =============================================
mlserve_shadow_requests_total      requests mirrored to the shadow
mlserve_shadow_rows_total          rows the shadow predicted
mlserve_shadow_agreements_total    rows whose label the shadow got equal
mlserve_shadow_abs_diff_total      sum of |shadow - served| (regressors)
mlserve_shadow_errors_total        mirrored requests the shadow failed on
mlserve_shadow_dropped_total       copies dropped: the queue was full (``model``)
================================== =============================================

Agreement is ``agreements / rows``; the mean absolute difference is
``abs_diff / rows`` (the mean over a row's outputs). ``GET /models/<name>``
shows both per shadow, read from these counters.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from mlserve.serving.deferred import FLUSH_INTERVAL_SECONDS, Flusher, take_all

__all__ = ["ShadowMirror", "served_alias"]

log = logging.getLogger("mlserve.serving")

_LABELS = ["model", "alias", "version"]
REQUESTS = Counter("mlserve_shadow_requests", "Requests mirrored to a shadow version.", _LABELS)
ROWS = Counter("mlserve_shadow_rows", "Rows a shadow version predicted.", _LABELS)
AGREEMENTS = Counter(
    "mlserve_shadow_agreements", "Rows whose label the shadow version got equal.", _LABELS
)
ABS_DIFF = Counter(
    "mlserve_shadow_abs_diff",
    "Sum over rows of the mean absolute difference of the shadow's outputs (regressors).",
    _LABELS,
)
ERRORS = Counter("mlserve_shadow_errors", "Mirrored requests a shadow version failed on.", _LABELS)
DROPPED = Counter(
    "mlserve_shadow_dropped", "Copies of requests dropped: the shadow queue was full.", ["model"]
)
_COUNTERS = {
    "mlserve_shadow_requests_total": "requests",
    "mlserve_shadow_rows_total": "rows",
    "mlserve_shadow_agreements_total": "agreements",
    "mlserve_shadow_abs_diff_total": "abs_diff",
    "mlserve_shadow_errors_total": "errors",
}


def served_alias(manifest: Any, version: Any, alias: str | None, default_alias: str | None) -> str | None:
    """The alias that answers a request naming ``version`` / ``alias`` (None: a version)."""
    if version is not None:
        return None
    if alias is not None:
        return alias
    return default_alias if default_alias in manifest.aliases else None


class ShadowMirror:
    """Per ServingState: the queue of mirrored requests and the thread that runs the shadows."""

    def __init__(self, state: Any, max_pending: int) -> None:
        self._state = state
        self.max_pending = int(max_pending)
        self._pending: deque[tuple[Any, str, int, np.ndarray, Mapping[str, np.ndarray]]] = deque()
        self._drain_lock = threading.Lock()
        self._flusher = Flusher(self._drain, FLUSH_INTERVAL_SECONDS, "mlserve-shadow")
        self._failed: set[tuple[str, int]] = set()  # logged once each

    def observe(
        self, loaded: Any, alias: str, version: int, rows: np.ndarray,
        results: Mapping[str, np.ndarray],
    ) -> None:  # fmt: skip
        """Queue a copy of an answered request for the shadow ``version`` (never blocks)."""
        pending = self._pending
        if len(pending) >= self.max_pending:
            DROPPED.labels(loaded.name).inc()
            return
        pending.append((loaded, alias, version, rows, results))
        if self._flusher.idle:
            self._flusher.wake()

    def flush(self) -> None:
        self._flusher.flush()

    def discard_pending(self) -> None:
        self._pending.clear()
        self._drain_lock = threading.Lock()  # after a fork

    def _drain(self) -> bool:
        with self._drain_lock:  # a reader's flush and the shadow thread, one at a time
            return self._drain_locked()

    def _drain_locked(self) -> bool:
        pending = self._pending
        if not pending:
            return False
        items = take_all(pending)
        groups: dict[tuple[str, str, int], list[tuple[Any, np.ndarray, Any]]] = {}
        for loaded, alias, version, rows, results in items:
            served = _served_output(loaded, results)
            if served is None or not rows.shape[0]:
                continue
            groups.setdefault((loaded.name, alias, version), []).append((loaded, rows, served))
        for (name, alias, version), parts in groups.items():
            labels = (name, alias, str(version))
            try:
                self._compare(name, version, parts, labels)
            except Exception as exc:  # noqa: BLE001 - a failing shadow never touches clients
                ERRORS.labels(*labels).inc(len(parts))
                if (name, version) not in self._failed:
                    self._failed.add((name, version))
                    log.error("mlserve: shadow version %d of model %r failed: %s", version, name, exc)
        return True

    def _compare(self, name: str, version: int, parts: list, labels: tuple[str, ...]) -> None:
        shadow = self._state.select(name, version)
        primary = parts[0][0]
        X = np.concatenate([rows for _, rows, _ in parts])
        served = np.concatenate([s for _, _, s in parts])
        n = X.shape[0]
        if X.dtype != shadow.input_dtype:
            X = X.astype(shadow.input_dtype)
        predicted = np.asarray(shadow.model.predict(X))
        REQUESTS.labels(*labels).inc(len(parts))
        ROWS.labels(*labels).inc(n)
        if primary.is_classifier or primary.is_clusterer:
            agree = int(np.count_nonzero(predicted.reshape(n) == served.reshape(n)))
            AGREEMENTS.labels(*labels).inc(agree)
        else:
            a = np.asarray(predicted, dtype=np.float64).reshape(n, -1)
            b = np.asarray(served, dtype=np.float64).reshape(n, -1)
            if a.shape != b.shape:
                raise ValueError(f"the shadow gives {a.shape[1]} outputs per row, the alias {b.shape[1]}")
            ABS_DIFF.labels(*labels).inc(float(np.abs(a - b).mean(axis=1).sum()))

    def describe(self, name: str, shadows: Mapping[str, int], is_classifier: bool) -> dict:
        """Each shadow of model ``name`` (by alias) with its agreement so far (all workers)."""
        if not shadows:
            return {}
        # not flushed here: that would run the shadow model in this (read) request's thread;
        # the shadow thread applies what is queued within FLUSH_INTERVAL_SECONDS
        totals = _counter_totals(name)
        described = {}
        for alias, version in sorted(shadows.items()):
            counts = totals.get((alias, str(version)), {})
            rows = counts.get("rows", 0.0)
            entry: dict[str, Any] = {
                "version": version,
                "requests": int(counts.get("requests", 0)),
                "rows": int(rows),
                "errors": int(counts.get("errors", 0)),
            }
            if is_classifier:
                entry["agreement"] = counts.get("agreements", 0.0) / rows if rows else None
            else:
                entry["mean_absolute_difference"] = (
                    counts.get("abs_diff", 0.0) / rows if rows else None
                )
            described[alias] = entry
        return described


def _served_output(loaded: Any, results: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """What the alias answered, comparable with the shadow's predict: labels or values."""
    predicted = results.get("predict")
    if predicted is not None:
        return np.asarray(predicted)
    proba = results.get("predict_proba")
    if proba is not None:
        return np.asarray(loaded.model.classes_).take(np.argmax(proba, axis=1))
    distances = results.get("transform")
    if distances is not None:
        return np.argmin(distances, axis=1)
    return None


def _counter_totals(name: str) -> dict[tuple[str, str], dict[str, float]]:
    """The shadow counters of model ``name``, summed over every worker."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    totals: dict[tuple[str, str], dict[str, float]] = {}
    for metric in registry.collect():
        if not metric.name.startswith("mlserve_shadow"):
            continue
        for sample in metric.samples:
            field = _COUNTERS.get(sample.name)
            if field is None or sample.labels.get("model") != name:
                continue
            key = (sample.labels.get("alias", ""), sample.labels.get("version", ""))
            bucket = totals.setdefault(key, {})
            bucket[field] = bucket.get(field, 0.0) + sample.value
    return totals
