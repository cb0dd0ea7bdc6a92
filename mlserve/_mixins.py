"""What every classifier and every regressor shares, whatever its family.

A class mixes in one of these before ``_MLServeEstimator``, as in
scikit-learn (``class LogisticRegression(ClassifierMixin, _MLServeEstimator)``).
TreeEnsembleModel is a classifier or a regressor by the model it holds, so it
calls these methods by name instead of inheriting them.
"""
from __future__ import annotations

import numpy as np


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
        if self._labels_from_core_:
            return model.predict(X)
        return self.classes_.take(model.predict(X))

    def predict_proba(self, X):
        """Probability of each class, shape (n_samples, n_classes), in C."""
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


__all__ = ["ClassifierMixin", "RegressorMixin"]
