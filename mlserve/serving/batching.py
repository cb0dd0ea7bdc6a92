"""Dynamic micro-batching: concurrent requests for one model version share one core call.

One :class:`Batcher` per loaded model version (created by
:class:`~mlserve.serving.runtime.ServingState` when batching is on for that
model). :func:`mlserve.serving.runtime.predict` validates a request, then
hands its rows to the batcher, which

* runs the request **directly**, in the caller's thread with no queue hop,
  when nothing else is queued or computing for this version (an idle server,
  a single-threaded worker, or a request of ``max_batch_size`` rows or more),
  and always for a model whose fastest direct call took under ``min_compute_ms``
  (0.5 ms): handing a request to another thread and back costs Python two GIL
  hand-offs, which under load is more than a cheap model's whole compute
  (measured: LogisticRegression on 20 features at 64 clients lost 70% of its
  throughput to the queue), so only models heavy enough to gain are batched;
* otherwise **queues** it. One worker thread per batcher waits on a condition
  variable and dispatches the queued rows as one batch as soon as the version
  is not computing (greedy: a batch forms while the previous computation
  runs), the batch holds ``max_batch_size`` rows, or the oldest request has
  waited ``max_delay_ms`` -- whichever comes first. The rows are copied into
  one buffer of the model's dtype, the model runs once (GIL released in C),
  and each request gets a view of exactly its own rows.

The contract (as MLServer's adaptive batcher): rows come back to their own
request only; requests are validated before they are queued, and a batch the
model refuses as a whole (``ValueError``/``TypeError``, e.g. one request's NaN)
is re-run request by request, so one bad request never fails another; any
other exception of a batch call reaches every caller waiting on that batch; a
caller that gives up (its ``timeout``) is skipped and never holds a batch back;
:meth:`Batcher.close` (and :func:`drain`, called at gunicorn worker exit and
at interpreter exit) runs everything still queued before it returns.

Optional adaptive mode (Clipper's AIMD): the effective batch size grows by
``adaptive_step`` rows after each full batch that met ``latency_objective_ms``
and shrinks by 10% after a batch that missed it, between 1 and
``max_batch_size``.

Each call's batch size and queue delay go to :class:`Timings` (the
``Server-Timing`` header: ``queue;dur=...``, ``batch;desc=<rows>``) and to the
batcher's :class:`BatchStats` (counters, plus listeners called after every
batch, for the metrics).
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from time import perf_counter
from collections import deque
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "BatchConfig",
    "BatchStats",
    "BatchTimeout",
    "Batcher",
    "BatchingError",
    "drain",
    "parse_batching",
]

#: Options of a batcher (the global MLSERVE_BATCH_* keys and a model's MLSERVE_BATCHING_MODELS entry).
OPTION_NAMES = (
    "enabled",
    "max_batch_size",
    "max_delay_ms",
    "timeout_s",
    "adaptive",
    "latency_objective_ms",
    "adaptive_step",
    "min_compute_ms",
)


class BatchingError(ValueError):
    """A batching option is invalid; the message names it."""


class BatchTimeout(Exception):
    """A request waited longer than its timeout for its batch."""


@dataclass(frozen=True)
class BatchConfig:
    """How one model's batcher coalesces requests."""

    enabled: bool = True
    max_batch_size: int = 64  # rows per core call
    max_delay_ms: float = 2.0  # longest a queued request waits for others
    timeout_s: float = 60.0  # longest a caller waits for its batch (then 503)
    adaptive: bool = False  # AIMD on the batch size against latency_objective_ms
    latency_objective_ms: float = 50.0  # of one batch's compute, in adaptive mode
    adaptive_step: int = 4  # rows added after each full batch that met the objective
    min_compute_ms: float = 0.5  # models faster than this per call are never queued

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str) -> "BatchConfig":
        unknown = [k for k in options if k not in OPTION_NAMES]
        if unknown:
            raise BatchingError(
                f"{where}: unknown batching option {unknown[0]!r}; "
                f"known options: {', '.join(OPTION_NAMES)}"
            )
        config = replace(cls(), **dict(options))
        config.validate(where)
        return config

    def validate(self, where: str) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BatchingError(f"{where}: {name} must be an integer >= 1, got {value!r}")

        def non_negative(name: str, strict: bool = False) -> None:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (value > 0 if strict else value >= 0)
                or value != value
            ):
                raise BatchingError(
                    f"{where}: {name} must be a number {'>' if strict else '>='} 0, got {value!r}"
                )

        for name in ("enabled", "adaptive"):
            if not isinstance(getattr(self, name), bool):
                raise BatchingError(
                    f"{where}: {name} must be True or False, got {getattr(self, name)!r}"
                )
        positive_int("max_batch_size")
        positive_int("adaptive_step")
        non_negative("max_delay_ms")
        non_negative("timeout_s", strict=True)
        non_negative("latency_objective_ms", strict=True)
        non_negative("min_compute_ms")


def parse_batching(
    enabled: Any, max_size: Any, max_delay_ms: Any, per_model: Any
) -> tuple[BatchConfig, Mapping[str, BatchConfig]]:
    """The global BatchConfig and the per-model ones, from the MLSERVE_BATCH* keys."""
    base = BatchConfig.from_options(
        {"enabled": enabled, "max_batch_size": max_size, "max_delay_ms": max_delay_ms},
        "MLSERVE_BATCHING / MLSERVE_BATCH_MAX_SIZE / MLSERVE_BATCH_MAX_DELAY_MS",
    )
    if per_model is None:
        per_model = {}
    if not isinstance(per_model, Mapping):
        raise BatchingError(
            f"MLSERVE_BATCHING_MODELS must map model names to option dicts, got {per_model!r}"
        )
    models = {}
    for name, options in per_model.items():
        where = f"MLSERVE_BATCHING_MODELS[{name!r}]"
        if isinstance(options, bool):  # {"churn": False} is short for {"enabled": False}
            options = {"enabled": options}
        if not isinstance(name, str) or not isinstance(options, Mapping):
            raise BatchingError(f"{where} must be a dict of batching options, got {options!r}")
        merged = {k: getattr(base, k) for k in OPTION_NAMES}
        merged.update(options)
        models[name] = BatchConfig.from_options(merged, where)
    return base, MappingProxyType(models)


# -------------------------------------------------------------------- stats


@dataclass
class BatchRecord:
    """One core call made by a batcher (passed to BatchStats listeners)."""

    rows: int  # rows in the call
    requests: int  # requests served by the call
    queue_ms: Sequence[float]  # each request's wait in the queue (0 for a direct call)
    compute_ms: float
    direct: bool  # a bypass: the caller's thread, no queue


@dataclass
class BatchStats:
    """Counters of one batcher, and listeners called after each core call.

    Read the counters at any time (they only grow); ``listeners`` are called
    with a :class:`BatchRecord` from the thread that made the call, after the
    callers were released, and must be quick and must not raise.
    """

    direct_calls: int = 0  # requests that bypassed the queue (one core call each)
    direct_rows: int = 0
    batched_calls: int = 0  # core calls made by the worker thread
    batched_requests: int = 0
    batched_rows: int = 0
    max_rows_in_call: int = 0  # of batched calls
    queue_ms_total: float = 0.0  # summed over queued requests
    compute_ms_total: float = 0.0  # of batched calls
    timeouts: int = 0  # callers that gave up waiting
    split_retries: int = 0  # batches re-run request by request after a client error
    listeners: list[Callable[[BatchRecord], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _record(self, record: BatchRecord) -> None:
        with self._lock:
            self.batched_calls += 1
            self.batched_requests += record.requests
            self.batched_rows += record.rows
            self.queue_ms_total += sum(record.queue_ms)
            self.compute_ms_total += record.compute_ms
            if record.rows > self.max_rows_in_call:
                self.max_rows_in_call = record.rows
        self._notify(record)

    def _notify(self, record: BatchRecord) -> None:
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:  # a metrics hook must never fail a request
                pass

    def snapshot(self) -> dict[str, Any]:
        """The counters now, plus the totals ``calls``, ``requests`` and ``rows``."""
        with self._lock:
            counters = {
                k: getattr(self, k)
                for k in (
                    "direct_calls", "direct_rows", "batched_calls", "batched_requests",
                    "batched_rows", "max_rows_in_call", "queue_ms_total", "compute_ms_total",
                    "timeouts", "split_retries",
                )
            }  # fmt: skip
        counters["calls"] = counters["direct_calls"] + counters["batched_calls"]
        counters["requests"] = counters["direct_calls"] + counters["batched_requests"]
        counters["rows"] = counters["direct_rows"] + counters["batched_rows"]
        return counters


# ------------------------------------------------------------------ batcher

#: compute(rows, outputs) -> {output name: array with rows.shape[0] rows}
Compute = Callable[[np.ndarray, Sequence[str]], dict[str, np.ndarray]]


class _Item:
    __slots__ = ("rows", "outputs", "enqueued", "done", "result", "error", "cancelled",
                 "queue_ms", "compute_ms", "batch_rows")  # fmt: skip

    def __init__(self, rows: np.ndarray, outputs: Sequence[str]) -> None:
        self.rows = rows
        self.outputs = outputs
        self.enqueued = time.perf_counter()
        self.done = threading.Lock()
        self.done.acquire()  # released by the worker when result or error is set
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.queue_ms = 0.0
        self.compute_ms = 0.0
        self.batch_rows = 0


_live: "weakref.WeakSet[Batcher]" = weakref.WeakSet()


class Batcher:
    """Coalesces concurrent ``predict`` calls for one model version into batches.

    Parameters
    ----------
    compute : callable
        ``compute(rows, outputs)`` runs the model on a 2-D batch and returns
        ``{output: array}`` with one entry per row; thread-safe.
    config : BatchConfig
    dtype : numpy dtype
        The model's input dtype: batches are assembled in it, once.
    name : str
        For the worker thread's name.
    """

    def __init__(
        self, compute: Compute, config: BatchConfig, dtype: Any = np.float64, name: str = ""
    ) -> None:
        self._compute = compute
        self.config = config
        self._dtype = np.dtype(dtype)
        self._name = name
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._computing = 0  # core calls running now (direct or batched)
        self._closed = False
        self._thread: threading.Thread | None = None
        self.stats = BatchStats(_lock=self._lock)  # counters share the batcher's lock
        # the fastest direct call's compute time: a model cheaper than min_compute_ms
        # is never queued (a queue hop costs more than it saves). The fastest, not
        # an average: under load a call's wall time includes waiting for the GIL
        # after the C code released it, which made a cheap model look heavy
        # exactly when queueing it hurts most
        self.direct_ms: float | None = None
        self._cheap = False
        self.current_max = config.max_batch_size if not config.adaptive else min(
            config.max_batch_size, config.adaptive_step
        )
        _live.add(self)

    # ------------------------------------------------------------- callers

    def predict(
        self,
        rows: np.ndarray,
        outputs: Sequence[str],
        timeout: float | None = None,
    ) -> tuple[dict[str, np.ndarray], float, float, int]:
        """``(results, queue_ms, compute_ms, batch_rows)`` for this request's rows.

        ``rows`` must already be validated (2-D, the model's width). Raises
        what the model raised for these rows, or :class:`BatchTimeout`.
        """
        n = rows.shape[0]
        cond = self._cond
        lock = self._lock
        lock.acquire()
        if (
            self._cheap
            or not (self._queue or self._computing)
            or n >= self.current_max
            or self._closed
        ):
            # bypass: nothing to batch with; run in this thread, no queue hop
            self._computing += 1
            lock.release()
            start = perf_counter()
            results = None
            try:
                results = self._compute(rows, outputs)
            finally:
                end = perf_counter()
                stats = self.stats
                lock.acquire()
                self._computing -= 1
                stats.direct_calls += 1
                stats.direct_rows += n
                ms = (end - start) * 1000.0
                fastest = self.direct_ms
                # a refused call (NaN, wrong width) returns early: it says nothing of the model
                if results is not None and (fastest is None or ms < fastest):
                    self.direct_ms = ms
                    self._cheap = ms < self.config.min_compute_ms
                if self._queue:
                    cond.notify()  # the worker may dispatch now
                lock.release()
            compute_ms = (end - start) * 1000.0
            if stats.listeners:
                stats._notify(BatchRecord(n, 1, (0.0,), compute_ms, True))
            return results, 0.0, compute_ms, n
        try:
            item = _Item(rows, outputs)
            self._queue.append(item)
            self._queued_rows += n
            if self._thread is None:
                self._start_worker()
            cond.notify()
        finally:
            lock.release()
        wait = self.config.timeout_s if timeout is None else timeout
        if not item.done.acquire(timeout=wait):
            with cond:
                item.cancelled = True  # the worker skips it (or drops its result)
                if item in self._queue:
                    self._queue.remove(item)
                    self._queued_rows -= n
            with self.stats._lock:
                self.stats.timeouts += 1
            if item.done.acquire(blocking=False) and item.error is None and item.result is not None:
                return item.result, item.queue_ms, item.compute_ms, item.batch_rows
            raise BatchTimeout(
                f"the request waited more than {wait:g} s for its batch (model busy)"
            )
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result, item.queue_ms, item.compute_ms, item.batch_rows


    # -------------------------------------------------------------- worker

    def _start_worker(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"mlserve-batcher-{self._name}", daemon=True
        )
        self._thread.start()

    def _take_batch(self) -> list[_Item] | None:
        """Wait for a batch to be due; pop its items (with the lock held). None: closed and empty."""
        cond = self._cond
        while True:
            while not self._queue:
                if self._closed:
                    return None
                cond.wait()
            first = self._queue[0]
            if first.cancelled:
                self._queue.popleft()
                self._queued_rows -= first.rows.shape[0]
                continue
            deadline = first.enqueued + self.config.max_delay_ms / 1000.0
            # greedy: dispatch at once when nothing computes; else gather until
            # the batch is full or the oldest request's delay is up
            while (
                self._queue
                and not self._closed
                and self._computing > 0
                and self._queued_rows < self.current_max
            ):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                cond.wait(remaining)
            if not self._queue:
                continue
            items, rows = [], 0
            while self._queue:
                item = self._queue[0]
                n = item.rows.shape[0]
                if items and rows + n > self.current_max:
                    break
                self._queue.popleft()
                self._queued_rows -= n
                if item.cancelled:
                    continue
                items.append(item)
                rows += n
            if items:
                self._computing += 1
                return items

    def _run(self) -> None:
        while True:
            with self._cond:
                items = self._take_batch()
            if items is None:
                return
            try:
                self._run_batch(items)
            finally:
                with self._cond:
                    self._computing -= 1

    def _run_batch(self, items: list[_Item]) -> None:
        start = time.perf_counter()
        for item in items:
            item.queue_ms = (start - item.enqueued) * 1000.0
        total = sum(item.rows.shape[0] for item in items)
        outputs: list[str] = []
        for item in items:
            for name in item.outputs:
                if name not in outputs:
                    outputs.append(name)
        try:
            if len(items) == 1:
                batch = items[0].rows
            else:
                batch = np.empty((total, items[0].rows.shape[1]), dtype=self._dtype)
                offset = 0
                for item in items:
                    n = item.rows.shape[0]
                    batch[offset : offset + n] = item.rows
                    offset += n
            results = self._compute(batch, outputs)
        except (ValueError, TypeError):
            if len(items) == 1:
                self._fail(items, start)
                return
            # the model refused the batch (e.g. one request's NaN): each on its own
            with self.stats._lock:
                self.stats.split_retries += 1
            for item in items:
                self._run_batch([item])
            return
        except BaseException:
            self._fail(items, start)
            return
        compute_ms = (time.perf_counter() - start) * 1000.0
        offset = 0
        for item in items:
            n = item.rows.shape[0]
            item.result = {name: results[name][offset : offset + n] for name in item.outputs}
            item.compute_ms = compute_ms
            item.batch_rows = total
            offset += n
            item.done.release()
        self._adapt(total, compute_ms)
        self.stats._record(
            BatchRecord(total, len(items), tuple(i.queue_ms for i in items), compute_ms, False)
        )

    def _fail(self, items: list[_Item], start: float) -> None:
        import sys

        error = sys.exc_info()[1]
        compute_ms = (time.perf_counter() - start) * 1000.0
        for item in items:
            item.error = error
            item.compute_ms = compute_ms
            item.done.release()

    def _adapt(self, rows: int, compute_ms: float) -> None:
        config = self.config
        if not config.adaptive:
            return
        if compute_ms > config.latency_objective_ms:
            self.current_max = max(1, int(self.current_max * 0.9))
        elif rows >= self.current_max:
            self.current_max = min(config.max_batch_size, self.current_max + config.adaptive_step)

    # ------------------------------------------------------------ shutdown

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop batching: run what is queued now (without waiting for delays), then return.

        Calls made after close run directly.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def queued(self) -> int:
        """Requests waiting in the queue now."""
        return len(self._queue)


def drain(timeout: float | None = 30.0) -> None:
    """Close every live batcher of this process, running what they have queued."""
    for batcher in list(_live):
        batcher.close(timeout)


atexit.register(drain)
