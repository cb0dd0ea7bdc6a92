"""Converters for scikit-learn estimators (scikit-learn itself is not imported)."""
from __future__ import annotations

import json

import numpy as np

from .. import _core
from .._errors import ConvertError
from .._estimators import LinearRegression, LogisticRegression, Ridge
from ._common import qualified_name, require_fitted, source_info


def _base_metadata(target, est, n_outputs, output_shape, dtype, extra):
    meta = json.loads(target._build_metadata(n_outputs, output_shape, extra))
    meta["dtype"] = dtype.name
    meta["source"] = source_info("scikit-learn", "sklearn", qualified_name(type(est)))
    return json.dumps(meta)


def _copy_params(target, est):
    names = target._get_param_names()
    target.set_params(**{k: v for k, v in est.get_params().items() if k in names})


def _feature_names(target, est):
    names = getattr(est, "feature_names_in_", None)
    if names is not None:
        target.feature_names_in_ = np.asarray(names, dtype=object)


def convert_linear_regressor(est, dtype, target_cls):
    require_fitted(est, "coef_", "intercept_")
    target = target_cls()
    _copy_params(target, est)
    coef = np.ascontiguousarray(est.coef_, dtype=dtype)
    if coef.ndim not in (1, 2):
        raise ConvertError(f"{type(est).__name__}.coef_ has unexpected shape {coef.shape}")
    intercept = np.atleast_1d(np.asarray(est.intercept_, dtype=dtype))
    n_outputs = 1 if coef.ndim == 1 else coef.shape[0]
    if intercept.shape == (1,) and n_outputs > 1:
        intercept = np.repeat(intercept, n_outputs)  # fit_intercept=False gives 0.0
    if intercept.shape != (n_outputs,):
        raise ConvertError(
            f"{type(est).__name__}.intercept_ has shape {intercept.shape}, expected ({n_outputs},)"
        )
    target.n_features_in_ = coef.shape[-1]
    _feature_names(target, est)
    metadata = _base_metadata(target, est, n_outputs, [] if coef.ndim == 1 else [n_outputs], dtype, {})
    target._install(_core.create(target._kind, {"coef": coef, "intercept": intercept}, metadata))
    return target


def convert_logistic(est, dtype):
    require_fitted(est, "coef_", "intercept_", "classes_")
    classes = np.asarray(est.classes_)
    n_classes = classes.shape[0]
    multi_class = getattr(est, "multi_class", "auto")
    solver = getattr(est, "solver", "lbfgs")
    if n_classes > 2 and (multi_class == "ovr" or solver == "liblinear"):
        raise ConvertError(
            "mlserve.convert supports multinomial LogisticRegression; this one is "
            f"one-vs-rest (multi_class={multi_class!r}, solver={solver!r}), whose "
            "probabilities are normalised differently"
        )
    target = LogisticRegression()
    _copy_params(target, est)
    coef = np.ascontiguousarray(est.coef_, dtype=dtype)
    intercept = np.ascontiguousarray(np.broadcast_to(est.intercept_, (coef.shape[0],)), dtype=dtype)
    target.n_features_in_ = coef.shape[1]
    _feature_names(target, est)
    arrays = {"coef": coef, "intercept": intercept}
    if classes.dtype in (np.int64, np.float64):
        arrays["classes"] = classes
    n_iter = getattr(est, "n_iter_", [0])
    metadata = _base_metadata(
        target,
        est,
        1,
        [],
        dtype,
        {
            "classes": classes.tolist(),
            "classes_dtype": classes.dtype.str,
            "n_iter": int(np.max(n_iter)),
        },
    )
    target._install(_core.create(target._kind, arrays, metadata))
    return target


CONVERTERS = {
    "sklearn.linear_model._base.LinearRegression": (
        lambda est, dtype: convert_linear_regressor(est, dtype, LinearRegression)
    ),
    "sklearn.linear_model._ridge.Ridge": (
        lambda est, dtype: convert_linear_regressor(est, dtype, Ridge)
    ),
    "sklearn.linear_model._logistic.LogisticRegression": convert_logistic,
}
