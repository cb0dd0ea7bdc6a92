"""A converted scikit-learn Pipeline / ColumnTransformer as one mlserve model
(MLS_KIND_PIPELINE = 7, csrc/mls_pipeline.c).

The whole model is one ``.mls`` file: the column transforms (impute, scale,
one-hot / ordinal encode with a hashed lookup of the training categories) and
the final estimator's own arrays, validated and memory-mapped in C. predict,
predict_proba and decision_function run the transform and the final model in
one C call with the GIL released; ``transform`` gives the transform's output.
Input: a pandas DataFrame, a dict of columns, a list of records
(``[{"col": value}]``) or one record (a dict of scalars); columns are matched
by name. ``input_schema`` lists each input column: its name, kind
(``"numeric"`` or ``"string"``) and, for strings, the known categories.
"""
from __future__ import annotations

import math

import numpy as np

from . import _core
from ._estimators import ESTIMATORS, _MLServeEstimator
from ._mixins import ClassifierMixin, RegressorMixin

PREDICT, PREDICT_PROBA, DECISION_FUNCTION, TRANSFORM = 0, 1, 2, -1
FINAL_TRANSFORM = 3  # a k-means final step: distances to the centers


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _not_a_number(name: str, row: int, v) -> ValueError:
    return ValueError(f"column {name!r}, row {row}: expected a number, got "
                      f"{type(v).__name__} {str(v)[:40]!r}")


def numeric_column(name: str, values) -> np.ndarray:
    """values as float64 (None/NaN missing); a ValueError naming the column and the
    first row that is not a number (a string, even "3.5", is not one)."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False)
    if arr.ndim != 1:
        raise ValueError(f"column {name!r}: expected one value per row")
    items = arr.tolist()
    for row, v in enumerate(items):
        if type(v) is str or not (v is None or isinstance(v, (int, float, np.number))):
            raise _not_a_number(name, row, v)
    return np.array([np.nan if v is None else v for v in items], dtype=np.float64)


def string_column(name: str, values) -> np.ndarray:
    """values as an object array of str / None (NaN too: missing); the C transform
    refuses any other value, and check_string_columns then names it."""
    if hasattr(values, "to_numpy"):
        na = getattr(values.dtype, "na_value", None)
        if isinstance(na, float) and math.isnan(na):  # pandas' str dtype: NaN is missing
            arr = np.asarray(values, dtype=object)  # half the cost of astype(object)
        else:
            arr = values.astype(object).to_numpy(dtype=object, na_value=None)
    else:
        arr = np.asarray(values, dtype=object)
        if arr.ndim != 1:
            raise ValueError(f"column {name!r}: expected one value per row")
    return arr


def check_string_column(name: str, values) -> None:
    """A ValueError naming the column and the first row that is neither a string
    nor missing."""
    for row, v in enumerate(np.asarray(values, dtype=object).tolist()):
        if not (isinstance(v, str) or _is_missing(v)):
            raise ValueError(f"column {name!r}, row {row}: expected a string, got "
                             f"{type(v).__name__} {str(v)[:40]!r}")


def check_string_columns(schema: list, columns: list) -> None:
    for col, values in zip(schema, columns):
        if col["kind"] != "numeric":
            check_string_column(col["name"], values)


def input_columns(schema: list, X) -> list:
    """The columns of X (DataFrame, dict of columns, records, one record) in schema
    order, as pipeline_predict takes them."""
    names = [c["name"] for c in schema]
    if isinstance(X, np.ndarray) and X.ndim == 2:  # positional, in the schema's order
        if X.shape[1] != len(names):
            raise ValueError(f"expected {len(names)} columns ({', '.join(names)}), got "
                             f"{X.shape[1]}")
        X = {n: X[:, i] for i, n in enumerate(names)}
    if isinstance(X, dict) and X and not any(
            isinstance(v, (list, tuple, np.ndarray)) or hasattr(v, "to_numpy")
            for v in X.values()):
        X = [X]  # one record
    if isinstance(X, (list, tuple)):
        if not all(isinstance(r, dict) for r in X):
            raise ValueError("records must be a list of dicts, one per row")
        for row, rec in enumerate(X):
            missing = [n for n in names if n not in rec]
            if missing:
                raise ValueError(f"row {row} is missing column {missing[0]!r}")
        X = {n: [rec[n] for rec in X] for n in names}
    cols = []
    for col in schema:
        n = col["name"]
        try:
            values = X[n]
        except (KeyError, TypeError, IndexError):
            raise ValueError(f"missing column {n!r}") from None
        if col["kind"] == "numeric":
            if hasattr(values, "to_numpy"):
                try:
                    values = values.to_numpy(dtype=np.float64, na_value=np.nan)
                except (TypeError, ValueError):
                    values = numeric_column(n, values.to_numpy(dtype=object))
            else:
                values = numeric_column(n, values)
            if values.ndim != 1:
                raise ValueError(f"column {n!r}: expected one value per row")
            cols.append(values)
        else:
            cols.append(string_column(n, values))
    return cols


class PipelineModel(_MLServeEstimator):
    """A converted Pipeline([ColumnTransformer, final estimator]) or ColumnTransformer.

    Attributes
    ----------
    input_schema : list of dict
        One per input column: ``{"name", "kind", "categories"}``; kind is
        ``"numeric"`` or ``"string"``, categories the known (training) values of
        a string column.
    steps : list of dict
        The converted steps: name, class and, for a ColumnTransformer, its
        transformers (name, their classes, their columns).
    classes_ : ndarray
        The final classifier's classes.
    """

    _kind = "pipeline"

    def __init__(self):
        pass

    @classmethod
    def _from_core_model(cls, model) -> PipelineModel:
        est = cls()
        est._install(model)
        return est

    @property
    def _estimator_type(self):
        task = getattr(self, "_task_", None)
        return {"classification": "classifier", "regression": "regressor",
                "clustering": "clusterer"}.get(task, "transformer")

    def _install_arrays(self, arrays: dict, meta: dict) -> None:
        self.input_schema = meta["input_schema"]
        self._names_ = tuple(c["name"] for c in self.input_schema)
        self.steps = meta["steps"]
        self.final_metadata_ = meta.get("final")
        self._task_ = meta.get("task")
        self.n_transformed_ = int(arrays["pipe.header"][1])
        final_arrays = {k[len("final."):]: v for k, v in arrays.items()
                        if k.startswith("final.")}
        graph = (self.final_metadata_ or {}).get("graph")
        self._graph_ = graph  # an MLP final step: its raw output is post-processed here
        if self._task_ == "classification":
            ClassifierMixin._install_classes(self, final_arrays, meta)
        if self._task_ == "clustering":
            self.cluster_centers_ = final_arrays["cluster_centers"]

    def __repr__(self) -> str:
        if not hasattr(self, "_model_"):
            return "PipelineModel()"
        return "PipelineModel(steps=[" + ", ".join(
            f"{s['name']!r}: {s['class']}" for s in self.steps) + "])"

    def _run(self, method: int, X):
        core = self._fitted_model()
        if type(X) is dict:  # one record: decoded in C (None: not a plain record)
            out = _core.pipeline_predict_records(core, method, self._names_, [X])
            if out is not None:
                return out
        elif type(X) is list and X and type(X[0]) is dict:  # records
            out = _core.pipeline_predict_records(core, method, self._names_, X)
            if out is not None:
                return out
        columns = input_columns(self.input_schema, X)
        try:
            return _core.pipeline_predict(core, method, columns)
        except ValueError:
            check_string_columns(self.input_schema, columns)  # names the column and row
            raise

    def _require(self, method: str):
        if self.final_metadata_ is None:
            raise AttributeError(f"a converted ColumnTransformer has no {method}; use transform")

    def transform(self, X):
        """The column transform's output, float64 (n_samples, n_transformed); for a
        k-means final step, as scikit-learn's Pipeline.transform, the distances to its
        centers."""
        if self._task_ == "clustering":
            return self._run(FINAL_TRANSFORM, X)
        return self._run(TRANSFORM, X)

    def predict(self, X):
        self._require("predict")
        out = self._run(PREDICT, X)
        if self._graph_ is not None:  # an MLP: probabilities or targets, as NeuralNetwork
            if self._task_ == "classification":
                if self._graph_.get("binary"):
                    return self.classes_.take((out[:, 0] > 0.5).astype(np.int64))
                return self.classes_.take(np.argmax(out, axis=1))
            return out.ravel() if self._graph_.get("ravel") else out
        if self._task_ == "classification" and not self._labels_from_core_:
            return self.classes_.take(out)
        return out

    def predict_proba(self, X):
        self._require("predict_proba")
        if self._task_ != "classification":
            raise AttributeError("this pipeline's final estimator is not a classifier and has "
                                 "no predict_proba")
        if self._graph_ is not None:
            out = self._run(PREDICT, X)
            return np.hstack([1.0 - out, out]) if self._graph_.get("binary") else out
        return self._run(PREDICT_PROBA, X)

    predict_log_proba = ClassifierMixin.predict_log_proba

    def decision_function(self, X):
        self._require("decision_function")
        return self._run(DECISION_FUNCTION, X)

    def score(self, X, y, sample_weight=None):
        if self._task_ == "classification":
            return ClassifierMixin.score(self, X, y, sample_weight)
        return RegressorMixin.score(self, X, y, sample_weight)


ESTIMATORS[PipelineModel.__name__] = PipelineModel  # mlserve.load finds it
