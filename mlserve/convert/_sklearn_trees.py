"""Converters for scikit-learn's trees, forests and gradient boosting.

Exactness notes (checked by tests/test_trees_sklearn.py):

- DecisionTree*, forests and GradientBoosting* cast X to float32 and send a
  row left when ``x <= threshold`` (a float64 threshold). For a float32 x
  that is the same as ``x <= t32`` with t32 the largest float32 not above
  the threshold, so these models store float32 thresholds (rounded down)
  and compare in float32, exactly as scikit-learn decides.
- HistGradientBoosting* keep X in float64: float64 thresholds, ``<=``, NaN
  to the learned side, categorical splits as 256-bit sets.
- Sums follow scikit-learn's order (baseline first, then trees in order;
  forests average per-tree probabilities).
"""
from __future__ import annotations

import numpy as np

from .._errors import ConvertError
from .._trees import (
    FLAG_CAT_STRICT,
    FLAG_CAT_OOR_LEFT,
    FLAG_CATEGORICAL,
    FLAG_DEFAULT_LEFT,
    TreeBuilder,
    build_model,
)
from ._common import qualified_name, require_fitted, source_info


def _build_model(est, builder, dtype, *, n_outputs, classes, aggregate, link, base_score,
                 **source_extra):
    """build_model for a scikit-learn estimator: ``<=`` splits, its features and names."""
    return build_model(
        builder,
        n_features=int(est.n_features_in_),
        n_outputs=n_outputs,
        classes=classes,
        aggregate=aggregate,
        link=link,
        compare="<=",
        base_score=base_score,
        dtype=dtype,
        source=source_info("scikit-learn", "sklearn", qualified_name(type(est)), **source_extra),
        feature_names=getattr(est, "feature_names_in_", None),
    )


def _float32_down(threshold: np.ndarray) -> np.ndarray:
    """Largest float32 <= each float64 threshold (x32 <= t64 iff x32 <= result)."""
    t64 = np.asarray(threshold, dtype=np.float64)
    t32 = t64.astype(np.float32)
    above = t32.astype(np.float64) > t64
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _add_sklearn_tree(builder: TreeBuilder, tree, values: np.ndarray, output: int = 0):
    """One sklearn Tree (tree_) with leaf values (n_nodes, width)."""
    missing_left = getattr(tree, "missing_go_to_left", None)
    flags = (
        np.zeros(tree.node_count, dtype=np.uint8)
        if missing_left is None
        else np.where(np.asarray(missing_left) != 0, FLAG_DEFAULT_LEFT, 0).astype(np.uint8)
    )
    left = tree.children_left
    builder.add_tree(left, tree.children_right, left == -1, tree.feature,
                     _float32_down(tree.threshold), flags, values, output,
                     cover=tree.weighted_n_node_samples)


def _classifier_values(tree) -> np.ndarray:
    """Per-node class probabilities, normalised as tree.predict_proba does."""
    value = np.asarray(tree.value)[:, 0, :].astype(np.float64)
    normalizer = value.sum(axis=1)[:, None]
    normalizer[normalizer == 0.0] = 1.0
    return value / normalizer


def _check_single_output_classifier(est):
    if getattr(est, "n_outputs_", 1) != 1 or isinstance(est.classes_, list):
        raise ConvertError(
            f"mlserve.convert supports single-output {type(est).__name__}; this one predicts "
            f"{est.n_outputs_} outputs"
        )


def convert_decision_tree(est, dtype, *, trees=None):
    require_fitted(est, "tree_")
    return _convert_forest(est, dtype, [est])


def convert_forest(est, dtype, progress=None):
    require_fitted(est, "estimators_")
    return _convert_forest(est, dtype, list(est.estimators_), progress)


def _convert_forest(est, dtype, members, progress=None):
    is_classifier = hasattr(est, "classes_")
    builder = TreeBuilder(np.float32, progress, len(members))
    if is_classifier:
        _check_single_output_classifier(est)
        classes = np.asarray(est.classes_)
        for member in members:
            _add_sklearn_tree(builder, member.tree_, _classifier_values(member.tree_))
        n_outputs = classes.shape[0]
    else:
        classes = None
        n_outputs = int(est.n_outputs_)
        for member in members:
            _add_sklearn_tree(builder, member.tree_, np.asarray(member.tree_.value)[:, :, 0])
    return _build_model(est, builder, dtype, n_outputs=n_outputs, classes=classes,
                        aggregate="mean", link="identity", base_score=0.0)


def convert_gradient_boosting(est, dtype, progress=None):
    require_fitted(est, "estimators_", "init_")
    is_classifier = hasattr(est, "classes_")
    loss = getattr(est, "loss", None)
    n_features = int(est.n_features_in_)
    init = est.init_
    if not (init == "zero" or type(init).__name__ in ("DummyRegressor", "DummyClassifier")):
        raise ConvertError(
            f"mlserve.convert supports {type(est).__name__} with the default init (or "
            f"init='zero'); this one uses init={type(init).__name__}, whose prediction "
            "depends on X"
        )
    # The baseline is constant for these inits: ask scikit-learn for it.
    baseline = np.asarray(
        est._raw_predict_init(np.zeros((1, n_features), dtype=np.float32)), dtype=np.float64
    )[0]
    stages = est.estimators_
    K = stages.shape[1]
    lr = float(est.learning_rate)
    builder = TreeBuilder(np.float32, progress, stages.size)
    for i in range(stages.shape[0]):
        for k in range(K):
            tree = stages[i, k].tree_
            _add_sklearn_tree(builder, tree, lr * np.asarray(tree.value)[:, 0, 0], output=k)
    if is_classifier:
        if loss not in ("log_loss", "deviance"):
            raise ConvertError(
                f"mlserve.convert supports GradientBoostingClassifier with loss='log_loss'; "
                f"this one uses loss={loss!r}"
            )
        classes = np.asarray(est.classes_)
        link = "logistic" if K == 1 else "softmax"
    else:
        classes = None
        link = "identity"
    return _build_model(est, builder, dtype, n_outputs=K, classes=classes, aggregate="sum",
                        link=link, base_score=baseline, loss=loss)


_HGB_LINKS = {
    "HalfSquaredError": "identity",
    "AbsoluteError": "identity",
    "PinballLoss": "identity",
    "HuberLoss": "identity",
    "HalfPoissonLoss": "exp",
    "HalfGammaLoss": "exp",
    "HalfTweedieLoss": "exp",
    "HalfTweedieLossIdentity": "identity",
    "HalfBinomialLoss": "logistic",
    "HalfMultinomialLoss": "softmax",
}


def _hgb_raw_categories(est):
    """Per transformed column: the raw category values (or None), and the
    original column of each transformed column.

    scikit-learn >= 1.6 ordinal-encodes categorical columns and moves them
    first; the trees see codes 0..n-1. The model instead tests the raw values
    (which must be integers in [0, 65536)): a raw value that is not a known
    category is missing to scikit-learn, and takes the missing side here too.
    """
    n_features = int(est.n_features_in_)
    pre = getattr(est, "_preprocessor", None)
    if pre is None:
        return [None] * n_features, np.arange(n_features)
    is_cat = np.asarray(est.is_categorical_, dtype=bool)
    perm = np.concatenate([np.flatnonzero(is_cat), np.flatnonzero(~is_cat)])
    encoder = pre.named_transformers_["encoder"]
    raw = [None] * n_features
    for k, categories in enumerate(encoder.categories_):
        cats = np.asarray(categories)
        if cats.size and cats.dtype.kind == "f" and np.isnan(cats[-1]):
            cats = cats[:-1]
        try:
            values = cats.astype(np.float64)
        except (TypeError, ValueError):
            raise ConvertError(
                f"mlserve.convert supports {type(est).__name__} categorical features whose "
                f"categories are integers; column {perm[k]} has categories {cats[:5].tolist()}..."
            ) from None
        if values.size and (
            np.any(values < 0) or np.any(values != np.floor(values)) or values.max() >= 65536
        ):
            raise ConvertError(
                f"mlserve.convert supports {type(est).__name__} categorical features whose "
                f"categories are integers in [0, 65536); column {perm[k]} has "
                f"{values[:5].tolist()}..."
            )
        raw[k] = values.astype(np.int64)
    return raw, perm


def _raw_category_words(code_bits, raw_values, missing_left):
    """Bitset over raw values from a bitset over codes (uint32 words)."""
    codes = np.arange(raw_values.size)
    left = ((code_bits[codes // 32] >> (codes % 32).astype(np.uint32)) & 1).astype(bool)
    n_bits = int(raw_values.max()) + 1 if raw_values.size else 1
    bits = np.zeros(-(-n_bits // 8) * 8, dtype=bool)  # whole bytes: padding is unknown too
    if missing_left:  # unknown raw values are missing: left
        bits[:] = True
        bits[raw_values] = False
    bits[raw_values[left]] = True
    return np.packbits(bits, bitorder="little")


def convert_hist_gradient_boosting(est, dtype, progress=None):
    require_fitted(est, "_predictors", "_baseline_prediction")
    loss_name = type(est._loss).__name__
    link = _HGB_LINKS.get(loss_name)
    if link is None:
        raise ConvertError(f"mlserve.convert does not support {type(est).__name__} with loss {loss_name}")
    if loss_name == "HalfTweedieLoss" and getattr(est._loss, "link", None) is not None:
        if type(est._loss.link).__name__ == "IdentityLink":
            link = "identity"
    is_classifier = hasattr(est, "classes_")
    baseline = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
    K = baseline.shape[0]
    raw_categories, perm = _hgb_raw_categories(est)
    known_bitsets = f_idx_map = None
    if getattr(est, "is_categorical_", None) is not None and np.any(est.is_categorical_):
        known_bitsets, f_idx_map = est._bin_mapper.make_known_categories_bitsets()
    builder = TreeBuilder(np.float64, progress, sum(len(i) for i in est._predictors))
    for iteration in est._predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            is_leaf = nodes["is_leaf"].astype(bool)
            missing_left = nodes["missing_go_to_left"].astype(bool)
            flags = np.where(missing_left, FLAG_DEFAULT_LEFT, 0).astype(np.int64)
            threshold = nodes["num_threshold"].astype(np.float64).copy()
            is_cat = nodes["is_categorical"].astype(bool) & ~is_leaf
            for node in np.flatnonzero(is_cat):
                feature = int(nodes["feature_idx"][node])
                code_bits = np.asarray(
                    predictor.raw_left_cat_bitsets[nodes["bitset_idx"][node]], dtype=np.uint32
                )
                raw_values = raw_categories[feature]
                if raw_values is not None:
                    threshold[node] = builder.add_category_bytes(
                        _raw_category_words(code_bits, raw_values, missing_left[node])
                    )
                else:
                    if missing_left[node]:
                        # unknown categories go the missing way, left here
                        known = np.asarray(known_bitsets[f_idx_map[feature]], dtype=np.uint32)
                        code_bits = code_bits | ~known
                    threshold[node] = builder.add_bitset_words(code_bits)
                flags[node] |= FLAG_CATEGORICAL | FLAG_CAT_STRICT
                if missing_left[node]:
                    flags[node] |= FLAG_CAT_OOR_LEFT
            builder.add_tree(nodes["left"], nodes["right"], is_leaf, perm[nodes["feature_idx"]],
                             threshold, flags, nodes["value"], output=k,
                             cover=nodes["weighted_n_node_samples"]
                             if "weighted_n_node_samples" in nodes.dtype.names
                             else nodes["count"])
    classes = np.asarray(est.classes_) if is_classifier else None
    return _build_model(est, builder, dtype, n_outputs=K, classes=classes, aggregate="sum",
                        link=link, base_score=baseline, loss=loss_name)


_PREFIX = "sklearn.ensemble."
CONVERTERS = {
    "sklearn.tree._classes.DecisionTreeClassifier": convert_decision_tree,
    "sklearn.tree._classes.DecisionTreeRegressor": convert_decision_tree,
    "sklearn.tree._classes.ExtraTreeClassifier": convert_decision_tree,
    "sklearn.tree._classes.ExtraTreeRegressor": convert_decision_tree,
    _PREFIX + "_forest.RandomForestClassifier": convert_forest,
    _PREFIX + "_forest.RandomForestRegressor": convert_forest,
    _PREFIX + "_forest.ExtraTreesClassifier": convert_forest,
    _PREFIX + "_forest.ExtraTreesRegressor": convert_forest,
    _PREFIX + "_gb.GradientBoostingClassifier": convert_gradient_boosting,
    _PREFIX + "_gb.GradientBoostingRegressor": convert_gradient_boosting,
    _PREFIX + "_hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier": (
        convert_hist_gradient_boosting
    ),
    _PREFIX + "_hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor": (
        convert_hist_gradient_boosting
    ),
}
