"""Converter for XGBoost models (Booster, XGBModel and its subclasses, or a
saved model file), read from XGBoost's own JSON model.

XGBoost casts features to float32 and sends a row left when
``x < split_condition`` (a float32), NaN to the learned default side; the
model stores the float32 conditions and compares the same way. XGBoost sums
margins in float32, mlserve in float64, so outputs agree to float32
precision (about 1e-6 relative), not bit for bit.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from .._errors import ConvertError
from .._trees import FLAG_DEFAULT_LEFT, TreeBuilder, build_model
from ._common import booster_classes, booster_source

# objective -> (task, link, base_score transform to margin)
_OBJECTIVES = {
    "reg:squarederror": ("regression", "identity", "identity"),
    "reg:squaredlogerror": ("regression", "identity", "identity"),
    "reg:pseudohubererror": ("regression", "identity", "identity"),
    "reg:absoluteerror": ("regression", "identity", "identity"),
    "reg:quantileerror": ("regression", "identity", "identity"),
    "reg:linear": ("regression", "identity", "identity"),
    "reg:logistic": ("regression", "logistic", "logit"),
    "binary:logistic": ("classification", "logistic", "logit"),
    "multi:softprob": ("classification", "softmax", "identity"),
    "multi:softmax": ("classification", "softmax", "identity"),
    "count:poisson": ("regression", "exp", "log"),
    "reg:gamma": ("regression", "exp", "log"),
    "reg:tweedie": ("regression", "exp", "log"),
}


def _floats(text) -> list[float]:
    """XGBoost writes base_score as "0.5" or "[5E-1,...]"."""
    if isinstance(text, (int, float)):
        return [float(text)]
    text = str(text).strip().strip("[]")
    return [float(v) for v in text.split(",") if v.strip()]


def _to_margin(values, how):
    if how == "logit":
        return [-math.log(1.0 / v - 1.0) if 0 < v < 1 else 0.0 for v in values]
    if how == "log":
        return [math.log(v) if v > 0 else 0.0 for v in values]
    return list(values)


def convert_booster(booster, dtype, *, estimator=None, classes=None, n_iterations=None,
                    progress=None):
    """Convert an xgboost.Booster (estimator: the XGBModel it came from)."""
    model = json.loads(booster.save_raw("json"))
    learner = model["learner"]
    gb = learner["gradient_booster"]
    if gb.get("name") != "gbtree":
        raise ConvertError(
            f"mlserve.convert supports XGBoost's gbtree booster; this model uses "
            f"booster={gb.get('name')!r}"
        )
    objective = learner["objective"]["name"]
    if objective not in _OBJECTIVES:
        raise ConvertError(
            f"mlserve.convert does not support the XGBoost objective {objective!r}; "
            f"supported: {', '.join(sorted(_OBJECTIVES))}"
        )
    task, link, base_how = _OBJECTIVES[objective]
    params = learner["learner_model_param"]
    n_features = int(params["num_feature"])
    n_class = int(params.get("num_class", "0") or 0)
    if int(params.get("num_target", "1") or 1) != 1:
        raise ConvertError("mlserve.convert does not support multi-target XGBoost models")
    gbtree = gb["model"]
    trees = gbtree["trees"]
    tree_info = gbtree["tree_info"]
    indptr = gbtree.get("iteration_indptr")
    if n_iterations is not None and indptr is not None:
        trees = trees[: indptr[n_iterations]]
    K = max(n_class, 1)
    if link == "softmax" and K < 2:
        raise ConvertError(f"XGBoost objective {objective!r} needs num_class >= 2")
    base = _to_margin(_floats(params["base_score"]), base_how)
    if len(base) == 1:
        base = base * K
    if len(base) != K:
        raise ConvertError(f"XGBoost base_score has {len(base)} values for {K} outputs")
    builder = TreeBuilder(np.float32, progress, len(trees))
    for i, tree in enumerate(trees):
        tp = tree.get("tree_param", {})
        if int(tp.get("size_leaf_vector", "1") or 1) > 1:
            raise ConvertError("mlserve.convert does not support XGBoost vector-leaf trees")
        if any(tree.get("split_type", [])):
            raise ConvertError(
                "mlserve.convert does not support XGBoost categorical splits "
                "(enable_categorical); one-hot or ordinal-encode the features instead"
            )
        left = np.asarray(tree["left_children"], dtype=np.int64)
        cond = np.asarray(tree["split_conditions"], dtype=np.float32)  # a leaf's: its value
        flags = np.where(np.asarray(tree["default_left"]) != 0, FLAG_DEFAULT_LEFT, 0)
        builder.add_tree(left, tree["right_children"], left == -1, tree["split_indices"], cond,
                         flags, cond, output=int(tree_info[i]) if K > 1 else 0,
                         cover=tree.get("sum_hessian"))
    if builder.n_trees == 0:
        raise ConvertError("the XGBoost model has no trees")
    return build_model(
        builder,
        n_features=n_features,
        n_outputs=K,
        classes=booster_classes(task, classes, n_class),
        aggregate="sum",
        link=link,
        compare="<",
        base_score=np.asarray(base, dtype=np.float64),
        dtype=dtype,
        source=booster_source("xgboost", "xgboost.core.Booster", estimator, objective=objective),
        feature_names=booster.feature_names,
    )


def convert_xgb_model(est, dtype, progress=None):
    """XGBRegressor, XGBClassifier, XGBRFRegressor, ... (predict's trees)."""
    missing = getattr(est, "missing", np.nan)
    if missing is not None and not (isinstance(missing, float) and math.isnan(missing)):
        raise ConvertError(
            f"mlserve.convert supports XGBoost models whose missing value is NaN; this one "
            f"has missing={missing!r}"
        )
    booster = est.get_booster()
    n_iterations = None
    best = getattr(est, "best_iteration", None) if _has_best_iteration(est) else None
    if best is not None:
        n_iterations = int(best) + 1  # what XGBModel.predict uses after early stopping
    classes = getattr(est, "classes_", None)
    return convert_booster(booster, dtype, estimator=est, classes=classes,
                           n_iterations=n_iterations, progress=progress)


def _has_best_iteration(est) -> bool:
    try:
        return est.get_booster().attr("best_iteration") is not None
    except Exception:  # noqa: BLE001 - older xgboost without attributes
        return False


def convert_file(path, dtype=np.float64):
    """Convert an XGBoost model file (.json or .ubj, as Booster.save_model wrote it)."""
    import xgboost

    booster = xgboost.Booster(model_file=os.fspath(path))
    return convert_booster(booster, np.dtype(dtype))


CONVERTERS = {
    "xgboost.core.Booster": lambda booster, dtype, progress=None: convert_booster(
        booster, dtype, progress=progress
    ),
    "xgboost.sklearn.XGBModel": convert_xgb_model,
}
