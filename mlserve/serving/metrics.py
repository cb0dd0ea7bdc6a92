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

import logging
import os
import random
import re
import threading
import time
from bisect import bisect_left
from collections import deque
from json.encoder import (
    encode_basestring_ascii as _json_string,  # json.dumps' own, in C
)
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

from mlserve.serving.deferred import (
    FLUSH_INTERVAL_SECONDS,
    BufferedLineHandler,
    Flusher,
    take_all,
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
    """The client's request id if it is a short token, else a new random one (32 hex digits).

    Ids only need to be unique, not secret: ``random.getrandbits`` (reseeded in
    each forked worker by the random module) costs no system call, unlike
    ``secrets``/``uuid4``.
    """
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return f"{random.getrandbits(128):032x}"


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

    def observe_requests(self, model: str, version: int, summary: "_RequestSummary") -> None:
        """Many requests to one model version at once (what observe_request adds for each)."""
        now = int(time.time() * 1000)
        with self._lock:
            stats = self._version(model, version)
            stats.last_inference = now
            stats.fail.count += summary.fail
            stats.fail.ms += summary.fail_ms
            stats.success.count += summary.ok
            stats.success.ms += summary.ok_ms
            stats.inference_count += summary.rows
            for name in ("queue", "compute_input", "compute_infer", "compute_output"):
                duration = getattr(stats, name)
                duration.count += summary.timed
                duration.ms += getattr(summary, name)

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
    """The per-request Prometheus series and V2 statistics of one mounted blueprint.

    The request path only appends: :meth:`started`, :meth:`observe` and
    :meth:`observe_execution` add to deques (thread-safe in C, no lock, no
    memory-mapped write), and a :class:`~mlserve.serving.deferred.Flusher`
    thread applies what gathered every ``FLUSH_INTERVAL_SECONDS`` (0.05 s): one
    ``inc`` per series and bucket for all the requests of that interval. Every
    request is counted; a reader sees it within 0.1 s, or at once after
    :meth:`flush` (``/metrics`` and the V2 statistics flush first).

    The labelled children are cached per label set (bounded like the labels
    themselves: served models, versions, route names, statuses). Requests to
    ``inference_endpoints`` that reached a model version are also counted in
    ``inference`` (the V2 statistics).
    """

    def __init__(self, inference_endpoints: Iterable[str] = ()) -> None:
        self._children: dict[tuple[str, str, str, int], tuple[Any, Any, Any]] = {}
        self._batch_children: dict[str, tuple[Any, Any]] = {}
        self.inference_endpoints = frozenset(inference_endpoints)
        self.inference = InferenceStats()
        self._requests: deque[tuple[Any, ...]] = deque()
        self._executions: deque[tuple[Any, ...]] = deque()
        self._active: set[Any] = set()  # the RequestRecords in flight
        self._in_flight_counted = 0  # what this blueprint added to IN_FLIGHT
        self._flush_lock = threading.Lock()
        self._flusher = Flusher(self.flush, FLUSH_INTERVAL_SECONDS, "mlserve-metrics")
        self._clock = _Timestamps()

    def started(self, record: Any) -> None:
        """A request began (mlserve_requests_in_flight)."""
        self._active.add(record)
        if self._flusher.idle:
            self._flusher.wake()

    def abandoned(self, record: Any) -> None:
        """A request left without being counted (the fast path handing it to Flask,
        which counts it under a record of its own)."""
        self._active.discard(record)

    def observe(self, model: str, version: str, endpoint: str, status: int, seconds: float,
                rows: int | None, record: Any = None, timings: Any = None) -> None:  # fmt: skip
        """A request ended; ``record`` (its RequestRecord) leaves the in-flight set."""
        self._requests.append((model, version, endpoint, status, seconds, rows, timings))
        if record is not None:
            self._active.discard(record)
        if self._flusher.idle:
            self._flusher.wake()

    def observe_execution(self, model: str, version: int, rows: int, compute_ms: float,
                          queue_ms: Any = None) -> None:  # fmt: skip
        """One successful core call of ``rows`` rows; with ``queue_ms`` (each request's
        wait) it is a micro-batcher's and also feeds mlserve_batch_size and
        mlserve_batch_queue_delay_seconds."""
        self._executions.append((model, version, rows, compute_ms, queue_ms))
        if self._flusher.idle:
            self._flusher.wake()

    def batch_listener(self, model: str, version: int) -> Any:
        """A listener for a micro-batcher's ``BatchStats.listeners`` (runtime._with_batcher)."""
        append = self.observe_execution

        def listen(record: Any) -> None:
            append(model, version, record.rows, record.compute_ms, record.queue_ms)

        return listen

    def timestamp(self, now: float) -> str:
        """``now`` (time.time()) as the access log's UTC time, e.g. 2026-12-03T18:00:00.123Z."""
        return self._clock.format(now)

    def discard_pending(self) -> None:
        """Drop what was gathered (a forked child: the parent counts its own requests)."""
        self._requests.clear()
        self._executions.clear()
        self._active.clear()
        self._in_flight_counted = 0

    def flush(self) -> bool:
        """Apply everything gathered so far; whether there was anything."""
        with self._flush_lock:
            requests = _take(self._requests)
            executions = _take(self._executions)
            in_flight = len(self._active)
            changed = in_flight != self._in_flight_counted
            if changed:
                IN_FLIGHT.inc(in_flight - self._in_flight_counted)  # a sum over blueprints
                self._in_flight_counted = in_flight
            if requests:
                self._apply_requests(requests)
            if executions:
                self._apply_executions(executions)
            return bool(requests or executions or changed)

    def _apply_requests(self, requests: list[tuple[Any, ...]]) -> None:
        counts: dict[tuple[str, str, str, int], int] = {}
        latencies: dict[tuple[str, str, str, int], list[float]] = {}
        row_counts: dict[tuple[str, str, str, int], list[int]] = {}
        endpoints = self.inference_endpoints
        summaries: dict[tuple[str, str], _RequestSummary] = {}
        for model, version, endpoint, status, seconds, rows, timings in requests:
            key = (model, version, endpoint, status)
            if key in counts:
                counts[key] += 1
                latencies[key].append(seconds)
            else:
                counts[key] = 1
                latencies[key] = [seconds]
                row_counts[key] = []
            if rows is not None:
                row_counts[key].append(rows)
            if version and endpoint in endpoints:
                summary = summaries.get((model, version))
                if summary is None:
                    summary = summaries[(model, version)] = _RequestSummary()
                summary.add(status < 400, seconds * 1000.0, rows, timings)
        for (model, version), summary in summaries.items():
            self.inference.observe_requests(model, int(version), summary)
        for key, count in counts.items():
            children = self._children.get(key)
            if children is None:
                model, version, endpoint, status = key
                children = self._children[key] = (
                    REQUESTS.labels(model, version, endpoint, status),  # labels() str()s it
                    LATENCY.labels(model, endpoint),
                    ROWS.labels(model, endpoint),
                )
            requests_total, latency, rows_histogram = children
            requests_total.inc(count)
            observe_many(latency, latencies[key])
            if row_counts[key]:
                observe_many(rows_histogram, row_counts[key])

    def _apply_executions(self, executions: list[tuple[Any, ...]]) -> None:
        sizes: dict[str, list[int]] = {}
        delays: dict[str, list[float]] = {}
        for model, version, rows, compute_ms, queue_ms in executions:
            self.inference.observe_execution(model, version, rows, compute_ms)
            if queue_ms is None:
                continue
            if model not in sizes:
                sizes[model], delays[model] = [], []
            sizes[model].append(rows)
            delays[model].extend(ms / 1000.0 for ms in queue_ms)
        for model, values in sizes.items():
            children = self._batch_children.get(model)
            if children is None:
                children = self._batch_children[model] = (
                    BATCH_SIZE.labels(model), QUEUE_DELAY.labels(model),
                )  # fmt: skip
            observe_many(children[0], values)
            observe_many(children[1], delays[model])


class _RequestSummary:
    """The V2 statistics of many requests to one model version (InferenceStats.observe_request's
    sums, added at once by observe_requests)."""

    __slots__ = ("ok", "ok_ms", "fail", "fail_ms", "rows", "timed", "queue", "compute_input",
                 "compute_infer", "compute_output")  # fmt: skip

    def __init__(self) -> None:
        self.ok = self.fail = self.rows = self.timed = 0
        self.ok_ms = self.fail_ms = 0.0
        self.queue = self.compute_input = self.compute_infer = self.compute_output = 0.0

    def add(self, ok: bool, ms: float, rows: int | None, timings: Any) -> None:
        if not ok:
            self.fail += 1
            self.fail_ms += ms
            return
        self.ok += 1
        self.ok_ms += ms
        self.rows += rows or 0
        if timings is not None:
            self.timed += 1
            self.queue += timings.queue
            self.compute_input += timings.decode
            self.compute_infer += timings.compute
            self.compute_output += timings.encode


_take = take_all  # a scrape's flush and the flusher thread may drain at once


def observe_many(histogram: Any, values: list[float] | list[int]) -> None:
    """``histogram.observe(v)`` for each value, as one update of the sum and of each bucket.

    Uses the child's ``_sum``, ``_buckets`` and ``_upper_bounds`` (prometheus_client's
    Histogram); any other object gets one observe() per value
    (tests/test_serving_fastpath.py checks the two give the same exposition).
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    last = len(bounds) - 1
    for value in values:
        index = bisect_left(bounds, value)  # the first bound >= value, as observe()
        counts[index if index <= last else last] += 1
    total.inc(sum(values))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


class _Timestamps:
    """ISO 8601 UTC times with milliseconds, the seconds part formatted once per second."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, now: float) -> str:
        second = int(now)
        prefix = self._prefix
        if second != self._second:  # two threads may both format it: the same string
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._prefix, self._second = prefix, second
        return f"{prefix}.{int((now - second) * 1000):03d}Z"


def _json_or_null(value: str | None) -> str:
    return "null" if value is None else _json_string(value)


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
        are read only for the log line. The line goes straight to a
        :class:`~mlserve.serving.deferred.BufferedLineHandler` when that is the
        access logger's only handler (``mlserve serve``), else through
        ``logging`` as any record (the app's own handlers, caplog).
        """
        if self.done:
            return
        self.done = True
        elapsed = time.perf_counter() - self.start
        metrics.observe(
            self.model, self.version, self.endpoint, status, elapsed, self.rows, self,
            self.timings,
        )  # fmt: skip
        if not log or not access_log.isEnabledFor(logging.INFO):
            return
        handlers = access_log.handlers
        direct = (
            len(handlers) == 1
            and handlers[0].__class__ is BufferedLineHandler
            and not access_log.propagate
            and not access_log.filters
            and not handlers[0].filters
            and handlers[0].formatter is None  # writes the message as it is
            and handlers[0].level <= logging.INFO
        )
        model, version, rows, key = self.model, self.version, self.rows, self.key_id
        line = (
            f'{{"time":"{metrics.timestamp(time.time())}",'
            f'"request_id":{_json_string(self.request_id)},'
            f'"method":{_json_string(request.method)},'
            f'"path":{_json_string(request.path[:512])},'
            f'"endpoint":{_json_string(self.endpoint)},'
            f'"model":{_json_string(model) if model else "null"},'
            f'"version":{int(version) if version else "null"},'
            f'"rows":{"null" if rows is None else rows},'
            f'"status":{status},'
            f'"latency_ms":{round(elapsed * 1000.0, 3)!r},'
            f'"key":{_json_or_null(key)},'
            f'"remote":{_json_or_null(request.remote_addr)}}}'
        )  # the JSON of json.dumps(..., separators=(",", ":")), without building a dict
        if direct:
            handlers[0].write_line(line)
        else:
            access_log.info(line)
