"""What every classifier and every regressor shares, whatever its family.

A class mixes in one of these before ``_MLServeEstimator``, as in
scikit-learn (``class LogisticRegression(ClassifierMixin, _MLServeEstimator)``).
TreeEnsembleModel is a classifier or a regressor by the model it holds, so it
calls these methods by name instead of inheriting them.

Every predict-like method passes X through :func:`in_model_order` first: a
table whose columns have names (a pandas or polars DataFrame) is matched to
the model's features by name, anything else stays positional.
"""
from __future__ import annotations

import numpy as np

_ndarray = np.ndarray  # a module global: the hot path's type check skips an attribute lookup

#: Names quoted in one error message before "and N more".
_NAMES_SHOWN = 5


def _quoted(names) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:_NAMES_SHOWN])
    if len(names) > _NAMES_SHOWN:
        shown += f" and {len(names) - _NAMES_SHOWN} more"
    return shown


def _features_word(names) -> str:
    return "feature" if len(names) == 1 else "features"


def feature_mismatch(given, expected, what: str = "X") -> str | None:
    """The message for named columns that are not exactly the model's features, else None.

    Duplicates first (matching by name needs each name once), then the
    missing and the unknown names together, so a typo reads as both
    ("missing 'age' ... has 'agee'"). Shared with the serving codecs.
    """
    seen: set = set()
    duplicates = [n for n in given if n in seen or seen.add(n)]
    if duplicates:
        return (
            f"{what} has column {_quoted(duplicates[:1])} more than once; column names must be "
            "unique to match them to the model's features"
        )
    expected_set = set(expected)
    missing = [n for n in expected if n not in seen]
    unknown = [n for n in given if n not in expected_set]
    if not (missing or unknown):
        return None
    parts = []
    if missing:
        parts.append(
            f"is missing {_features_word(missing)} {_quoted(missing)} "
            "that the model was fitted with"
        )
    if unknown:
        parts.append(
            f"has {_features_word(unknown)} {_quoted(unknown)} "
            f"that the model was not fitted with"
        )
    return f"{what} " + ", and ".join(parts)


def in_model_order(X, feature_names):
    """``X`` with its columns in the order of ``feature_names``, matched by name.

    Only a table with string column names (``X.columns``, as pandas and polars
    have) given to a model fitted with names is matched by name; a NumPy
    array, a list, or any input to a model fitted without names stays
    positional, as in scikit-learn. Unlike scikit-learn, which refuses a reordered DataFrame,
    the columns are reordered. No warning either way: serving and most NumPy
    callers send positional rows to named models on purpose, and a warning
    per call would be noise (and an error under ``-W error``).

    Columns that are all non-strings (``0, 1, 2``) carry no names: positional,
    as scikit-learn. A mix of string and non-string names is a TypeError, a
    missing, unknown or duplicated name a ValueError naming it.
    """
    if feature_names is None or type(X) is np.ndarray:  # the hot path: one check
        return X
    columns = getattr(X, "columns", None)
    if columns is None:
        return X
    names = list(columns)
    is_string = [isinstance(n, str) for n in names]
    if not any(is_string):
        return X
    if not all(is_string):
        kinds = sorted({type(n).__name__ for n in names})
        raise TypeError(
            "X's column names must all be strings to be matched to the model's features "
            f"by name, but they have types {kinds}; convert them with "
            "X.columns = X.columns.astype(str), or drop them to pass columns by position"
        )
    expected = list(feature_names)
    if names == expected:
        return X
    message = feature_mismatch(names, expected)
    if message is not None:
        raise ValueError(message)
    position = {name: j for j, name in enumerate(names)}
    return np.asarray(X)[:, [position[name] for name in expected]]


def _by_name(estimator, X):
    """X matched to ``estimator``'s feature names (see in_model_order); callers skip
    the call for an ndarray."""
    return in_model_order(X, getattr(estimator, "feature_names_in_", None))


class ClassifierMixin:
    """Labels, probabilities and accuracy of a classifier in one mlserve.Model.

    The class's ``_install_arrays`` calls ``_install_classes``, which sets
    ``classes_`` and how predict gets labels.
    """

    _estimator_type = "classifier"

    def _install_classes(self, arrays: dict, meta: dict) -> None:
        self.classes_ = np.asarray(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
        # C returns numeric labels itself; other labels are mapped from indices.
        self._labels_from_core_ = "classes" in arrays

    def predict(self, X):
        """Class labels for one row (1-D) or a batch (2-D), in C.

        Returns
        -------
        ndarray of shape (n_samples,), with the dtype of ``classes_``
        """
        model = self._fitted_model()
        if type(X) is not _ndarray:  # NumPy input skips the call (~80 ns a predict)
            X = _by_name(self, X)
        if self._labels_from_core_:
            return model.predict(X)
        return self.classes_.take(model.predict(X))

    def predict_proba(self, X):
        """Probability of each class, shape (n_samples, n_classes), in C."""
        if type(X) is not _ndarray:
            X = _by_name(self, X)
        return self._fitted_model().predict_proba(X)

    def predict_log_proba(self, X):
        """Log of predict_proba."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def score(self, X, y, sample_weight=None):
        """Mean accuracy."""
        y = np.asarray(y)
        correct = (self.predict(X) == y).astype(np.float64)
        return float(np.average(correct, weights=sample_weight))


class RegressorMixin:
    """Predictions and R^2 of a regressor in one mlserve.Model."""

    _estimator_type = "regressor"

    def predict(self, X):
        """Predict targets for one row (1-D) or a batch (2-D), in C.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        if type(X) is not _ndarray:
            X = _by_name(self, X)
        return self._fitted_model().predict(X)

    def score(self, X, y, sample_weight=None):
        """Coefficient of determination R^2 of the prediction."""
        y = np.asarray(y, dtype=np.float64)
        pred = self.predict(X).reshape(y.shape)
        w = np.ones(y.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
        w = w.reshape(-1, *([1] * (y.ndim - 1)))
        numerator = (w * (y - pred) ** 2).sum(axis=0)
        denominator = (w * (y - np.average(y, axis=0, weights=w.ravel())) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(denominator != 0, 1 - numerator / np.where(denominator, denominator, 1),
                          np.where(numerator == 0, 1.0, 0.0))
        return float(np.mean(r2))


__all__ = ["ClassifierMixin", "RegressorMixin", "feature_mismatch", "in_model_order"]
