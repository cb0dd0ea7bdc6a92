"""Explanations over HTTP: V1 ``POST /v1/models/<name>:explain`` and ``"return": "explain"``.

Both run the served model's ``explain`` (per-feature contributions to the raw
score, the bias last: TreeSHAP for tree ensembles, ``coef * (x - mean)`` for
linear models) on the decoded rows. The
answer has one row of ``n_features + 1`` numbers per input row, or
``n_outputs`` such rows per input row for multiclass and multi-output models.
A model that cannot explain (no ``explain``, a tree file without node
cover, a linear model without training means) is a 400 that says so. Explanations bypass the micro-batcher and the
response cache: they are a diagnostic, not the hot path.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mlserve.serving.errors import BadRequest
from mlserve.serving.runtime import LoadedModel, Timings

__all__ = ["EXPLAIN", "explain_rows", "require_explainable"]

#: the "return" value of /predict/<name> (and the V1 verb) that asks for explanations
EXPLAIN = "explain"


def require_explainable(loaded: LoadedModel) -> None:
    """Raise a 400 unless the served model has an ``explain``."""
    if loaded.is_recommender or not callable(getattr(loaded.model, "explain", None)):
        raise BadRequest(
            f"model {loaded.name!r} ({type(loaded.model).__name__}) cannot explain its "
            "predictions; explanations are available for tree ensembles and linear models"
        )


def explain_rows(loaded: LoadedModel, rows: np.ndarray, timings: Timings) -> np.ndarray:
    """The model's contributions for ``rows`` (a 2-D batch a codec checked); errors are 400s."""
    require_explainable(loaded)
    if rows.ndim != 2:
        raise BadRequest(f"expected a 2-D batch of rows, got {rows.ndim} dimensions")
    if rows.shape[1] != loaded.n_features:
        raise BadRequest(f"expected {loaded.n_features} features, got {rows.shape[1]}")
    start = time.perf_counter()
    try:
        result: Any = loaded.model.explain(rows)
    except (ValueError, TypeError) as exc:  # NaN, a file without node cover, ...
        raise BadRequest(f"model {loaded.name!r} cannot explain: {exc}") from exc
    timings.compute += (time.perf_counter() - start) * 1000.0
    timings.batch = rows.shape[0]
    return np.asarray(result, dtype=np.float64)
