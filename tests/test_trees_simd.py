"""The SIMD tree walker (csrc/mls_tree_simd.c, AVX2 / AVX-512, chosen at
load time) against the scalar fast walker and the reference walker: the
results must be bit-identical.

config[7] picks the walker (csrc/mls_tree.h): 0 the fast one (SIMD when the
CPU has AVX2), 1 the reference, 2 the fast one without SIMD, 3 the fast one
with at most AVX2 (the AVX2 kernels on an AVX-512 CPU). On a CPU without AVX2
engines 0, 2 and 3 are the same walker and these tests still pass.
"""
from __future__ import annotations

import numpy as np
import pytest

import mlserve
from mlserve import _core
from mlserve._trees import FLAG_DEFAULT_LEFT, TreeBuilder, build_model

SRC = {"library": "test"}


def twin(model, engine):
    """The same model run by another walker (config[7] = engine)."""
    core = model.model_
    arrays = {k: np.array(v) for k, v in core.arrays().items()}
    arrays["config"][7] = engine
    out = mlserve.TreeEnsembleModel()
    out._install(_core.create("tree_ensemble", arrays, core.metadata))
    return out


def random_tree(rng, max_splits):
    """A random binary tree, grown by splitting random leaves (unbalanced)."""
    left, right, leaf = [-1], [-1], [True]
    for _ in range(int(rng.integers(0, max_splits + 1))):
        node = int(rng.choice(np.flatnonzero(leaf)))
        left[node], right[node], leaf[node] = len(leaf), len(leaf) + 1, False
        left += [-1, -1]
        right += [-1, -1]
        leaf += [True, True]
    return left, right, leaf


def random_model(rng, *, thr_dtype, compare, n_features, n_trees, n_outputs, leaf_width):
    b = TreeBuilder(thr_dtype)
    for t in range(n_trees):
        left, right, leaf = random_tree(rng, 40)
        n = len(leaf)
        # thresholds on a coarse grid, so rows hit them exactly (tests < vs <=)
        thr = np.round(rng.normal(size=n), 1)
        b.add_tree(left, right, leaf, rng.integers(0, n_features, n), thr,
                   np.where(rng.random(n) < 0.5, FLAG_DEFAULT_LEFT, 0),
                   rng.normal(size=(n, leaf_width)),
                   output=0 if leaf_width > 1 else t % n_outputs)
    return build_model(b, n_features=n_features, n_outputs=n_outputs, classes=None,
                       aggregate="sum", link="identity", compare=compare,
                       base_score=np.linspace(-0.5, 0.5, n_outputs), dtype=np.float64,
                       source=SRC)


def rows(rng, n, n_features):
    X = np.round(rng.normal(size=(n, n_features)), 1)
    X[rng.random(X.shape) < 0.15] = np.nan
    X[rng.random(X.shape) < 0.02] = np.inf
    X[rng.random(X.shape) < 0.02] = -np.inf
    return X


# 20 features: rows held in registers; 70 / 40: rows gathered (past the
# register kernels' 64 float32 / 32 float64 features)
@pytest.mark.parametrize("thr_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("compare", ["<=", "<"])
@pytest.mark.parametrize("n_features", [3, 20, 40, 70])
@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (3, 3)])  # (outputs, leaf width)
def test_simd_equals_scalar_and_reference(rng, thr_dtype, compare, n_features, shape):
    n_outputs, leaf_width = shape
    model = random_model(rng, thr_dtype=thr_dtype, compare=compare, n_features=n_features,
                         n_trees=45, n_outputs=n_outputs, leaf_width=leaf_width)
    scalar, reference, avx2 = twin(model, 2), twin(model, 1), twin(model, 3)
    # 1..15 rows: rows walk trees; 16 and more: trees walk rows; 600 spans blocks
    for n in (1, 2, 15, 16, 17, 33, 600):
        X = rows(rng, n, n_features)
        got = model.decision_function(X)
        np.testing.assert_array_equal(got, scalar.decision_function(X))
        np.testing.assert_array_equal(got, reference.decision_function(X))
        np.testing.assert_array_equal(avx2.decision_function(X), got)


@pytest.mark.parametrize("thr_dtype", [np.float32, np.float64])
def test_simd_input_forms(rng, thr_dtype):
    model = random_model(rng, thr_dtype=thr_dtype, compare="<=", n_features=20, n_trees=70,
                         n_outputs=1, leaf_width=1)
    scalar, avx2 = twin(model, 2), twin(model, 3)
    wide = rows(rng, 300, 50)
    for X in (wide[:, 5:25],          # rows further apart than their length
              wide[::7, :20],         # every 7th row
              np.asfortranarray(wide[:, :20]),
              wide[:, :20].astype(np.float32)):
        for n in (1, 5, 40):
            got = model.decision_function(X[:n])
            np.testing.assert_array_equal(got, scalar.decision_function(X[:n]))
            np.testing.assert_array_equal(got, avx2.decision_function(X[:n]))


def test_simd_threads_and_stumps(rng):
    # depth-0 trees (a single leaf) and stumps mixed with deep chains
    # 200 trees of depths 0, 1 and 30: the row kernels walk them sorted by
    # depth (csrc/mls_tree.c init_simd_order) and still add in tree order
    b = TreeBuilder(np.float32)
    for t in range(200):
        kind = t % 3
        if kind == 0:
            b.add_tree([-1], [-1], [True], [0], [0.0], [0], [float(t)])
        elif kind == 1:
            b.add_tree([1, -1, -1], [2, -1, -1], [False, True, True], [t % 5, 0, 0],
                       [0.1, 0, 0], [0, 0, 0], [0.0, -1.0, 1.0])
        else:  # a chain 30 deep: left children are leaves
            n = 61
            left = [i + 1 if i % 2 == 0 and i < n - 1 else -1 for i in range(n)]
            right = [i + 2 if i % 2 == 0 and i < n - 1 else -1 for i in range(n)]
            leaf = [li < 0 for li in left]
            b.add_tree(left, right, leaf, rng.integers(0, 5, n), rng.normal(size=n) * 0.1,
                       np.zeros(n), rng.normal(size=n))
    model = build_model(b, n_features=5, n_outputs=1, classes=None, aggregate="mean",
                        link="identity", compare="<", base_score=0.0, dtype=np.float64,
                        source=SRC)
    X = rows(rng, 30000, 5)
    before = mlserve.get_num_threads()
    try:
        mlserve.set_num_threads(2)
        two = model.predict(X)
        mlserve.set_num_threads(1)
        one = model.predict(X)
    finally:
        mlserve.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, twin(model, 2).predict(X))
    np.testing.assert_array_equal(one, twin(model, 3).predict(X))
    for n in (1, 9):
        few = model.predict(X[:n])
        np.testing.assert_array_equal(few, one[:n])
        np.testing.assert_array_equal(few, twin(model, 1).predict(X[:n]))
        np.testing.assert_array_equal(few, twin(model, 2).predict(X[:n]))
        np.testing.assert_array_equal(few, twin(model, 3).predict(X[:n]))


def test_engine_code_is_checked(rng):
    model = random_model(rng, thr_dtype=np.float32, compare="<=", n_features=3, n_trees=2,
                         n_outputs=1, leaf_width=1)
    with pytest.raises(ValueError,
                       match=r"config: engine must be 0 \(fast\), 1 \(reference\), 2 \(fast, "
                             r"no SIMD\) or 3 \(fast, at most AVX2\), got 4"):
        twin(model, 4)
