"""Converter for LightGBM models (Booster, LGBMModel and its subclasses, or a
model text file), read from ``Booster.dump_model()``.

LightGBM compares float64 features with ``x <= threshold`` (float64), and
handles missing values per split (missing_type):

- "NaN": NaN goes to the default side;
- "Zero": NaN and |x| <= 1e-35 go to the default side;
- "None": NaN is read as 0.0, so it goes where 0.0 goes.

Categorical splits send the listed categories left; NaN, negative values and
unlisted categories go right. Leaf values are summed in float64 in tree
order, as LightGBM does, so outputs match to rounding (about 1e-15).
"""
from __future__ import annotations

import os

import numpy as np

from .._errors import ConvertError
from .._trees import (
    FLAG_CATEGORICAL,
    FLAG_DEFAULT_LEFT,
    FLAG_ZERO_MISSING,
    TreeBuilder,
    build_model,
)
from ._common import booster_classes, booster_source

# objective name -> (task, link)
_OBJECTIVES = {
    "regression": ("regression", "identity"),
    "regression_l2": ("regression", "identity"),
    "regression_l1": ("regression", "identity"),
    "huber": ("regression", "identity"),
    "fair": ("regression", "identity"),
    "quantile": ("regression", "identity"),
    "mape": ("regression", "identity"),
    "poisson": ("regression", "exp"),
    "gamma": ("regression", "exp"),
    "tweedie": ("regression", "exp"),
    "cross_entropy": ("regression", "logistic"),
    "binary": ("classification", "logistic"),
    "multiclass": ("classification", "softmax"),
}


def _parse_objective(text: str):
    parts = (text or "").split()
    if not parts:
        raise ConvertError("the LightGBM model has no objective (a custom objective?)")
    name, params = parts[0], {}
    for p in parts[1:]:
        key, _, value = p.partition(":")
        params[key] = value
    if name not in _OBJECTIVES:
        raise ConvertError(
            f"mlserve.convert does not support the LightGBM objective {name!r}; supported: "
            + ", ".join(sorted(_OBJECTIVES))
        )
    if "sqrt" in parts[1:]:
        raise ConvertError(f"mlserve.convert does not support LightGBM {name!r} with reg_sqrt")
    if name == "binary" and float(params.get("sigmoid", "1")) != 1.0:
        raise ConvertError(
            f"mlserve.convert supports LightGBM binary with sigmoid:1; this one has "
            f"sigmoid:{params['sigmoid']}"
        )
    return name, _OBJECTIVES[name]


def _add_tree(builder: TreeBuilder, structure: dict, output: int):
    """Flatten one dump_model tree (nested dicts) into source-numbered arrays."""
    left, right, leaf, feature, threshold, flags, values = [], [], [], [], [], [], []
    cover = []
    stack = [(structure, -1, 0)]
    while stack:  # iterative: deep trees do not hit Python's recursion limit
        node, parent, side = stack.pop()
        i = len(leaf)
        if parent >= 0:
            (left if side == 0 else right)[parent] = i
        left.append(-1)
        right.append(-1)
        cover.append(float(node.get("internal_count", node.get("leaf_count", 0))))
        if "split_feature" not in node:
            if "leaf_coeff" in node or "leaf_const" in node:
                raise ConvertError("mlserve.convert does not support LightGBM linear trees")
            leaf.append(True)
            feature.append(0)
            threshold.append(0.0)
            flags.append(0)
            values.append(float(node["leaf_value"]))
            continue
        leaf.append(False)
        values.append(0.0)
        feature.append(int(node["split_feature"]))
        missing = node.get("missing_type", "None")
        default_left = bool(node.get("default_left", False))
        if node["decision_type"] == "==":
            cats = [int(c) for c in str(node["threshold"]).split("||") if c != ""]
            threshold.append(float(builder.add_category_set(cats)))
            flags.append(FLAG_CATEGORICAL)  # NaN, negative, unlisted: right
        elif node["decision_type"] == "<=":
            thr = float(node["threshold"])
            threshold.append(thr)
            if missing == "NaN":
                flags.append(FLAG_DEFAULT_LEFT if default_left else 0)
            elif missing == "Zero":
                flags.append(FLAG_ZERO_MISSING | (FLAG_DEFAULT_LEFT if default_left else 0))
            else:  # None: NaN is read as 0.0
                flags.append(FLAG_DEFAULT_LEFT if 0.0 <= thr else 0)
        else:
            raise ConvertError(
                f"unknown LightGBM decision_type {node['decision_type']!r}"
            )
        stack.append((node["right_child"], i, 1))
        stack.append((node["left_child"], i, 0))
    builder.add_tree(left, right, leaf, feature, threshold, flags, values, output=output,
                     cover=cover)


def convert_booster(booster, dtype, *, estimator=None, classes=None, num_iteration=None,
                    progress=None):
    """Convert a lightgbm.Booster (estimator: the LGBMModel it came from)."""
    params = getattr(booster, "params", {}) or {}
    if params.get("linear_tree") in (True, "true", 1, "1"):
        raise ConvertError("mlserve.convert does not support LightGBM linear trees")
    dump = booster.dump_model(num_iteration=num_iteration)
    name, (task, link) = _parse_objective(dump.get("objective", ""))
    K = int(dump.get("num_tree_per_iteration", 1))
    n_class = int(dump.get("num_class", 1))
    n_features = int(dump["max_feature_idx"]) + 1
    builder = TreeBuilder(np.float64, progress, len(dump["tree_info"]))
    for i, info in enumerate(dump["tree_info"]):
        if info.get("is_linear"):
            raise ConvertError("mlserve.convert does not support LightGBM linear trees")
        _add_tree(builder, info["tree_structure"], output=i % K)
    if builder.n_trees == 0:
        raise ConvertError("the LightGBM model has no trees")
    source = booster_source(
        "lightgbm", "lightgbm.basic.Booster", estimator, objective=dump.get("objective")
    )
    if estimator is not None:
        # LGBMModel sets feature_names_in_ only when fitted on a DataFrame
        names = getattr(estimator, "feature_names_in_", None)
    else:
        names = dump.get("feature_names")
        if names and all(n == f"Column_{j}" for j, n in enumerate(names)):
            # A Booster trained on NumPy is given the names Column_0, Column_1, ...
            # They are LightGBM's placeholders, not the user's (LGBMModel does not
            # report them as feature_names_in_ either), so the model stays positional,
            # as LightGBM predicts: matching a DataFrame by them would refuse every frame.
            names = None
    return build_model(
        builder,
        n_features=n_features,
        n_outputs=K,
        classes=booster_classes(task, classes, n_class),
        aggregate="mean" if dump.get("average_output") else "sum",
        link=link,
        compare="<=",
        base_score=0.0,
        dtype=dtype,
        source=source,
        feature_names=names,
    )


def convert_lgbm_model(est, dtype, progress=None):
    """LGBMRegressor, LGBMClassifier, ... (the trees predict uses)."""
    booster = est.booster_
    best = getattr(est, "best_iteration_", None)
    classes = getattr(est, "classes_", None)
    return convert_booster(booster, dtype, estimator=est, classes=classes,
                           num_iteration=best if best and best > 0 else None,
                           progress=progress)


def convert_file(path, dtype=np.float64):
    """Convert a LightGBM model text file (as Booster.save_model wrote it)."""
    import lightgbm

    return convert_booster(lightgbm.Booster(model_file=os.fspath(path)), np.dtype(dtype))


CONVERTERS = {
    "lightgbm.basic.Booster": lambda booster, dtype, progress=None: convert_booster(
        booster, dtype, progress=progress
    ),
    "lightgbm.sklearn.LGBMModel": convert_lgbm_model,
}
