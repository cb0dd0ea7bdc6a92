"""Tree ensembles converted from scikit-learn, XGBoost and LightGBM.

One estimator class, :class:`TreeEnsembleModel`, holds any converted tree
model (a decision tree, a forest, gradient boosting): predict runs in C on
the flattened node arrays of csrc/mls_tree.c, thread-safe and with the GIL
released. It is made by ``mlserve.convert`` (or ``mlserve.load``); it does
not fit.

The arrays (see csrc/mls_tree.h) are built here by :class:`TreeBuilder`,
which the converters feed one tree at a time in the source's own node
numbering; it renumbers each tree breadth-first so that the two children of
a node are adjacent and come after it.
"""
from __future__ import annotations

import json

import numpy as np

from . import _core
from ._estimators import ESTIMATORS, _MLServeEstimator
from ._mixins import ClassifierMixin, RegressorMixin, _by_name, _ndarray

# config indices and codes (csrc/mls_tree.h)
AGGREGATE = {"sum": 0, "mean": 1}
LINK = {"identity": 0, "logistic": 1, "softmax": 2, "exp": 3}
COMPARE = {"<=": 0, "<": 1}
_DTYPE_CODE = {np.dtype(np.float32): 1, np.dtype(np.float64): 2}

FLAG_DEFAULT_LEFT = 0x01
FLAG_CATEGORICAL = 0x02
FLAG_ZERO_MISSING = 0x04
FLAG_CAT_OOR_LEFT = 0x08
FLAG_CAT_STRICT = 0x10


class TreeEnsembleModel(_MLServeEstimator):
    """A tree ensemble (decision tree, forest or gradient boosting) in C.

    Made by ``mlserve.convert`` from a fitted scikit-learn, XGBoost or
    LightGBM model, or by ``mlserve.load``; predictions equal the source
    library's (see the tests for the tolerances).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (classifiers only).
    n_features_in_ : int
    n_trees_ : int
    n_outputs_ : int
        Raw scores per row (1 for binary boosting and regression).
    source_ : dict
        The library, estimator class, version and objective it came from.
    """

    _kind = "tree_ensemble"

    def __init__(self):
        pass

    @property
    def _estimator_type(self):
        task = getattr(self, "_task_", None)
        return "classifier" if task == "classification" else "regressor"

    def fit(self, X, y=None):
        raise NotImplementedError(
            "TreeEnsembleModel does not fit; train with scikit-learn, XGBoost or LightGBM "
            "and turn the fitted model into one with mlserve.convert"
        )

    def _install_arrays(self, arrays: dict, meta: dict) -> None:
        self._task_ = meta.get("task", "regression")
        self.n_trees_ = int(arrays["tree_offsets"].shape[0] - 1)
        self.n_outputs_ = int(meta["n_outputs"])
        self.source_ = meta.get("source") or {}
        if self._task_ == "classification":
            ClassifierMixin._install_classes(self, arrays, meta)
        elif hasattr(self, "classes_"):
            del self.classes_

    def __repr__(self) -> str:
        if not hasattr(self, "_model_"):
            return "TreeEnsembleModel()"
        src = self.source_.get("estimator", "?")
        return f"TreeEnsembleModel(source={src!r}, n_trees={self.n_trees_})"

    def _require_classifier(self, method: str):
        if self._task_ != "classification":
            raise AttributeError(f"this TreeEnsembleModel is a regressor and has no {method}")

    # A classifier or a regressor by the model it holds: it calls the mixins'
    # methods by name rather than inheriting them (see _mixins).
    def predict(self, X):
        """Class labels (classifiers) or values (regressors) for one row or a batch.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        if self._estimator_type == "classifier":
            return ClassifierMixin.predict(self, X)
        return RegressorMixin.predict(self, X)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes) (classifiers)."""
        model = self._fitted_model()
        self._require_classifier("predict_proba")
        if type(X) is not _ndarray:
            X = _by_name(self, X)
        return model.predict_proba(X)

    predict_log_proba = ClassifierMixin.predict_log_proba

    def decision_function(self, X):
        """Raw scores before the link (margins); shape (n_samples,) for one output."""
        if type(X) is not _ndarray:
            X = _by_name(self, X)
        return self._fitted_model().decision_function(X)

    def explain(self, X):
        """Path-dependent TreeSHAP contributions of each feature to the raw score.

        Returns
        -------
        ndarray of shape (n_samples, n_features + 1), or (n_samples, n_outputs,
        n_features + 1) for several outputs; the last column is the bias (the
        expected value). A row's values sum to decision_function's margin.
        """
        model = self._fitted_model()
        arrays = model.arrays()
        if "node_cover" not in arrays:
            raise ValueError(
                "this tree model has no node cover (training counts), which explain "
                "needs; convert the model again with this version of mlserve"
            )
        if type(X) is not _ndarray:
            X = _by_name(self, X)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[0] < 1:
            raise ValueError(f"X must be one row or a 2-D batch of rows, got shape {X.shape}")
        out = _core.tree_shap(arrays, X, _core.get_num_threads())
        return out[:, 0, :] if out.shape[1] == 1 else out

    def score(self, X, y, sample_weight=None):
        """Accuracy (classifiers) or R^2 (regressors)."""
        if self._estimator_type == "classifier":
            return ClassifierMixin.score(self, X, y, sample_weight)
        return RegressorMixin.score(self, X, y, sample_weight)


def _bfs_order(left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray, root: int = 0):
    """Source node ids in breadth-first order, children of a node adjacent."""
    order = [np.array([root], dtype=np.int64)]
    level = order[0]
    n = left.shape[0]
    while True:
        splits = level[~is_leaf[level]]
        if splits.size == 0:
            break
        children = np.empty(2 * splits.size, dtype=np.int64)
        children[0::2] = left[splits]
        children[1::2] = right[splits]
        if children.min() < 0 or children.max() >= n:
            raise ValueError("a tree has a child index out of range")
        order.append(children)
        level = children
        if sum(o.size for o in order) > n:
            raise ValueError("a tree's children do not form a tree (a node is reached twice)")
    return np.concatenate(order)


class TreeBuilder:
    """Collects trees given in their source's numbering; builds the sections.

    add_tree takes, per source node: left and right child ids, a leaf mask,
    the split feature, the threshold, flags (FLAG_*) and, for leaves, a row
    of values (n_nodes x width). It reads only what each node needs: the
    children, feature, threshold and flags of a leaf and the values of a
    split are ignored, so a converter passes its source's arrays as they are.
    """

    def __init__(self, threshold_dtype=np.float64, progress=None, total=None):
        self.threshold_dtype = np.dtype(threshold_dtype)
        # a progress reporter (mlserve._progress.Reporter) told the trees added so far
        self.progress = progress
        if progress is not None and total is not None:
            progress.set_total(total)
        self._features, self._thresholds, self._children, self._flags = [], [], [], []
        self._leaves, self._outputs, self._sizes = [], [], []
        self._covers: list = []  # per tree: node cover (training counts / hessians) or None
        self._n_leaves = 0
        self._cat_sets: list[np.ndarray] = []

    def add_category_set(self, left_categories) -> int:
        """Register the categories that go left; returns the set's index."""
        cats = np.asarray(left_categories, dtype=np.int64)
        n_bytes = int(cats.max()) // 8 + 1 if cats.size else 1
        bits = np.zeros(n_bytes, dtype=np.uint8)
        for c in cats:
            bits[c // 8] |= np.uint8(1 << (c % 8))
        self._cat_sets.append(bits)
        return len(self._cat_sets) - 1

    def add_category_bytes(self, bits) -> int:
        """Register a bitset as bytes (bit c % 8 of byte c // 8 = category c)."""
        bits = np.asarray(bits, dtype=np.uint8)
        self._cat_sets.append(bits.copy() if bits.size else np.zeros(1, np.uint8))
        return len(self._cat_sets) - 1

    def add_bitset_words(self, words) -> int:
        """Register a little-endian uint32 bitset (bit c of the words = category c)."""
        bits = np.asarray(words, dtype="<u4").view(np.uint8).copy()
        self._cat_sets.append(bits if bits.size else np.zeros(1, np.uint8))
        return len(self._cat_sets) - 1

    def add_tree(self, left, right, is_leaf, feature, threshold, flags, values, output=0,
                 cover=None):
        left = np.asarray(left, dtype=np.int64)
        right = np.asarray(right, dtype=np.int64)
        is_leaf = np.asarray(is_leaf, dtype=bool)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        order = _bfs_order(left, right, is_leaf)
        n = order.size
        new_id = np.full(left.shape[0], -1, dtype=np.int64)
        new_id[order] = np.arange(n)
        leaf = is_leaf[order]
        feat = np.where(leaf, -1, np.asarray(feature, dtype=np.int64)[order]).astype(np.int32)
        thr = np.where(leaf, 0, np.asarray(threshold, dtype=np.float64)[order])
        if self.threshold_dtype == np.float32:
            thr = np.where(leaf, 0, np.asarray(threshold)[order]).astype(np.float32)
        fl = np.where(leaf, 0, np.asarray(flags, dtype=np.int64)[order]).astype(np.uint8)
        child = np.empty(n, dtype=np.int64)
        splits = np.flatnonzero(~leaf)
        child[splits] = new_id[left[order[splits]]]
        if splits.size and np.any(new_id[right[order[splits]]] != child[splits] + 1):
            raise ValueError("internal error: children are not adjacent")
        leaf_pos = np.flatnonzero(leaf)
        child[leaf_pos] = self._n_leaves + np.arange(leaf_pos.size)
        self._n_leaves += leaf_pos.size
        self._leaves.append(values[order[leaf_pos]])
        self._features.append(feat)
        self._thresholds.append(thr)
        self._children.append(child.astype(np.int32))
        self._flags.append(fl)
        self._outputs.append(int(output))
        self._sizes.append(n)
        if self.progress is not None:
            self.progress.update(len(self._sizes))
        self._covers.append(None if cover is None
                            else np.asarray(cover, dtype=np.float64)[order])

    @property
    def n_trees(self) -> int:
        return len(self._sizes)

    def arrays(self, *, n_features, n_outputs, n_classes, aggregate, link, compare,
               base_score, dtype=np.float64, classes=None, engine=0) -> dict:
        if not self._sizes:
            raise ValueError("the model has no trees")
        widths = {v.shape[1] for v in self._leaves}
        if len(widths) != 1:
            raise ValueError("every tree must have leaves of one width")
        config = np.array(
            [n_features, n_outputs, n_classes, AGGREGATE[aggregate], LINK[link],
             COMPARE[compare], _DTYPE_CODE[np.dtype(dtype)], engine],
            dtype=np.int64,
        )
        arrays = {
            "config": config,
            "tree_offsets": np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64),
            "tree_output": np.asarray(self._outputs, dtype=np.int32),
            "node_feature": np.concatenate(self._features),
            "node_threshold": np.concatenate(self._thresholds).astype(self.threshold_dtype),
            "node_child": np.concatenate(self._children),
            "node_flags": np.concatenate(self._flags),
            "leaf_values": np.ascontiguousarray(np.concatenate(self._leaves), dtype=np.float64),
            "base_score": np.ascontiguousarray(
                np.broadcast_to(np.asarray(base_score, dtype=np.float64), (n_outputs,))
            ),
        }
        if self._cat_sets:
            sizes = [s.size for s in self._cat_sets]
            arrays["cat_offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            arrays["cat_bits"] = np.concatenate(self._cat_sets)
        if all(c is not None for c in self._covers):  # optional: TreeSHAP (explain) needs it
            arrays["node_cover"] = np.concatenate(self._covers)
        if classes is not None:
            classes = np.asarray(classes)
            if classes.dtype in (np.int64, np.float64):
                arrays["classes"] = classes
        return arrays


def build_model(builder: TreeBuilder, *, n_features, n_outputs, classes, aggregate, link,
                compare, base_score, dtype, source, feature_names=None, extra=None):
    """Create the C model and wrap it in a TreeEnsembleModel."""
    dtype = np.dtype(dtype)
    n_classes = 0 if classes is None else len(classes)
    arrays = builder.arrays(
        n_features=n_features, n_outputs=n_outputs, n_classes=n_classes,
        aggregate=aggregate, link=link, compare=compare, base_score=base_score,
        dtype=dtype, classes=classes,
    )
    target = TreeEnsembleModel()
    target._task_ = "classification" if classes is not None else "regression"
    target.n_features_in_ = int(n_features)
    if feature_names is not None:
        target.feature_names_in_ = np.asarray(list(feature_names), dtype=object)
    meta_extra = {
        "n_trees": builder.n_trees,
        "aggregate": aggregate,
        "link": link,
        "compare": compare,
        "training": None,
    }
    if classes is not None:
        classes = np.asarray(classes)
        meta_extra["classes"] = classes.tolist()
        meta_extra["classes_dtype"] = classes.dtype.str
    meta_extra.update(extra or {})
    output_shape = [] if (classes is not None or n_outputs == 1) else [int(n_outputs)]
    meta = json.loads(target._build_metadata(n_outputs, output_shape, meta_extra))
    meta["dtype"] = dtype.name
    meta["source"] = source
    target._install(_core.create(target._kind, arrays, json.dumps(meta)))
    return target


ESTIMATORS[TreeEnsembleModel.__name__] = TreeEnsembleModel  # mlserve.load finds it

__all__ = ["TreeEnsembleModel", "TreeBuilder", "build_model"]
