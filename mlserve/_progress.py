"""Progress bars for long fits and conversions: ``progress=None|True|False``.

``True`` draws a ``tqdm.auto`` bar (a widget in Jupyter, text in a terminal);
``False`` draws none; ``None`` (the default) draws one only when the work has
run for more than ``AUTO_DELAY`` seconds and a person is watching (a Jupyter
kernel, or standard error is a terminal), so scripts, servers and CI logs stay
quiet and short fits never flash a bar. Whatever the choice, the C fits check
for Ctrl-C at most ten times a second (see csrc/_core_progress.c).

A reporter is made per fit and lives only for it; nothing here is global.
"""
from __future__ import annotations

import sys
import time

AUTO_DELAY = 1.0  # seconds a fit runs before progress=None shows a bar


def is_watched() -> bool:
    """True in a Jupyter (IPython kernel) session or when stderr is a terminal."""
    shell = sys.modules.get("IPython")
    if shell is not None:
        get_ipython = getattr(shell, "get_ipython", None)
        ip = get_ipython() if callable(get_ipython) else None
        if ip is not None and getattr(ip, "kernel", None) is not None:
            return True
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def check_progress(progress, what: str = "progress") -> None:
    """progress must be None, True or False (bool only: 0/1 are not accepted)."""
    if progress is None or progress is True or progress is False:
        return
    raise TypeError(f"{what} must be None, True or False, got {progress!r}")


class Reporter:
    """``update(done)`` with the units finished so far, ``close(done)`` at the end.

    Cheap when no bar is shown: one clock read per update (updates come at
    most ten times a second from the C fits).
    """

    def __init__(self, progress, total: int | None, desc: str, unit: str = "it"):
        check_progress(progress)
        self.mode = progress
        self.total = total
        self.desc = desc
        self.unit = unit
        self.start = time.monotonic()
        self.bar = None
        self.shown = 0
        if progress is True:
            self._open()

    def _open(self) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if self.mode is True:
                raise ImportError(
                    "progress=True draws a tqdm bar: pip install tqdm (or pass progress=False)"
                ) from None
            self.mode = False  # None without tqdm: no bar, quietly
            return
        self.bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, leave=True)

    def set_total(self, total: int) -> None:
        """The number of units, once the work knows it (a bar already drawn is redrawn)."""
        self.total = int(total)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def update(self, done: int, total: int | None = None) -> None:
        if self.mode is False:
            return
        if self.bar is None:
            # progress=None: a bar only after AUTO_DELAY seconds, for a person
            if time.monotonic() - self.start < AUTO_DELAY or not is_watched():
                return
            if total:
                self.total = total
            self._open()
            if self.bar is None:
                return
        step = int(done) - self.shown
        if step > 0:
            self.bar.update(step)
            self.shown = int(done)

    def close(self, done: int | None = None) -> None:
        if self.bar is None:
            return
        if done is not None:
            # a fit that stops early (converged) ends its bar where it stopped
            if self.bar.total is not None and done < self.bar.total:
                self.bar.total = int(done)
            self.update(done)
        self.bar.close()
        self.bar = None
