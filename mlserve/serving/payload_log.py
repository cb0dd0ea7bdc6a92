"""Payload logging (MLSERVE_PAYLOAD_LOG): each predict request's inputs and outputs as JSON Lines.

Off by default. ``MLSERVE_PAYLOAD_LOG`` (``mlserve serve --payload-log``) is a
file path or ``stderr``; ``MLSERVE_PAYLOAD_LOG_SAMPLE`` (0..1, default 1) is the
fraction of predict requests logged. One line per logged request::

    {"time": "2026-12-04T02:30:00.123Z", "request_id": "...", "endpoint": "predict",
     "model": "churn", "version": 3, "status": 200, "latency_ms": 0.412, "rows": 1,
     "inputs": [[0.5, -1.2, 3.3, 0.1]], "outputs": {"predict": ["stay"]}}

The request path only appends a tuple holding references to the decoded rows
and the results (both immutable once answered; of a large request, copies of
the rows that can fit in a line) to a bounded queue (``MLSERVE_PAYLOAD_LOG_QUEUE``
lines, default 10 000): a full queue drops the line and counts it in
``mlserve_payload_log_dropped_total`` (as are lines a write error loses); it
never blocks or slows the request. A daemon thread
(:class:`~mlserve.serving.deferred.Flusher`) formats and writes what gathered
every 0.05 s; written lines are counted in ``mlserve_payload_log_lines_total``.

A line is at most ``MLSERVE_PAYLOAD_LOG_MAX_LINE_BYTES`` (default 4096, the
Linux PIPE_BUF): as many rows as fit are written, and the rest are summarised,
not written: ``"omitted": {"rows": 999, "inputs_shape": [1000, 4],
"outputs_shape": {"predict": [1000]}}``. Non-finite numbers are written as null.

Several workers (``mlserve serve --workers N``) share one file: each line is one
``write(2)`` of at most PIPE_BUF bytes on a descriptor opened with O_APPEND, so
lines of different workers never interleave (POSIX guarantees it for a pipe such
as stderr under a process manager; Linux does for a local file). The file is
rotated by size (``MLSERVE_PAYLOAD_LOG_MAX_BYTES``, default 100 MiB; 0 never)
keeping ``MLSERVE_PAYLOAD_LOG_BACKUPS`` files (``payload.jsonl.1`` the newest);
the worker that finds the file over the limit renames it under an ``flock`` on
``<path>.lock``, and the others reopen the new file when they see its inode
change (a line written meanwhile lands in ``.1``, none is lost). A line larger
than PIPE_BUF (a raised cap) is still one write, atomic on Linux files, not on
pipes.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

import numpy as np
from prometheus_client import Counter

from mlserve._core import json_encode
from mlserve.serving.deferred import FLUSH_INTERVAL_SECONDS, Flusher, take_all

__all__ = ["PayloadLog", "format_line", "make_payload_log"]

DROPPED = Counter(
    "mlserve_payload_log_dropped", "Payload log lines dropped because the writer's queue was full."
)
LINES = Counter("mlserve_payload_log_lines", "Payload log lines written.")

STDERR = "stderr"
_SUMMARY_RESERVE = 256  # room kept for the "omitted" summary while rows are added


def _json_values(array: np.ndarray) -> Any:
    """The array as JSON-able lists, non-finite floats as None."""
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        return np.where(np.isfinite(array), array, None).tolist()
    return array.tolist()


_dump = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def format_line(entry: tuple, max_bytes: int) -> bytes:
    """One JSON line (with its newline) of at most ``max_bytes`` bytes for a logged request."""
    wall, request_id, endpoint, model, version, status, latency_ms, rows, results = entry[:9]
    # (rows, inputs shape, outputs shapes) of the request when submit kept only its first rows
    full = entry[9] if len(entry) > 9 else None
    rows = np.asarray(rows)
    n_rows = int(rows.shape[0]) if rows.ndim else 1
    n_total = full[0] if full is not None else n_rows
    stamp = datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds")
    fields = {
        "time": stamp.replace("+00:00", "Z"),
        "request_id": request_id,
        "endpoint": endpoint,
        "model": model,
        "version": version,
        "status": status,
        "latency_ms": round(latency_ms, 3),
        "rows": n_total,
    }
    arrays = {name: np.asarray(value) for name, value in results.items()}
    # the usual case, a few rows that fit: one call to mlserve's JSON encoder (numbers
    # formatted in C); NaN or infinity (which it refuses) and lines over the cap take
    # the row-by-row path below
    if full is None and rows.size + sum(a.size for a in arrays.values()) <= max_bytes // 32:
        try:
            line = json_encode(
                {
                    **fields,
                    "inputs": rows if rows.ndim > 1 else rows.reshape(1, -1),
                    "outputs": {
                        k: a if a.dtype.kind in "fiub" else a.tolist() for k, a in arrays.items()
                    },
                }
            ) + b"\n"
        except (ValueError, TypeError):
            line = b""
        if 0 < len(line) <= max_bytes:
            return line
    head = _dump(fields)[:-1]
    budget = max_bytes - len(head.encode()) - _SUMMARY_RESERVE
    inputs: list[str] = []
    outputs: dict[str, list[str]] = {name: [] for name in arrays}
    used = 0
    for i in range(n_rows):
        row_in = _dump(_json_values(rows[i] if rows.ndim else rows))
        row_out = {
            name: _dump(_json_values(a[i] if a.ndim and a.shape[0] == n_rows else a))
            for name, a in arrays.items()
        }
        cost = len(row_in.encode()) + sum(len(v.encode()) + 1 for v in row_out.values()) + 1
        if used + cost > budget:
            break
        used += cost
        inputs.append(row_in)
        for name, text in row_out.items():
            outputs[name].append(text)
    written = len(inputs)
    while True:
        body = (
            f',"inputs":[{",".join(inputs[:written])}],"outputs":{{'
            + ",".join(f"{_dump(name)}:[{','.join(v[:written])}]" for name, v in outputs.items())
            + "}"
        )
        if written < n_total:
            omitted = {
                "rows": n_total - written,
                "inputs_shape": full[1] if full is not None else list(rows.shape),
                "outputs_shape": full[2] if full is not None
                else {name: list(a.shape) for name, a in arrays.items()},
            }
            body += ',"omitted":' + _dump(omitted)
        line = (head + body + "}\n").encode()
        if len(line) <= max_bytes or written == 0:
            return line
        written -= 1  # the summary was longer than the room kept for it


class PayloadLog:
    """The bounded queue, the writer thread and the (rotated) file of one mounted blueprint."""

    def __init__(
        self, target: str, sample: float, max_bytes: int, backups: int, max_line_bytes: int,
        queue_size: int,
    ) -> None:  # fmt: skip
        self.target = target
        self.sample = sample
        self.max_bytes = max_bytes
        self.backups = backups
        self.max_line_bytes = max_line_bytes
        self.queue_size = queue_size
        self._pending: deque[tuple] = deque()
        self._write_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._size = 0
        self._flusher = Flusher(self._write_pending, FLUSH_INTERVAL_SECONDS, "mlserve-payload-log")

    # -------------------------------------------------------- request path

    def sampled(self) -> bool:
        """Whether this request is logged (MLSERVE_PAYLOAD_LOG_SAMPLE)."""
        return self.sample >= 1.0 or random.random() < self.sample

    def submit(
        self, request_id: str, endpoint: str, model: str, version: int, status: int,
        latency_ms: float, rows: np.ndarray, results: Any,
    ) -> None:  # fmt: skip
        """Queue one line (dropped and counted when the queue is full); never blocks.

        Of a large request only the rows that could fit in a line are kept (copied,
        so the queue never holds a whole 100 000-row request alive).
        """
        pending = self._pending
        if len(pending) >= self.queue_size:
            DROPPED.inc()
            return
        entry: tuple = (time.time(), request_id, endpoint, model, version, status, latency_ms,
                        rows, results)  # fmt: skip
        if rows.ndim and rows.shape[0] > 1:
            width = int(np.prod(rows.shape[1:])) if rows.ndim > 1 else 1
            keep = self.max_line_bytes // (2 * width + 2) + 1  # a row takes >= 2 bytes a number
            if rows.shape[0] > keep:
                full = (int(rows.shape[0]), list(rows.shape),
                        {k: list(np.shape(v)) for k, v in results.items()})  # fmt: skip
                entry = entry[:7] + (
                    rows[:keep].copy(), {k: np.asarray(v)[:keep].copy() for k, v in results.items()},
                    full,
                )  # fmt: skip
        pending.append(entry)
        if self._flusher.idle:
            self._flusher.wake()

    # ------------------------------------------------------- writer thread

    def _write_pending(self) -> bool:
        with self._write_lock:
            pending = self._pending
            if not pending:
                return False
            taken = take_all(pending)
            written = 0
            try:
                self._open()
                for entry in taken:
                    line = format_line(entry, self.max_line_bytes)
                    if self.max_bytes and self._size + len(line) > self.max_bytes:
                        self._rotate()
                    _write_all(self._fd, line)  # type: ignore[arg-type]
                    self._size += len(line)
                    written += 1
            except OSError as exc:  # a full disk or a closed stderr: these lines are lost
                DROPPED.inc(len(taken) - written)
                self._close()
                import logging

                logging.getLogger("mlserve.serving").error(
                    "mlserve: cannot write the payload log %s: %s", self.target, exc
                )
            if written:
                LINES.inc(written)
            return True

    def _open(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            if self.max_bytes and self.target != STDERR:
                self._follow_rotation()
            return
        self._pid = os.getpid()
        if self.target == STDERR:
            self._fd, self._size = 2, 0
            return
        self._fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _follow_rotation(self) -> None:
        """Another worker rotated the file (or it was removed): reopen; else refresh the size."""
        mine = os.fstat(self._fd)  # type: ignore[arg-type]
        try:
            current = os.stat(self.target)
        except FileNotFoundError:
            current = None
        if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
            self._reopen()
        else:
            self._size = mine.st_size

    def _reopen(self) -> None:
        self._close()
        self._open()

    def _close(self) -> None:
        if self._fd is not None and self._fd != 2 and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None

    def _rotate(self) -> None:
        """payload.jsonl -> .1 -> .2 ... (the oldest beyond MLSERVE_PAYLOAD_LOG_BACKUPS removed)."""
        if self.target == STDERR:
            return
        lock = os.open(self.target + ".lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            mine = os.fstat(self._fd)  # type: ignore[arg-type]
            try:
                current = os.stat(self.target)
            except FileNotFoundError:
                current = None
            same = current is not None and (current.st_ino, current.st_dev) == (
                mine.st_ino, mine.st_dev,
            )  # fmt: skip
            if same and current.st_size > 0:  # else another worker rotated it just now
                if self.backups == 0:
                    os.unlink(self.target)
                else:
                    for i in range(self.backups - 1, 0, -1):
                        older = f"{self.target}.{i}"
                        if os.path.exists(older):
                            os.replace(older, f"{self.target}.{i + 1}")
                    os.replace(self.target, self.target + ".1")
            self._reopen()
        finally:
            os.close(lock)  # releases the flock

    # -------------------------------------------------------------- control

    def flush(self) -> None:
        """Write what is queued now, in this thread (tests, shutdown)."""
        self._write_pending()

    def discard_pending(self) -> None:
        """After a fork: the parent's queued lines are the parent's to write."""
        self._pending.clear()
        self._fd = None

    def close(self) -> None:
        self.flush()
        with self._write_lock:
            self._close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def make_payload_log(
    target: Any, sample: float, max_bytes: int, backups: int, max_line_bytes: int,
    queue_size: int,
) -> PayloadLog | None:  # fmt: skip
    """The PayloadLog MLSERVE_PAYLOAD_LOG names: None (off), a file path or "stderr"."""
    if target is None or target == "":
        return None
    if not isinstance(target, (str, os.PathLike)):
        raise ValueError(  # noqa: TRY004 - a ConfigError (a ValueError) naming the key
            f'MLSERVE_PAYLOAD_LOG must be a file path or "stderr", got {target!r}'
        )
    target = os.fspath(target)
    if sample == 0:
        return None
    if target != STDERR:
        directory = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(directory):
            raise ValueError(f"MLSERVE_PAYLOAD_LOG {target!r}: the folder {directory!r} does not exist")
        if os.path.isdir(target):
            raise ValueError(f"MLSERVE_PAYLOAD_LOG {target!r} is a folder; name a file")
    return PayloadLog(target, sample, max_bytes, backups, max_line_bytes, queue_size)
