"""The C tree engine: split rules, validation of crafted sections, files,
threads and input handling (models built directly with TreeBuilder)."""
from __future__ import annotations

import numpy as np
import pytest

import mlserve
from mlserve import _core
from mlserve._trees import (
    FLAG_CAT_OOR_LEFT,
    FLAG_CAT_STRICT,
    FLAG_CATEGORICAL,
    FLAG_DEFAULT_LEFT,
    FLAG_ZERO_MISSING,
    TreeBuilder,
    build_model,
)
from trees_support import patch_section, rebuild, reference_twin

SRC = {"library": "test"}


def stump(threshold, *, flags=0, compare="<=", thr_dtype=np.float64, dtype=np.float64,
          n_features=2, feature=0, category_set=None):
    """One split on `feature`: left leaf -1.0, right leaf +1.0."""
    b = TreeBuilder(thr_dtype)
    if category_set is not None:
        threshold = b.add_category_set(category_set)
    b.add_tree([1, -1, -1], [2, -1, -1], [False, True, True], [feature, 0, 0],
               [threshold, 0, 0], [flags, 0, 0], [0.0, -1.0, 1.0])
    return build_model(b, n_features=n_features, n_outputs=1, classes=None, aggregate="sum",
                       link="identity", compare=compare, base_score=0.0, dtype=dtype, source=SRC)


def both(model, X):
    """Predictions of the fast and the reference walker (which must agree)."""
    fast = model.predict(np.asarray(X, dtype=model.model_.dtype))
    ref = reference_twin(model).predict(np.asarray(X, dtype=model.model_.dtype))
    np.testing.assert_array_equal(fast, ref)
    return fast


def col(values):
    values = np.asarray(values, dtype=np.float64)
    return np.column_stack([values, np.zeros_like(values)])


def test_less_equal_and_less_than_at_the_threshold():
    x = col([0.49, 0.5, 0.51])
    assert both(stump(0.5), x).tolist() == [-1, -1, 1]
    assert both(stump(0.5, compare="<"), x).tolist() == [-1, 1, 1]


def test_float32_thresholds_compare_cast_features():
    # 0.1 as float32 is 0.100000001490116...; the float64 0.1 casts to it
    t = np.float32(0.1)
    x = col([0.1, float(t), float(np.nextafter(t, np.float32(1))), 0.09999999])
    assert both(stump(t, thr_dtype=np.float32), x).tolist() == [-1, -1, 1, -1]
    assert both(stump(t, thr_dtype=np.float32, compare="<"), x).tolist() == [1, 1, 1, -1]
    # float64 thresholds do not cast: 0.1 < float32(0.1)
    assert both(stump(float(t)), x).tolist() == [-1, -1, 1, -1]
    assert both(stump(float(t), compare="<"), x).tolist() == [-1, 1, 1, -1]


def test_nan_follows_the_default_direction_and_inf_compares():
    x = col([np.nan, np.inf, -np.inf])
    assert both(stump(0.0, flags=FLAG_DEFAULT_LEFT), x).tolist() == [-1, 1, -1]
    assert both(stump(0.0), x).tolist() == [1, 1, -1]
    assert both(stump(0.0, compare="<", thr_dtype=np.float32), x).tolist() == [1, 1, -1]


def test_zero_as_missing():
    x = col([0.0, -0.0, 1e-36, -1e-36, 2e-35, np.nan, -1.0, 1.0])
    model = stump(0.5, flags=FLAG_ZERO_MISSING)  # missing goes right
    assert both(model, x).tolist() == [1, 1, 1, 1, -1, 1, -1, 1]


def test_categorical_sets():
    x = col([0, 1, 2, 3, 2.7, -0.5, -1, 8, 100, np.nan])
    model = stump(0, flags=FLAG_CATEGORICAL, category_set=[1, 3])
    # truncation toward zero (LightGBM): 2.7 -> 2, -0.5 -> 0; -1, 100 out of range
    assert both(model, x).tolist() == [1, -1, 1, -1, 1, 1, 1, 1, 1, 1]
    strict = stump(0, flags=FLAG_CATEGORICAL | FLAG_CAT_STRICT | FLAG_CAT_OOR_LEFT
                   | FLAG_DEFAULT_LEFT, category_set=[1, 3])
    assert both(strict, x).tolist() == [1, -1, 1, -1, -1, -1, -1, -1, -1, -1]


@pytest.mark.parametrize("thr_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("compare", ["<=", "<"])
@pytest.mark.parametrize("n_rows", [1, 3, 7, 8, 9, 64, 65, 300])
def test_fast_walker_equals_reference_on_random_forests(rng, thr_dtype, compare, n_rows):
    n_features, K = 6, 3
    b = TreeBuilder(thr_dtype)
    for t in range(13):  # 13 trees: not a multiple of the 8 lanes
        n_internal = int(rng.integers(0, 20))
        # random binary tree: grow by splitting random leaves
        left, right, leaf = [-1], [-1], [True]
        for _ in range(n_internal):
            node = int(rng.choice(np.flatnonzero(leaf)))
            left[node], right[node], leaf[node] = len(leaf), len(leaf) + 1, False
            left += [-1, -1]
            right += [-1, -1]
            leaf += [True, True]
        n = len(leaf)
        b.add_tree(left, right, leaf, rng.integers(0, n_features, n), rng.normal(size=n),
                   np.where(rng.random(n) < 0.5, FLAG_DEFAULT_LEFT, 0), rng.normal(size=n),
                   output=t % K)
    model = build_model(b, n_features=n_features, n_outputs=K, classes=[0, 1, 2],
                        aggregate="sum", link="softmax", compare=compare, base_score=[0.1, 0, -0.1],
                        dtype=np.float64, source=SRC)
    X = rng.normal(size=(n_rows, n_features))
    X[rng.random(X.shape) < 0.2] = np.nan
    twin = reference_twin(model)
    np.testing.assert_array_equal(model.decision_function(X), twin.decision_function(X))
    np.testing.assert_array_equal(model.predict_proba(X), twin.predict_proba(X))
    np.testing.assert_array_equal(model.predict(X), twin.predict(X))


def test_threads_give_identical_results(rng):
    b = TreeBuilder(np.float32)
    for _ in range(40):
        n = 63
        left = np.where(np.arange(n) < 31, 2 * np.arange(n) + 1, -1)
        right = np.where(np.arange(n) < 31, 2 * np.arange(n) + 2, -1)
        b.add_tree(left, right, np.arange(n) >= 31, rng.integers(0, 8, n),
                   rng.normal(size=n).astype(np.float32), np.zeros(n), rng.normal(size=n))
    model = build_model(b, n_features=8, n_outputs=1, classes=None, aggregate="mean",
                        link="identity", compare="<=", base_score=0.0, dtype=np.float64,
                        source=SRC)
    X = rng.normal(size=(20000, 8))
    before = mlserve.get_num_threads()
    try:
        mlserve.set_num_threads(1)
        one = model.predict(X)
        mlserve.set_num_threads(2)
        two = model.predict(X)
    finally:
        mlserve.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, reference_twin(model).predict(X))


def test_input_forms_and_no_modification(rng):
    model = stump(0.0, flags=FLAG_DEFAULT_LEFT, n_features=3, feature=2)
    X = rng.normal(size=(50, 3))
    expected = np.where(X[:, 2] <= 0, -1.0, 1.0)
    keep = X.copy()
    np.testing.assert_array_equal(model.predict(X), expected)
    np.testing.assert_array_equal(model.predict(np.asfortranarray(X)), expected)
    np.testing.assert_array_equal(model.predict(X.astype(np.float32)), np.where(
        X[:, 2].astype(np.float32) <= 0, -1.0, 1.0))
    wide = np.zeros((50, 6))
    wide[:, ::2] = X
    np.testing.assert_array_equal(model.predict(wide[:, ::2]), expected)
    np.testing.assert_array_equal(model.predict(X.tolist()), expected)
    np.testing.assert_array_equal(model.predict(X[3]), expected[3:4])
    np.testing.assert_array_equal(X, keep)
    with pytest.raises(ValueError, match="expected 3 features, got 2"):
        model.predict(X[:, :2])


def test_float32_model_takes_and_returns_float32(rng):
    model = stump(np.float32(0.25), thr_dtype=np.float32, dtype=np.float32)
    out = model.predict(col([0.2, 0.3]).astype(np.float32))
    assert out.dtype == np.float32 and out.tolist() == [-1, 1]


# ---- validation: crafted sections never make predict misbehave ------------


@pytest.fixture
def forest():
    b = TreeBuilder(np.float64)
    for _ in range(3):
        b.add_tree([1, 3, -1, -1, -1], [2, 4, -1, -1, -1], [False, False, True, True, True],
                   [0, 1, 0, 0, 0], [0.5, -0.5, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 1, 2, 3])
    return build_model(b, n_features=2, n_outputs=1, classes=None, aggregate="sum",
                       link="identity", compare="<=", base_score=0.0, dtype=np.float64,
                       source=SRC)


def arr(model, name):
    return np.array(model.model_.arrays()[name])


def _bad(forest, name, fix):
    a = arr(forest, name)
    fix(a)
    return {name: a}


CORRUPTIONS = [
    ("node_child", lambda a: a.__setitem__(0, 0), "children must come after their parent"),
    ("node_child", lambda a: a.__setitem__(1, 4), "children must come after their parent"),
    ("node_child", lambda a: a.__setitem__(6, -7), "children must come after their parent"),
    ("node_child", lambda a: a.__setitem__(2, 99), "leaf node 2 points to leaf row 99"),
    ("node_feature", lambda a: a.__setitem__(0, 2), "splits on feature 2; the model has 2"),
    ("node_feature", lambda a: a.__setitem__(1, -5), "leaf node 1"),
    ("node_threshold", lambda a: a.__setitem__(0, np.nan), "NaN threshold"),
    ("node_flags", lambda a: a.__setitem__(0, 0x80), "unknown flags"),
    ("node_flags", lambda a: a.__setitem__(0, FLAG_CATEGORICAL), "categorical node 0"),
    ("tree_offsets", lambda a: a.__setitem__(1, 0), "tree 0 has node range"),
    ("tree_offsets", lambda a: a.__setitem__(2, 99), "tree 1 has node range"),
    ("tree_offsets", lambda a: a.__setitem__(-1, 14), "must start at 0 and end at 15"),
    ("tree_output", lambda a: a.__setitem__(2, 1), "tree 2 adds to output 1"),
    ("leaf_values", lambda a: a.__setitem__(0, np.inf), "NaN or infinity"),
    ("config", lambda a: a.__setitem__(0, 0), "n_features must be"),
    ("config", lambda a: a.__setitem__(4, 9), "link must be"),
    ("config", lambda a: a.__setitem__(5, 2), "compare must be"),
    ("config", lambda a: a.__setitem__(6, 4), "input dtype must be"),
    ("config", lambda a: a.__setitem__(4, 2), "regressor cannot use the softmax"),
]


@pytest.mark.parametrize("name,fix,message", CORRUPTIONS)
def test_create_rejects_corrupt_sections(forest, name, fix, message):
    with pytest.raises(ValueError, match=message):
        rebuild(forest, **_bad(forest, name, fix))


def test_create_rejects_missing_and_mistyped_sections(forest):
    with pytest.raises(ValueError, match="needs section 'node_child'"):
        rebuild(forest, node_child=None)
    with pytest.raises(ValueError, match="'node_child' must be int32"):
        rebuild(forest, node_child=arr(forest, "node_child").astype(np.int64))
    with pytest.raises(ValueError, match="'cat_offsets' and 'cat_bits' go together"):
        rebuild(forest, cat_bits=np.zeros(1, np.uint8))
    with pytest.raises(ValueError, match="'cat_offsets' must start at 0"):
        rebuild(forest, cat_bits=np.zeros(2, np.uint8), cat_offsets=np.array([0, 1], np.int64))


@pytest.mark.parametrize("name,fix,message", CORRUPTIONS[:13])
def test_load_rejects_patched_files(forest, tmp_path, name, fix, message):
    path = tmp_path / "m.mls"
    mlserve.save(forest, path)
    X = np.array([[0.1, -1.0], [0.7, 0.0]])
    assert mlserve.load(path).predict(X).tolist() == forest.predict(X).tolist()
    bad = _bad(forest, name, fix)[name]
    patch_section(path, name, bad.tobytes())
    with pytest.raises(mlserve.ModelFormatError, match=message):
        mlserve.load(path)
    # skipping the checksums does not skip the structure checks
    patch_section(path, name, bad.tobytes(), fix_checksums=False)
    with pytest.raises(mlserve.ModelFormatError, match=message):
        mlserve.load(path, verify=False)


def test_unpatched_checksum_mismatch_is_caught(forest, tmp_path):
    path = tmp_path / "m.mls"
    mlserve.save(forest, path)
    child = arr(forest, "node_child")
    child[0] = 0
    patch_section(path, "node_child", child.tobytes(), fix_checksums=False)
    with pytest.raises(mlserve.ModelFormatError):
        mlserve.load(path)


def test_every_status_path_of_a_deep_chain():
    # a 2000-deep chain (as a degenerate tree) is walked without recursion
    n_split = 2000
    left = np.full(2 * n_split + 1, -1)
    right = np.full(2 * n_split + 1, -1)
    leaf = np.ones(2 * n_split + 1, bool)
    for i in range(n_split):
        node = 0 if i == 0 else 2 * i
        left[node], right[node], leaf[node] = 2 * i + 1, 2 * i + 2, False
    b = TreeBuilder(np.float64)
    b.add_tree(left, right, leaf, np.zeros_like(left), np.arange(left.size, dtype=float),
               np.zeros_like(left), np.arange(left.size, dtype=float))
    model = build_model(b, n_features=1, n_outputs=1, classes=None, aggregate="sum",
                        link="identity", compare="<=", base_score=0.0, dtype=np.float64,
                        source=SRC)
    x = np.array([[-1.0], [1e9], [2.5]])
    np.testing.assert_array_equal(both(model, x), reference_twin(model).predict(x))
    assert both(model, x)[1] == 4000.0


def test_tree_model_in_arrays_and_metadata(forest):
    meta = forest.metadata
    assert meta["kind"] == "tree_ensemble"
    assert meta["n_trees"] == 3
    assert forest.model_.kind == "tree_ensemble"
    assert _core.create  # the binding builds tree models by name
