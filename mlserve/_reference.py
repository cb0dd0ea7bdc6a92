"""Training statistics for drift monitoring: per-feature bins with counts, and the drift numbers.

What a model file carries (``metadata["training"]``, written by mlserve's own
``fit`` and by ``mlserve.convert(model, reference=X_train)``)::

    "features":   one entry per feature, in the model's order
    "prediction": the same for the model's predictions on the training rows
                  (the label of a classifier, the cluster of k-means, the
                  first output of a regressor)

An entry is either numeric or categorical:

* ``{"type": "numeric", "edges": [...], "counts": [...], "psi_edges": [...]}``:
  ``edges`` are the unique percentiles 1..99 of the training values, so
  ``counts`` (one more than the edges) counts the rows of each bin
  ``(-inf, e0), [e0, e1), ..., [e_last, inf)``; ``psi_edges`` are the deciles
  (a subset of ``edges``) that the PSI is computed on.
* ``{"type": "categorical", "values": [...], "counts": [...]}``: a column
  with at most ``MAX_CATEGORIES`` distinct values (Evidently's rule: a
  numeric column with 20 or fewer distinct values is compared by its value
  frequencies), and a classifier's labels.

The drift numbers (see docs/DRIFT.md for the definitions and how they compare
with Evidently's and NannyML's):

* PSI = sum over bins of ``(p_cur - p_ref) * ln(p_cur / p_ref)``, on the
  reference deciles for numeric columns, on the values (plus one bin for
  values the training data never had) for categorical ones. A share of zero is
  replaced as Evidently does: by ``min(nonzero share) / 10**6`` when that
  minimum is at most 0.0001, else by 0.0001.
* KS = the largest difference of the two empirical distribution functions at
  the reference's percentile edges (the two-sample statistic of
  ``scipy.stats.ks_2samp`` evaluated at up to 99 points: it differs from the
  exact one by at most the largest reference bin's share, about 0.01).

Reading these statistics never trusts them: :func:`parse_reference` checks
every length and value and returns None (drift then says "no reference")
for anything it cannot use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MAX_BIN_ROWS",
    "MAX_CATEGORIES",
    "Column",
    "Reference",
    "column_statistics",
    "ks_statistic",
    "parse_reference",
    "psi",
    "reference_statistics",
]

#: a column with at most this many distinct values is categorical (Evidently's rule)
MAX_CATEGORIES = 20
#: most distinct labels of a classifier's prediction distribution
MAX_PREDICTION_CATEGORIES = 1000
#: the bins are computed on at most this many training rows (a seeded sample)
MAX_BIN_ROWS = 20_000
#: models with more features get the summary statistics only (the metadata stays small)
MAX_BINNED_FEATURES = 2000
_PERCENTILES = np.arange(1, 100) / 100.0
_DECILES = np.arange(1, 10) / 10.0


def _json_number(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def column_statistics(values: np.ndarray, categories: Sequence[Any] | None = None) -> dict:
    """The bins (or value frequencies) of one column of training values."""
    values = np.asarray(values)
    if categories is not None:  # e.g. a classifier's classes: every class, even unseen
        cats = list(categories)
        counts = [int(np.count_nonzero(values == c)) for c in cats]
        return {"type": "categorical", "values": [_json_number(c) for c in cats], "counts": counts}
    unique, counts = np.unique(values, return_counts=True)
    if unique.shape[0] <= MAX_CATEGORIES:
        return {
            "type": "categorical",
            "values": [_json_number(v) for v in unique],
            "counts": [int(c) for c in counts],
        }
    values = values.astype(np.float64, copy=False)
    quantiles = np.quantile(values, np.concatenate([_PERCENTILES, _DECILES]))
    edges = np.unique(quantiles[: _PERCENTILES.shape[0]])
    psi_edges = np.unique(quantiles[_PERCENTILES.shape[0]:])
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    return {
        "type": "numeric",
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "psi_edges": psi_edges.tolist(),
    }


def _sorted_quantiles(S: np.ndarray, q: np.ndarray) -> np.ndarray:
    """np.quantile(row, q) of each row of ``S`` (rows sorted ascending), by numpy's own
    'linear' rule, without partitioning the sorted rows again. Shape (len(q), n_rows)."""
    n = S.shape[1]
    virtual = q * (n - 1)
    lower = np.floor(virtual).astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    gamma = (virtual - lower)[:, None]
    a = S[:, lower].T
    b = S[:, upper].T
    diff = b - a
    result = a + diff * gamma
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), result)


def _all_columns(X: np.ndarray) -> list[dict]:
    """column_statistics of every column of X, from one sort of X (what fit can afford)."""
    S = np.sort(np.ascontiguousarray(X.T, dtype=np.float64), axis=1)  # one row per feature
    n = S.shape[1]
    changes = S[:, 1:] != S[:, :-1]
    n_distinct = 1 + np.count_nonzero(changes, axis=1)
    numeric = np.flatnonzero(n_distinct > MAX_CATEGORIES)
    all_q = np.concatenate([_PERCENTILES, _DECILES])
    quantiles = _sorted_quantiles(S[numeric], all_q) if numeric.size else None
    where = {int(j): i for i, j in enumerate(numeric)}
    columns = []
    for j in range(S.shape[0]):
        column = S[j]
        if j not in where:
            starts = np.concatenate([[0], np.flatnonzero(changes[j]) + 1])
            counts = np.diff(np.concatenate([starts, [n]]))
            columns.append({
                "type": "categorical",  # the values in X's own type (float32 stays float32)
                "values": [_json_number(X.dtype.type(v)) for v in column[starts]],
                "counts": [int(c) for c in counts],
            })  # fmt: skip
            continue
        q = quantiles[:, where[j]]
        edges = np.unique(q[: _PERCENTILES.shape[0]])
        below = np.searchsorted(column, edges, side="left")  # rows < each edge
        counts = np.diff(np.concatenate([[0], below, [n]]))
        columns.append({
            "type": "numeric",
            "edges": edges.tolist(),
            "counts": [int(c) for c in counts],
            "psi_edges": np.unique(q[_PERCENTILES.shape[0]:]).tolist(),
        })  # fmt: skip
    return columns


def reference_statistics(
    X: np.ndarray, predictions: np.ndarray | None = None, classes: Sequence[Any] | None = None
) -> dict:
    """The ``features`` and ``prediction`` entries of ``metadata["training"]``.

    ``X`` is the validated training matrix; ``predictions`` the model's
    predictions on it (``classes`` for a classifier, so every class has a count).
    """
    if X.shape[0] > MAX_BIN_ROWS:
        rows = np.random.default_rng(0).choice(X.shape[0], MAX_BIN_ROWS, replace=False)
        rows.sort()
        X = X[rows]
        predictions = predictions[rows] if predictions is not None else None
    stats: dict[str, Any] = {"n_binned": int(X.shape[0])}
    if X.shape[1] <= MAX_BINNED_FEATURES:
        stats["features"] = _all_columns(X)
    if predictions is not None:
        p = np.asarray(predictions)
        if p.ndim > 1:  # a multi-output regressor: its first output
            p = p.reshape(p.shape[0], -1)[:, 0]
        if classes is not None and len(classes) > MAX_PREDICTION_CATEGORIES:
            classes = None
        if classes is not None or p.dtype.kind in "fiub":
            stats["prediction"] = column_statistics(p, classes)
    return stats


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Column:
    """One column's reference, checked, with what coding a served value needs."""

    kind: str  # "numeric" or "categorical"
    ref_counts: np.ndarray  # per bin (numeric) or per value plus one "unseen" bin
    edges: np.ndarray | None = None  # numeric: the bin edges
    psi_of_bin: np.ndarray | None = None  # numeric: each bin's PSI (decile) bin
    values: np.ndarray | None = None  # categorical: the sorted values (numbers)
    order: np.ndarray | None = None  # categorical: sorted position -> stored position
    labels: Mapping[Any, int] | None = None  # categorical text labels -> stored position

    @property
    def n_bins(self) -> int:
        return int(self.ref_counts.shape[0])

    def code(self, x: np.ndarray) -> np.ndarray:
        """The bin of each value of ``x`` (unseen categories: the last bin)."""
        if self.kind == "numeric":
            with np.errstate(invalid="ignore"):
                return np.searchsorted(self.edges, x, side="right")
        if self.labels is not None:
            other = self.n_bins - 1
            return np.fromiter((self.labels.get(v, other) for v in x.tolist()), np.int64, x.size)
        x = np.asarray(x, dtype=np.float64)
        pos = np.searchsorted(self.values, x)
        clipped = np.minimum(pos, self.values.shape[0] - 1)
        found = self.values[clipped] == x
        return np.where(found, self.order[clipped], self.n_bins - 1)

    def psi(self, counts: np.ndarray) -> float:
        """PSI of the served ``counts`` (per bin of this column) against the reference."""
        if self.kind == "numeric":
            size = int(self.psi_of_bin.max()) + 1
            ref = np.bincount(self.psi_of_bin, weights=self.ref_counts, minlength=size)
            cur = np.bincount(self.psi_of_bin, weights=counts, minlength=size)
            return psi(ref, cur)
        return psi(self.ref_counts, counts)

    def ks(self, counts: np.ndarray) -> float | None:
        return ks_statistic(self.ref_counts, counts) if self.kind == "numeric" else None


@dataclass(frozen=True)
class Reference:
    """A model's checked reference: one Column per feature and one for its prediction."""

    features: tuple[Column, ...]
    prediction: Column | None


def _finite_sorted(items: Any, limit: int) -> np.ndarray | None:
    if not isinstance(items, list) or len(items) > limit:
        return None
    try:
        arr = np.asarray(items, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 1 or not np.isfinite(arr).all() or (arr.size > 1 and (np.diff(arr) <= 0).any()):
        return None
    return arr


def _counts(items: Any, n: int) -> np.ndarray | None:
    if not isinstance(items, list) or len(items) != n:
        return None
    if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**53 for c in items):
        return None
    counts = np.asarray(items, dtype=np.float64)
    return counts if counts.sum() > 0 else None


def _parse_column(entry: Any) -> Column | None:
    if not isinstance(entry, Mapping):
        return None
    if entry.get("type") == "numeric":
        edges = _finite_sorted(entry.get("edges"), 1000)
        if edges is None:
            return None
        counts = _counts(entry.get("counts"), edges.size + 1)
        psi_edges = _finite_sorted(entry.get("psi_edges"), 1000)
        if counts is None or psi_edges is None or not np.isin(psi_edges, edges).all():
            return None
        # fine bin j is [e_{j-1}, e_j): its decile bin counts the deciles <= e_{j-1}
        lower = np.concatenate([[-np.inf], edges])
        psi_of_bin = np.searchsorted(psi_edges, lower, side="right")
        return Column("numeric", counts, edges=edges, psi_of_bin=psi_of_bin)
    if entry.get("type") == "categorical":
        values = entry.get("values")
        if not isinstance(values, list) or not values or len(values) > MAX_PREDICTION_CATEGORIES:
            return None
        counts = _counts(entry.get("counts"), len(values))
        if counts is None:
            return None
        counts = np.concatenate([counts, [0.0]])  # the bin of values never seen in training
        if all(isinstance(v, str) for v in values):
            if len(set(values)) != len(values):
                return None
            return Column("categorical", counts, labels={v: i for i, v in enumerate(values)})
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if arr.ndim != 1 or not np.isfinite(arr).all():
            return None
        order = np.argsort(arr, kind="stable")
        if arr.size > 1 and (np.diff(arr[order]) <= 0).any():
            return None  # a repeated value
        return Column("categorical", counts, values=arr[order], order=order)
    return None


def parse_reference(metadata: Mapping[str, Any]) -> Reference | None:
    """The checked reference of a model's metadata, or None when it has none it can use."""
    training = metadata.get("training")
    if not isinstance(training, Mapping):
        return None
    entries = training.get("features")
    try:
        n_features = int(metadata.get("n_features"))
    except (TypeError, ValueError):
        return None
    if not isinstance(entries, list) or len(entries) != n_features:
        return None
    features = tuple(_parse_column(e) for e in entries)
    if any(c is None for c in features):
        return None
    prediction = _parse_column(training.get("prediction"))
    return Reference(features, prediction)  # type: ignore[arg-type]


# ------------------------------------------------------------------ numbers


def _shares(counts: np.ndarray) -> np.ndarray:
    """Counts as shares, a zero replaced as Evidently does (psi_stat_test's feel_zeroes)."""
    shares = np.asarray(counts, dtype=np.float64) / max(float(np.sum(counts)), 1.0)
    nonzero = shares[shares != 0]
    if nonzero.size:
        smallest = float(nonzero.min())
        fill = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    else:
        fill = 0.0001
    return np.where(shares == 0, fill, shares)


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Population stability index of ``cur_counts`` against ``ref_counts`` (same bins)."""
    ref = _shares(ref_counts)
    cur = _shares(cur_counts)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def ks_statistic(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Largest difference of the two distribution functions at the bin edges."""
    ref = np.cumsum(ref_counts, dtype=np.float64)
    cur = np.cumsum(cur_counts, dtype=np.float64)
    if ref[-1] <= 0 or cur[-1] <= 0:
        return math.nan
    return float(np.max(np.abs(ref / ref[-1] - cur / cur[-1])))
