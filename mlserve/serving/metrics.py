"""Prometheus metrics, request ids and JSON-lines access logs for the serving blueprint.

Metrics (prometheus_client; exposed at ``GET /metrics`` unless
``MLSERVE_METRICS_ENABLED`` is false):

==================================== ========= ===================================
mlserve_requests_total               counter   model, version, endpoint, status
mlserve_request_duration_seconds     histogram model, endpoint
mlserve_request_rows                 histogram model, endpoint
mlserve_requests_in_flight           gauge     (summed over live workers)
mlserve_model_load_seconds           histogram model
mlserve_batch_size                   histogram model  (fed by the micro-batcher)
mlserve_batch_queue_delay_seconds    histogram model  (fed by the micro-batcher)
==================================== ========= ===================================

Label values are bounded: ``model`` and ``version`` are those of a model
that was actually served (a request for an unknown name is counted as
``model=""``), ``endpoint`` is the route's name, so a client cannot grow the
number of time series by inventing names.

Under gunicorn each worker is a process: ``mlserve serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh folder before the workers start (so
prometheus_client writes each worker's values to memory-mapped files there),
and marks a worker's files dead when it exits; ``/metrics`` then sums over
every worker, whichever worker answers the scrape. An app run under another
server with several processes must set ``PROMETHEUS_MULTIPROC_DIR`` itself
(see prometheus_client's multiprocess documentation).

The access log is one JSON object per request on the ``mlserve.access``
logger (standard logging: attach a handler, or let ``mlserve serve`` attach
one to stderr): time, request id, method, path, endpoint, model, version,
rows, status, latency in ms, the API key's id (never the key) and the
client address. The request id is the client's ``X-Request-ID`` when it is a
short token (up to 128 of ``A-Za-z0-9._:-``), otherwise a new one; it is
returned in the response's ``X-Request-ID``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from typing import Any, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "InferenceStats",
    "MULTIPROC_ENV",
    "observe_batch",
    "observe_model_load",
    "RequestMetrics",
    "RequestRecord",
    "render_metrics",
    "request_id_from",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

access_log = logging.getLogger("mlserve.access")

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 50_000, 100_000)
LOAD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)

REQUESTS = Counter(
    "mlserve_requests",
    "Requests answered, by model, version, endpoint and HTTP status.",
    ["model", "version", "endpoint", "status"],
)
LATENCY = Histogram(
    "mlserve_request_duration_seconds",
    "Time from the request reaching the blueprint to the response leaving it.",
    ["model", "endpoint"],
    buckets=LATENCY_BUCKETS,
)
ROWS = Histogram(
    "mlserve_request_rows",
    "Rows per predict request.",
    ["model", "endpoint"],
    buckets=ROW_BUCKETS,
)
IN_FLIGHT = Gauge(
    "mlserve_requests_in_flight",
    "Requests being served now.",
    multiprocess_mode="livesum",
)
MODEL_LOAD = Histogram(
    "mlserve_model_load_seconds",
    "Time to load and warm a model version.",
    ["model"],
    buckets=LOAD_BUCKETS,
)
BATCH_SIZE = Histogram(
    "mlserve_batch_size",
    "Rows per model call made by the micro-batcher.",
    ["model"],
    buckets=ROW_BUCKETS,
)
QUEUE_DELAY = Histogram(
    "mlserve_batch_queue_delay_seconds",
    "Time a request waited in the micro-batcher's queue.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)


def observe_model_load(model: str, seconds: float) -> None:
    MODEL_LOAD.labels(model).observe(seconds)


def observe_batch(model: str, size: int, queue_delay_seconds: float) -> None:
    """The micro-batcher's hook: one coalesced model call of ``size`` rows, and one
    request's wait in the queue (call once per batch for the first, once per request
    for the second, or both per batch with the oldest request's wait)."""
    BATCH_SIZE.labels(model).observe(size)
    QUEUE_DELAY.labels(model).observe(queue_delay_seconds)


def batch_listener(model: str) -> Any:
    """A listener for a micro-batcher's ``BatchStats.listeners`` (mlserve.serving.batching):
    each core call's rows go to mlserve_batch_size, each request's queue wait to
    mlserve_batch_queue_delay_seconds."""
    size = BATCH_SIZE.labels(model)
    delay = QUEUE_DELAY.labels(model)

    def listen(record: Any) -> None:
        size.observe(record.rows)
        for queue_ms in record.queue_ms:
            delay.observe(queue_ms / 1000.0)

    return listen


def render_metrics() -> tuple[bytes, str]:
    """The exposition text (summed over every gunicorn worker in multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def request_id_from(header: str | None) -> str:
    """The client's request id if it is a short token, else a new random one."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return secrets.token_hex(16)


class _Duration:
    """A Triton duration statistic: how many times, and their total time (reported in ns)."""

    __slots__ = ("count", "ms")

    def __init__(self) -> None:
        self.count = 0
        self.ms = 0.0  # summed as the milliseconds Timings has; nanoseconds when reported

    def add(self, ms: float) -> None:
        self.count += 1
        self.ms += ms

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": int(self.ms * 1e6)}


class _VersionStats:
    """The statistics of one model version (Triton's $model_stat, less its name)."""

    __slots__ = (
        "last_inference", "inference_count", "execution_count", "success", "fail", "queue",
        "compute_input", "compute_infer", "compute_output", "batches",
    )  # fmt: skip

    def __init__(self) -> None:
        self.last_inference = 0  # ms since the epoch
        self.inference_count = 0  # rows of successful requests
        self.execution_count = 0  # successful core calls (a micro-batch is one)
        self.success, self.fail, self.queue = _Duration(), _Duration(), _Duration()
        self.compute_input, self.compute_infer, self.compute_output = (
            _Duration(), _Duration(), _Duration(),
        )  # fmt: skip
        self.batches: dict[int, _Duration] = {}  # rows of a core call -> its compute


#: distinct batch sizes listed per version: a client choosing row counts must not
#: grow a worker's memory without bound (more executions are still counted)
MAX_BATCH_SIZES = 1024


class InferenceStats:
    """Triton's statistics extension (GET /v2/models[/<name>[/versions/<v>]]/stats).

    Counts of this worker process only: under gunicorn each worker answers with
    its own (the Prometheus series at /metrics are the ones summed over workers).
    Requests add success/fail with their whole time, and for a success the
    queue wait, decode (``compute_input``), core call (``compute_infer``) and
    encode (``compute_output``); executions (a micro-batch is one) come from the
    batcher's listener, or from the request for a model without batching.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, int], _VersionStats] = {}

    def _version(self, model: str, version: int) -> _VersionStats:
        stats = self._versions.get((model, version))
        if stats is None:  # callers hold the lock
            stats = self._versions[(model, version)] = _VersionStats()
        return stats

    def observe_request(self, model: str, version: int, ok: bool, ms: float, rows: int | None,
                        timings: Any) -> None:  # fmt: skip
        """One inference request that reached a model version (``timings``: runtime.Timings)."""
        now = int(time.time() * 1000)
        with self._lock:
            stats = self._version(model, version)
            stats.last_inference = now
            if not ok:
                stats.fail.add(ms)
                return
            stats.success.add(ms)
            stats.inference_count += rows or 0
            if timings is not None:
                stats.queue.add(timings.queue)
                stats.compute_input.add(timings.decode)
                stats.compute_infer.add(timings.compute)
                stats.compute_output.add(timings.encode)

    def observe_execution(self, model: str, version: int, rows: int, compute_ms: float) -> None:
        """One successful core call of ``rows`` rows."""
        with self._lock:
            stats = self._version(model, version)
            stats.execution_count += 1
            batch = stats.batches.get(rows)
            if batch is None and len(stats.batches) < MAX_BATCH_SIZES:
                batch = stats.batches[rows] = _Duration()
            if batch is not None:
                batch.add(compute_ms)

    def execution_listener(self, model: str, version: int) -> Any:
        """A listener for a Batcher's ``BatchStats.listeners``: each core call is an execution."""

        def listen(record: Any) -> None:
            self.observe_execution(model, version, record.rows, record.compute_ms)

        return listen

    def report(self, versions: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
        """Triton's $model_stat for each (model, version), zeros where nothing was counted."""
        empty = _VersionStats()
        entries = []
        with self._lock:
            for model, version in versions:
                stats = self._versions.get((model, version), empty)
                entries.append(
                    {
                        "name": model,
                        "version": str(version),
                        "last_inference": stats.last_inference,
                        "inference_count": stats.inference_count,
                        "execution_count": stats.execution_count,
                        "inference_stats": {
                            name: getattr(stats, name).to_json()
                            for name in ("success", "fail", "queue", "compute_input",
                                         "compute_infer", "compute_output")
                        },  # fmt: skip
                        # only the core call is timed per batch: decode and encode are per request
                        "batch_stats": [
                            {"batch_size": size, "compute_infer": duration.to_json()}
                            for size, duration in sorted(stats.batches.items())
                        ],
                    }
                )
        return entries

    def counted(self) -> list[tuple[str, int]]:
        """The (model, version) pairs that have statistics."""
        with self._lock:
            return list(self._versions)


class RequestMetrics:
    """The per-request Prometheus series of one mounted blueprint.

    ``labels()`` costs a lock and a tuple check per call; the three labelled
    children a request touches are cached here per label set (bounded like the
    labels themselves: served models, versions, route names, statuses), so a
    request costs one dict lookup and the three updates.

    Requests to ``inference_endpoints`` that reached a model version are also
    counted in ``inference`` (the V2 statistics).
    """

    def __init__(self, inference_endpoints: Iterable[str] = ()) -> None:
        self._children: dict[tuple[str, str, str, int], tuple[Any, Any, Any]] = {}
        self.inference_endpoints = frozenset(inference_endpoints)
        self.inference = InferenceStats()

    def observe(self, model: str, version: str, endpoint: str, status: int, seconds: float,
                rows: int | None) -> None:  # fmt: skip
        key = (model, version, endpoint, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                REQUESTS.labels(model, version, endpoint, status),  # labels() str()s it
                LATENCY.labels(model, endpoint),
                ROWS.labels(model, endpoint),
            )
        requests, latency, row_counts = children
        requests.inc()
        latency.observe(seconds)
        if rows is not None:
            row_counts.observe(rows)


class RequestRecord:
    """What one request did, filled in as it goes; logged and counted when it ends."""

    __slots__ = ("request_id", "endpoint", "start", "model", "version", "rows", "key_id", "done",
                 "timings")  # fmt: skip

    def __init__(self, request_id: str, endpoint: str = "") -> None:
        self.request_id = request_id
        self.endpoint = endpoint  # the route's name, without the blueprint's prefix
        self.start = time.perf_counter()
        self.model = ""
        self.version = ""
        self.rows: int | None = None
        self.key_id: str | None = None
        self.done = False
        self.timings: Any = None  # the predict path's runtime.Timings, once it has them

    def finish(self, metrics: RequestMetrics, status: int, request: Any, log: bool) -> None:
        """Count the request (once) and, with ``log``, write its access-log line.

        ``request`` is the werkzeug request: its method, path and client address
        are read only for the log line.
        """
        if self.done:
            return
        self.done = True
        elapsed = time.perf_counter() - self.start
        metrics.observe(self.model, self.version, self.endpoint, status, elapsed, self.rows)
        if self.version and self.endpoint in metrics.inference_endpoints:
            metrics.inference.observe_request(
                self.model, int(self.version), status < 400, elapsed * 1000.0, self.rows,
                self.timings,
            )  # fmt: skip
        if log and access_log.isEnabledFor(logging.INFO):
            access_log.info(
                json.dumps(
                    {
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                        + f".{int(time.time() * 1000) % 1000:03d}Z",
                        "request_id": self.request_id,
                        "method": request.method,
                        "path": request.path[:512],
                        "endpoint": self.endpoint,
                        "model": self.model or None,
                        "version": int(self.version) if self.version else None,
                        "rows": self.rows,
                        "status": status,
                        "latency_ms": round(elapsed * 1000.0, 3),
                        "key": self.key_id,
                        "remote": request.remote_addr,
                    },
                    separators=(",", ":"),
                )
            )
