"""The model a Spark executor or Dask worker process scores with, loaded once per process.

Offline scoring runs many tasks in one long-lived worker process. Shipping the model as a
pickle with every task would copy its weights each time; instead each process memory-maps
the .mls file once (the OS page cache then shares the bytes between processes) and keeps it
here, keyed by the file's path, modification time and size, so a file replaced under the
same path is loaded again rather than served stale. This is the package's one process-wide
cache: it holds immutable, thread-safe models only.
"""
from __future__ import annotations

import functools
import os

from . import _io

_OUTPUT_METHODS = {"labels": "predict", "proba": "predict_proba",
                   "decision_function": "decision_function", "distances": "transform"}


def shared_model(path: str):
    """The loaded model at ``path`` (one per process and file version)."""
    st = os.stat(path)
    return _cached_load(os.path.realpath(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _cached_load(path, mtime_ns, size):
    return _io.load(path)


def output_method(model, output: str):
    """The bound method that gives ``output`` ("labels", "proba", ...), or a ValueError."""
    method = _OUTPUT_METHODS.get(output)
    if method is None:
        raise ValueError(f"unknown output {output!r}; use one of {', '.join(_OUTPUT_METHODS)}")
    fn = getattr(model, method, None)
    if fn is None:
        raise ValueError(f"output {output!r}: a {type(model).__name__} has no {method}")
    return fn
