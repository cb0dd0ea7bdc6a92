"""save and load of .mls files (the format itself is in csrc/mls_format.c)."""
from __future__ import annotations

import json
import os

from . import _core
from ._errors import ModelFormatError
from ._estimators import _MLServeEstimator, from_core_model


def save(model: _MLServeEstimator, path: str | os.PathLike) -> None:
    """Write a fitted model to ``path`` as one .mls file.

    The write is atomic: bytes go to a temporary file in the same directory,
    which is fsync'ed and renamed over ``path``, so a crash never leaves a
    half-written model there.
    """
    unsupported = getattr(model, "_save_unsupported", None)  # e.g. a converted Pipeline
    if unsupported is not None:
        raise TypeError(f"mlserve.save: {unsupported}")
    if not isinstance(model, _MLServeEstimator):
        raise TypeError(
            f"mlserve.save expects an mlserve model, got {type(model).__name__}; "
            "turn a scikit-learn model into one with mlserve.convert first"
        )
    core = model._fitted_model()
    core.save(os.fspath(path), core.metadata)


def load(path: str | os.PathLike, *, verify: bool = True) -> _MLServeEstimator:
    """Load an .mls file, memory-mapped: the weights are used in place.

    Loading never runs code from the file. A truncated, corrupt, foreign or
    newer-version file raises mlserve.ModelFormatError.

    Parameters
    ----------
    path : str or path-like
    verify : bool, default=True
        Check the checksum of every array (one read pass over the file). The
        header, metadata and section table are always checked; pass False to
        skip the data pass for very large models on trusted storage.
    """
    path = os.fspath(path)
    os.stat(path)  # FileNotFoundError/PermissionError with the path, as open() gives
    core = _core.load(path, verify=verify)
    try:
        json.loads(core.metadata)
        return from_core_model(core)
    except ModelFormatError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"{path}: invalid model metadata: {exc}") from None
