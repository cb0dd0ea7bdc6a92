"""scikit-learn compatible estimators whose fit and predict run in C.

Conventions users already know: ``__init__`` only stores hyper-parameters,
learned state ends in ``_``, ``fit`` returns ``self``. After fit (or load, or
convert) every estimator holds one immutable ``mlserve.Model``; predict is a
single C call on it (thread-safe, GIL released), so the Python layer adds
one method call per prediction and nothing proportional to the data.
"""
from __future__ import annotations

import datetime
import inspect
import json
import os
import tempfile
import warnings

import numpy as np

from . import _core
from ._errors import NotFittedError
from ._mixins import (
    ClassifierMixin,
    RegressorMixin,
    _by_name,
    _ndarray,
    feature_mismatch,
)
from ._progress import Reporter, check_progress

FORMAT_VERSION = f"{_core.FORMAT_MAJOR}.{_core.FORMAT_MINOR}"


def _library_version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------- validation


def _as_feature_matrix(
    X, estimator_name: str, keep_float32: bool = False
) -> tuple[np.ndarray, list | None]:
    """Validate training features: 2-D, numeric, finite, at least one row.

    The result is C-contiguous float64, or float32 when ``keep_float32`` and X is float32.
    """
    if hasattr(X, "tocsr") or hasattr(X, "toarray"):
        raise TypeError(
            f"{estimator_name} does not accept sparse input; convert it with X.toarray()"
        )
    feature_names = _training_feature_names(X)
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported: X must hold real numbers")
    if X.dtype.kind not in "fiub":
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"X must hold numbers, got dtype {X.dtype}: {exc}") from None
    if X.ndim != 2:
        raise ValueError(
            f"expected a 2-D array of shape (n_samples, n_features), got {X.ndim}-D; "
            "reshape your data with X.reshape(-1, 1) for a single feature or "
            "X.reshape(1, -1) for a single sample"
        )
    if X.shape[0] < 1:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required."
        )
    if X.shape[1] < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required."
        )
    dtype = np.float32 if keep_float32 and X.dtype == np.float32 else np.float64
    X = np.ascontiguousarray(X, dtype=dtype)
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        kind = "NaN" if np.isnan(X[tuple(bad)]) else "infinity"
        raise ValueError(
            f"input X contains {kind} at row {bad[0]}, column {bad[1]}; "
            f"{estimator_name} does not accept NaN or infinity"
        )
    return X, feature_names


def _training_feature_names(X) -> list | None:
    """The string column names of a training table (None without, or with non-string ones).

    The rules predict matches them by (mlserve._mixins.in_model_order): a mix
    of string and other names is a TypeError, a repeated name a ValueError.
    """
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = list(columns)
    if not any(isinstance(c, str) for c in names):
        return None
    if not all(isinstance(c, str) for c in names):
        kinds = sorted({type(c).__name__ for c in names})
        raise TypeError(
            f"X's column names must all be strings to be kept as feature names, but they have "
            f"types {kinds}; convert them with X.columns = X.columns.astype(str)"
        )
    message = feature_mismatch(names, names)
    if message is not None:  # only duplicates can differ from themselves
        raise ValueError(message)
    return [str(c) for c in names]


def _require_y(y, estimator_name: str) -> None:
    if y is None:
        raise ValueError(
            f"{estimator_name} requires y to be passed, but the target y is None"
        )


def _as_sample_weight(sample_weight, n_samples: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n_samples, float(w))
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    if not (w > 0).any():
        raise ValueError("sample_weight must not be all zero: at least one weight must be positive")
    return w


def _training_statistics(X: np.ndarray) -> dict:
    """Per-feature statistics stored in the file (for drift checks later)."""
    return {
        "n_samples": int(X.shape[0]),
        "feature_mean": X.mean(axis=0).tolist(),
        "feature_std": X.std(axis=0).tolist(),
        "feature_min": X.min(axis=0).tolist(),
        "feature_max": X.max(axis=0).tolist(),
    }


def _store_reference_statistics(estimator, X: np.ndarray) -> None:
    """Add the drift reference to a fitted estimator's model: the bins of ``X`` and of
    the estimator's predictions on ``X`` (mlserve._reference), in ``metadata["training"]``."""
    from ._reference import reference_statistics

    model = estimator._fitted_model()
    meta = json.loads(model.metadata)
    if meta.get("task") == "classification":
        classes = meta.get("classes")
    elif meta.get("task") == "clustering":
        classes = list(range(int(meta.get("n_clusters", 0))))
    else:
        classes = None
    training = dict(meta.get("training") or _training_statistics(X))
    training.update(reference_statistics(X, estimator.predict(X), classes))
    meta["training"] = training
    estimator._install(_core.create(meta["kind"], model.arrays(), json.dumps(meta)))


def _linear_explain(estimator, X) -> np.ndarray:
    """Exact contributions ``coef * (x - mean)`` of a linear model, the bias last.

    ``mean`` is the training mean of each feature stored in the file (by fit, or
    by ``mlserve.convert(model, reference=X_train)``); the bias is the raw score
    (prediction, or decision function for a classifier) at the mean. Shape
    (n_samples, n_features + 1), or (n_samples, n_outputs, n_features + 1).
    """
    meta = estimator.metadata
    training = meta.get("training") or {}
    mean = training.get("feature_mean")
    name = type(estimator).__name__
    if mean is None:
        raise ValueError(
            f"this {name} has no training feature means, which explain needs; fit it with "
            "mlserve, or convert it with mlserve.convert(model, reference=X_train)"
        )
    if type(X) is not _ndarray:
        X = _by_name(estimator, X)
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"X must hold numbers; {name}.explain got {np.asarray(X).dtype}") from None
    if X.ndim == 1:
        X = X.reshape(1, -1)
    n_features = int(meta["n_features"])
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"X must be one row or a 2-D batch of rows, got shape {X.shape}")
    if X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, but {name} expects {n_features}")
    bad = np.argwhere(~np.isfinite(X))
    if bad.size:
        row, col = (int(i) for i in bad[0])
        raise ValueError(f"X contains NaN or infinity (row {row}, column {col})")
    mean = np.asarray(mean, dtype=np.float64)
    if mean.shape != (n_features,):
        raise ValueError(f"the stored feature means have shape {mean.shape}, expected ({n_features},)")
    arrays = estimator._fitted_model().arrays()
    coef = np.asarray(arrays["coef"], dtype=np.float64)
    intercept = np.asarray(arrays["intercept"], dtype=np.float64)
    coef2 = coef.reshape(-1, n_features)  # (n_outputs, n_features)
    out = np.empty((X.shape[0], coef2.shape[0], n_features + 1))
    with np.errstate(over="ignore", invalid="ignore"):  # huge inputs: inf, as predict gives
        out[:, :, :n_features] = (X - mean)[:, None, :] * coef2[None, :, :]
        out[:, :, n_features] = coef2 @ mean + intercept
    return out[:, 0, :] if coef2.shape[0] == 1 else out


# -------------------------------------------------------------- base classes


class _MLServeEstimator:
    """Parameters, fitted state held in one mlserve.Model, metadata."""

    _kind: str  # C family name

    # -- scikit-learn parameter protocol
    @classmethod
    def _get_param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(
            p.name
            for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        )

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}; "
                    f"valid parameters are {valid}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        from ._display import params_repr

        return params_repr(self)

    def __sklearn_tags__(self):
        # Only called by scikit-learn, so importing it here costs nothing otherwise.
        from sklearn.utils import (
            ClassifierTags,
            InputTags,
            RegressorTags,
            Tags,
            TargetTags,
        )

        is_classifier = self._estimator_type == "classifier"
        return Tags(
            estimator_type=self._estimator_type,
            target_tags=TargetTags(required=True, multi_output=not is_classifier),
            input_tags=InputTags(),
            classifier_tags=ClassifierTags(multi_class=True) if is_classifier else None,
            regressor_tags=None if is_classifier else RegressorTags(),
        )

    # -- fitted state
    def _fitted_model(self) -> _core.Model:
        try:
            return self._model_
        except AttributeError:
            raise NotFittedError(
                f"this {type(self).__name__} instance is not fitted yet; call fit, "
                "or get a fitted model from mlserve.load or mlserve.convert"
            ) from None

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_model_")

    @property
    def model_(self) -> _core.Model:
        """The compiled model (mlserve.Model): immutable, thread-safe."""
        return self._fitted_model()

    @property
    def metadata(self) -> dict:
        """The metadata saved with the model (kind, shapes, classes, versions, ...)."""
        return json.loads(self._fitted_model().metadata)

    def _set_features(self, X: np.ndarray, feature_names: list | None) -> None:
        """n_features_in_ and feature_names_in_ of the training data (fit, before
        _build_metadata reads them)."""
        if feature_names is not None:
            self.feature_names_in_ = np.asarray(feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.n_features_in_ = X.shape[1]

    def _build_metadata(self, n_outputs: int, output_shape: list, extra: dict) -> str:
        meta = {
            "kind": self._kind,
            "estimator": type(self).__name__,
            "task": "classification" if self._estimator_type == "classifier" else "regression",
            "params": {
                k: v
                for k, v in self.get_params().items()
                if _is_json_scalar(v) and k != "progress"  # a display choice, not the model's
            },
            "n_features": int(self.n_features_in_),
            "n_outputs": int(n_outputs),
            "output_shape": output_shape,
            "classes": None,
            "classes_dtype": None,
            "feature_names": (
                list(self.feature_names_in_) if hasattr(self, "feature_names_in_") else None
            ),
            "dtype": "float64",
            "mlserve_version": _library_version(),
            "format_version": FORMAT_VERSION,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        meta.update(extra)
        return json.dumps(meta)

    def _install(self, model: _core.Model) -> None:
        """Expose the model's arrays as the fitted attributes (no copies)."""
        model._set_display_name(type(self).__name__)
        self._model_ = model
        meta = json.loads(model.metadata)
        arrays = model.arrays()
        self.n_features_in_ = int(meta["n_features"])
        if meta.get("feature_names"):
            self.feature_names_in_ = np.asarray(meta["feature_names"], dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._install_arrays(arrays, meta)

    def _install_arrays(self, arrays: dict, meta: dict) -> None:
        raise NotImplementedError

    def _forget_fit(self) -> None:
        """Drop every learned attribute (an interrupted fit leaves the estimator unfitted,
        never half-fitted, even when it was fitted before)."""
        for name in [k for k in self.__dict__ if k.endswith("_") and not k.startswith("__")]:
            del self.__dict__[name]

    def _repr_html_(self) -> str:
        from ._display import estimator_html

        return estimator_html(self)

    # -- pickle: parameters plus the model as .mls bytes (no code in the payload
    # beyond the estimator class itself, and the bytes are validated on load)
    def __getstate__(self):
        state = {name: getattr(self, name) for name in self._get_param_names()}
        model = getattr(self, "_model_", None)
        if model is not None:
            with tempfile.TemporaryDirectory(prefix="mlserve-pickle-") as tmp:
                path = os.path.join(tmp, "model.mls")
                model.save(path, model.metadata)
                with open(path, "rb") as f:
                    state["_model_mls_"] = f.read()
        return state

    def __setstate__(self, state):
        state = dict(state)
        data = state.pop("_model_mls_", None)
        self.__dict__.update(state)
        if data is not None:
            self._install(_core.loads(data))


def _is_json_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


# ------------------------------------------------------------------ regressors


class _LinearRegressorBase(RegressorMixin, _MLServeEstimator):
    _kind = "linear_regressor"

    def _penalty(self) -> float:
        return 0.0

    def fit(self, X, y, sample_weight=None):
        """Fit in C.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        name = type(self).__name__
        alpha = self._penalty()
        _require_y(y, name)
        X, feature_names = _as_feature_matrix(X, name)
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"y must hold numbers, got dtype {y.dtype}") from None
        if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
            raise ValueError(
                f"y must have shape ({X.shape[0]},) or ({X.shape[0]}, n_targets), got {y.shape}"
            )
        y_was_1d = y.ndim == 1
        Y = np.ascontiguousarray(y.reshape(X.shape[0], -1), dtype=np.float64)
        if not np.isfinite(Y).all():
            raise ValueError(f"y contains NaN or infinity; {name} needs finite targets")
        w = _as_sample_weight(sample_weight, X.shape[0])
        coef, intercept = _core.fit_least_squares(X, Y, w, alpha, bool(self.fit_intercept))
        if y_was_1d:
            coef = coef[0]
        self._set_features(X, feature_names)
        n_outputs = Y.shape[1]
        metadata = self._build_metadata(
            n_outputs, [] if y_was_1d else [n_outputs], {"training": _training_statistics(X)}
        )
        model = _core.create(self._kind, {"coef": coef, "intercept": intercept}, metadata)
        self._install(model)
        _store_reference_statistics(self, X)
        return self

    def explain(self, X):
        """Exact contributions ``coef_ * (x - mean)`` of each feature, the bias last.

        ``mean`` is the training mean stored in the file (mlserve's fit stores it;
        ``mlserve.convert(model, reference=X_train)`` for converted models); the
        bias is the prediction at the mean, so a row sums to its prediction.
        Shape (n_samples, n_features + 1), or (n_samples, n_targets, n_features + 1).
        """
        return _linear_explain(self, X)

    def _install_arrays(self, arrays: dict, meta: dict) -> None:
        self.coef_ = arrays["coef"]
        intercept = arrays["intercept"]
        self.intercept_ = float(intercept[0]) if self.coef_.ndim == 1 else intercept


class LinearRegression(_LinearRegressorBase):
    """Ordinary least squares, fitted and evaluated in C.

    Parameters
    ----------
    fit_intercept : bool, default=True
        Whether to fit an intercept (the data is centred first).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
    intercept_ : float or ndarray of shape (n_targets,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str, when fit on a DataFrame with string columns

    Notes
    -----
    The minimum-norm least-squares solution (LAPACK gelsd), as scikit-learn
    computes it, so collinear columns are fine. predict rejects NaN and
    infinity with a ValueError naming the row and column.
    """

    def __init__(self, fit_intercept=True):
        self.fit_intercept = fit_intercept


class Ridge(_LinearRegressorBase):
    """Least squares with an L2 penalty ``alpha * ||coef||^2``, fitted in C.

    Parameters
    ----------
    alpha : float, default=1.0
        Regularisation strength; must be >= 0. The intercept is not penalised.
    fit_intercept : bool, default=True

    Attributes
    ----------
    coef_, intercept_, n_features_in_ : as in LinearRegression
    """

    def __init__(self, alpha=1.0, fit_intercept=True):
        self.alpha = alpha
        self.fit_intercept = fit_intercept

    def _penalty(self) -> float:
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)):
            raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
        return float(alpha)


# ----------------------------------------------------------------- classifier


class LogisticRegression(ClassifierMixin, _MLServeEstimator):
    """L2-regularised logistic regression (binary and multinomial), in C.

    Minimises ``C * sum_i w_i * log_loss_i + 0.5 * ||coef||^2`` with L-BFGS,
    the same objective as scikit-learn's ``LogisticRegression(solver="lbfgs")``.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength; must be > 0.
    fit_intercept : bool, default=True
    max_iter : int, default=100
        L-BFGS iterations; a ConvergenceWarning is emitted when they run out.
    tol : float, default=1e-4
        Stop when the largest gradient component (of the loss averaged over
        samples) falls below tol.
    progress : None, True or False, default=None
        A ``tqdm.auto`` progress bar over the L-BFGS iterations: True always,
        False never, None only when the fit runs longer than a second in a
        notebook or a terminal. Ctrl-C stops the fit within a fraction of a
        second whatever the choice (KeyboardInterrupt; the estimator is left
        unfitted).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Labels in sorted order; any type numpy can sort (ints, floats, str).
    coef_ : ndarray of shape (1, n_features) for 2 classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_iter_ : ndarray of shape (1,)
    n_features_in_ : int
    """

    _kind = "logistic_regression"

    def __init__(self, C=1.0, fit_intercept=True, max_iter=100, tol=1e-4, progress=None):
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.progress = progress

    def _check_params(self):
        C, max_iter, tol = self.C, self.max_iter, self.tol
        if isinstance(C, bool) or not isinstance(C, (int, float, np.number)) or not C > 0:
            raise ValueError(f"C must be a positive number, got {C!r}")
        if not np.isfinite(C):
            raise ValueError(f"C must be a positive number, got {C!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        if isinstance(tol, bool) or not isinstance(tol, (int, float, np.number)) or not tol >= 0:
            raise ValueError(f"tol must be a non-negative number, got {tol!r}")
        check_progress(self.progress)

    def fit(self, X, y, sample_weight=None):
        """Fit in C.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), any sortable labels
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        self._check_params()
        name = type(self).__name__
        _require_y(y, name)
        X, feature_names = _as_feature_matrix(X, name)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            from ._errors import DataConversionWarning

            warnings.warn(
                "A column-vector y was passed when a 1d array was expected. Please change "
                "the shape of y to (n_samples,), for example using ravel().",
                DataConversionWarning,
                stacklevel=2,
            )
            y = y.ravel()
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have shape ({X.shape[0]},), got {y.shape}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity")
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise ValueError(
                "Unknown label type: continuous values in y; LogisticRegression needs "
                "class labels"
            )
        classes, y_index = np.unique(y, return_inverse=True)
        if classes.shape[0] < 2:
            raise ValueError(
                f"this solver needs samples of at least 2 classes in the data, but the "
                f"data contains only one class: {classes[0]!r}"
            )
        w = _as_sample_weight(sample_weight, X.shape[0])
        reporter = Reporter(self.progress, int(self.max_iter), name)
        n_iter = None
        try:
            coef, intercept, n_iter = _core.fit_logistic(
                X,
                y_index.astype(np.int64),
                int(classes.shape[0]),
                w,
                float(self.C),
                bool(self.fit_intercept),
                int(self.max_iter),
                float(self.tol),
                reporter.update if self.progress is not False else None,
            )
        except KeyboardInterrupt:
            self._forget_fit()
            raise
        finally:
            reporter.close(n_iter)
        if n_iter >= self.max_iter:
            from ._errors import ConvergenceWarning

            warnings.warn(
                f"lbfgs failed to converge after {n_iter} iterations; increase max_iter "
                "or scale the data",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._set_features(X, feature_names)
        arrays = {"coef": coef, "intercept": intercept}
        if classes.dtype in (np.int64, np.float64):
            arrays["classes"] = classes  # predict returns these labels straight from C
        metadata = self._build_metadata(
            1,
            [],
            {
                "classes": classes.tolist(),
                "classes_dtype": classes.dtype.str,
                "n_iter": int(n_iter),
                "training": _training_statistics(X),
            },
        )
        self._install(_core.create(self._kind, arrays, metadata))
        _store_reference_statistics(self, X)
        return self

    def _install_arrays(self, arrays: dict, meta: dict) -> None:
        self.coef_ = arrays["coef"]
        self.intercept_ = arrays["intercept"]
        self._install_classes(arrays, meta)
        self.n_iter_ = np.asarray([meta.get("n_iter", 0)], dtype=np.int32)

    def explain(self, X):
        """Exact contributions ``coef_ * (x - mean)`` to the decision function, the bias last.

        As LinearRegression.explain, on the decision function (the log-odds for 2
        classes: shape (n_samples, n_features + 1); else one row per class:
        (n_samples, n_classes, n_features + 1)).
        """
        return _linear_explain(self, X)

    def decision_function(self, X):
        """Scores ``X @ coef_.T + intercept_``: shape (n_samples,) for 2 classes."""
        if type(X) is not _ndarray:
            X = _by_name(self, X)
        return self._fitted_model().decision_function(X)


ESTIMATORS = {cls.__name__: cls for cls in (LinearRegression, Ridge, LogisticRegression)}


def from_core_model(model: _core.Model) -> _MLServeEstimator:
    """Wrap a loaded/converted mlserve.Model in its estimator class."""
    meta = json.loads(model.metadata)
    cls = ESTIMATORS.get(meta.get("estimator"))
    if cls is None:
        from ._core import ModelFormatError

        raise ModelFormatError(
            f"the file holds a {meta.get('estimator')!r} estimator, which this version of "
            f"mlserve ({_library_version()}) does not know"
        )
    if hasattr(cls, "_from_core_model"):  # built from its arrays, not from parameters
        return cls._from_core_model(model)
    names = cls._get_param_names()
    params = {k: v for k, v in (meta.get("params") or {}).items() if k in names}
    estimator = cls(**params)
    estimator._install(model)
    return estimator
