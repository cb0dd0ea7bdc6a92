"""Work taken off the request path: done by a daemon thread within a fraction of a second.

A request under load costs more in bookkeeping than in compute when each one
updates Prometheus' memory-mapped values and writes its own access-log line
(measured on a cheap model: about a third of mlserve's time per request). The
request path instead appends a tuple to a deque (one C call, thread-safe), and
a :class:`Flusher` thread applies what gathered every ``interval`` seconds: many
requests' metrics in one update per series, many log lines in one write.

A flusher sleeps while nothing arrives (idle servers and the many apps of a
test suite cost no wake-ups), holds its owner only weakly (an app that goes
away takes its thread with it), and restarts in a forked child. What is still
pending when the process ends is written by :func:`flush_all`, which runs at
gunicorn's worker exit (``mlserve serve``) and at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, TextIO

__all__ = ["BufferedLineHandler", "FLUSH_INTERVAL_SECONDS", "Flusher", "flush_all"]

#: How often a busy flusher runs: metrics and log lines appear within twice this
FLUSH_INTERVAL_SECONDS = 0.05

_live: "weakref.WeakSet[Flusher]" = weakref.WeakSet()


class Flusher:
    """Calls ``flush()`` from a daemon thread every ``interval`` seconds while there is work.

    The owner calls :meth:`wake` after adding work when :attr:`idle` is true
    (one attribute read per request otherwise). ``flush`` returns whether it
    found anything to do; the thread goes idle after a round that found nothing.
    """

    def __init__(self, flush: Callable[[], bool], interval: float, name: str) -> None:
        self._flush = weakref.WeakMethod(flush)  # type: ignore[arg-type]
        self.interval = interval
        self.name = name
        self.idle = True
        self._event = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # wakes the thread so that it exits; through a holder, as a fork replaces the event
        self._events = [self._event]
        weakref.finalize(self, _set_first, self._events)
        _live.add(self)

    def wake(self) -> None:
        """There is work: flush within ``interval`` seconds."""
        self.idle = False
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=_run,
                        args=(weakref.ref(self), self._event, self.interval),
                        name=self.name,
                        daemon=True,
                    )
                    self._thread.start()
        self._event.set()

    def flush(self) -> bool:
        """Do the pending work now, in this thread (e.g. before a scrape, at exit)."""
        flush = self._flush()
        return bool(flush()) if flush is not None else False

    def _after_fork(self) -> None:
        # the parent's thread does not exist in the child; what the parent had
        # pending is the parent's to write (the child drops its copy)
        self._thread = None
        self._event = self._events[0] = threading.Event()  # the parent's may be mid-use
        self._start_lock = threading.Lock()
        self.idle = True


def take_all(pending: deque) -> list[Any]:
    """Pop what ``pending`` holds now; others may append meanwhile (they wait for next time).

    Two threads may drain one deque at once (a reader's flush while the flusher thread
    runs): each item goes to exactly one of them, and neither loses what it popped when
    the other emptied the deque first.
    """
    taken = []
    popleft = pending.popleft
    try:
        for _ in range(len(pending)):
            taken.append(popleft())
    except IndexError:
        pass
    return taken


def _set_first(events: list[threading.Event]) -> None:
    events[0].set()


def _run(ref: "weakref.ref[Flusher]", event: threading.Event, interval: float) -> None:
    while True:
        event.wait()
        event.clear()
        while True:
            time.sleep(interval)  # let a batch of work gather
            flusher = ref()
            if flusher is None:
                return
            try:
                if not flusher.flush():
                    flusher.idle = True
                    # what arrived while idle was still false woke no one: take it now
                    if not flusher.flush():
                        break
                    flusher.idle = False
            except Exception:  # noqa: BLE001 - bookkeeping must never kill its thread
                logging.getLogger("mlserve.serving").exception(
                    "mlserve: %s failed to flush", flusher.name
                )
            finally:
                del flusher
        if ref() is None:
            return


def flush_all() -> None:
    """Run every live flusher's pending work now (at worker and interpreter exit)."""
    for flusher in list(_live):
        try:
            flusher.flush()
        except Exception:  # noqa: BLE001 - one failing owner must not stop the others
            pass


def _after_fork_in_child() -> None:
    for flusher in list(_live):
        flusher._after_fork()
        pending = getattr(flusher._flush(), "__self__", None)
        discard = getattr(pending, "discard_pending", None)
        if callable(discard):
            discard()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(flush_all)


class BufferedLineHandler(logging.Handler):
    """A logging handler that writes its lines to ``stream`` in batches (one write per
    ``interval`` under load, instead of a write and a flush per line).

    :meth:`write_line` takes an already formatted line without a LogRecord; the
    access log uses it when this handler is the only one on its logger (see
    :func:`mlserve.serving.metrics.RequestRecord.finish`). Lines of one thread
    stay in order; everything pending is written at :meth:`flush`, :meth:`close`
    (logging's shutdown at exit) and :func:`flush_all`.
    """

    def __init__(self, stream: TextIO, interval: float = FLUSH_INTERVAL_SECONDS) -> None:
        super().__init__()
        self.stream = stream
        self._lines: deque[str] = deque()
        self._write_lock = threading.Lock()
        self._flusher = Flusher(self._write_pending, interval, "mlserve-log-writer")

    def write_line(self, line: str) -> None:
        self._lines.append(line)
        if self._flusher.idle:
            self._flusher.wake()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)

    def _write_pending(self) -> bool:
        with self._write_lock:
            lines = self._lines
            if not lines:
                return False
            taken = [lines.popleft() for _ in range(len(lines))]
            try:
                self.stream.write("\n".join(taken) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: the lines are lost
                pass
            return True

    def discard_pending(self) -> None:
        self._lines.clear()

    def flush(self) -> None:
        self._write_pending()

    def close(self) -> None:
        self.flush()
        super().close()

    def __repr__(self) -> str:
        return f"<BufferedLineHandler {getattr(self.stream, 'name', self.stream)!r}>"
