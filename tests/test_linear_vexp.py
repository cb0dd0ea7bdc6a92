"""The vectorised exp behind LogisticRegression.predict_proba (csrc/mls_vmath.c).

Crafted one-feature models make the scores equal the input, so exp is seen
through the probabilities: binary p1 = 1 / (1 + exp(-z)); for a 3-class
model with scores (x, 0, 0) the softmax gives p0 / p1 = exp(x - max(x, 0))
up to two roundings. Compared with numpy.exp over the whole double range,
including the over- and underflow edges, and checked for the limits: no
NaN, probabilities in [0, 1], rows summing to 1.
"""
import numpy as np
import pytest

import mlserve

sklearn_linear = pytest.importorskip("sklearn.linear_model")

EDGES = [0.0, -0.0, 5e-324, -5e-324, 1e-300, 0.5 * np.log(2), -0.5 * np.log(2), 1.0, -1.0,
         708.39, -708.39, 709.782712893384, -709.782712893384, 709.79, -709.79, 710.0, -710.0,
         745.1332191019411, -745.1332191019411, 745.2, -745.2, 746.0, -746.0, 800.0, -800.0,
         1e300, -1e300, np.finfo(float).max, -np.finfo(float).max]


def crafted(coef, intercept, dtype=np.float64):
    coef = np.asarray(coef, dtype=np.float64)
    ref = sklearn_linear.LogisticRegression()
    ref.coef_ = coef
    ref.intercept_ = np.asarray(intercept, dtype=np.float64)
    ref.classes_ = np.arange(max(2, coef.shape[0]))
    ref.n_features_in_ = coef.shape[1]
    return mlserve.convert(ref, dtype=dtype)


def wide_range(rng):
    return np.concatenate([
        rng.uniform(-746.0, 746.0, 200_000),
        rng.uniform(-40.0, 40.0, 100_000),
        rng.uniform(-1.0, 1.0, 50_000),
        np.array(EDGES),
    ])


def ulp_distance(got, want):
    return np.abs(got - want) / np.spacing(np.abs(want))


def check_probabilities(p):
    assert not np.isnan(p).any()
    assert ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=4e-16 if p.dtype == np.float64 else 3e-7)


def test_binary_sigmoid_matches_numpy_exp(rng):
    z = wide_range(rng)
    p = crafted([[1.0]], [0.0]).predict_proba(z[:, None])
    check_probabilities(p)
    with np.errstate(over="ignore"):
        e = np.exp(-z)
    want = 1.0 / (1.0 + e)
    assert np.array_equal(p[:, 1] == 0, want == 0) and np.array_equal(p[:, 1] == 1, want == 1)
    nz = want > 0
    assert ulp_distance(p[nz, 1], want[nz]).max() <= 4
    np.testing.assert_array_equal(p[:, 0], 1.0 - p[:, 1])


def test_softmax_ratio_is_exp_within_a_few_ulp(rng):
    x = wide_range(rng)
    p = crafted([[1.0], [0.0], [0.0]], [0.0, 0.0, 0.0]).predict_proba(x[:, None])
    check_probabilities(p)
    np.testing.assert_array_equal(p[:, 1], p[:, 2])
    # exp(-|x|) = (smaller / larger) of p0 and p1, up to the two divisions
    # (by the row sum, and here): 1 ulp each, plus exp's own error
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        ratio = np.where(x < 0, p[:, 0] / p[:, 1], p[:, 1] / p[:, 0])
        want = np.exp(-np.abs(x))
    normal = want >= np.finfo(float).tiny * 4  # p itself is not subnormal
    assert ulp_distance(ratio[normal], want[normal]).max() <= 4
    # past the underflow edge the small class gets exactly 0
    far = np.abs(x) >= 746
    assert (np.minimum(p[far, 0], p[far, 1]) == 0).all()


def test_extreme_scores_and_overflowing_scores_never_give_nan():
    # scores of +-inf from finite inputs (x * w overflows)
    binary = crafted([[1e300, 1e300]], [0.0])
    p = binary.predict_proba(np.array([[1e10, 1e10], [-1e10, -1e10], [0.0, 0.0]]))
    np.testing.assert_array_equal(p, [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    multi = crafted([[1e300], [1e300], [0.0]], [0.0, 0.0, 0.0])
    p = multi.predict_proba(np.array([[1e10], [-1e10], [0.0]]))
    np.testing.assert_array_equal(p, [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]])
    all_low = crafted([[1e300], [1e300], [1e300]], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(all_low.predict_proba(np.array([[-1e10]])), [[1 / 3] * 3], rtol=1e-15)


def test_nan_input_is_still_rejected_with_its_position():
    model = crafted([[1.0, 1.0]], [0.0])
    X = np.zeros((2000, 2))
    X[1500, 1] = np.nan
    with pytest.raises(ValueError, match="1500"):
        model.predict_proba(X)


@pytest.mark.parametrize("n_classes", [1, 3])
def test_float32_model_tracks_float64(rng, n_classes):
    coef = [[1.0]] if n_classes == 1 else [[1.0], [0.0], [-0.5]]
    intercept = [0.0] * len(coef)  # exact float32 scores: only the finish differs
    z = np.concatenate([rng.uniform(-120, 120, 20_000), np.array(EDGES[:20])]).astype(np.float32)
    p32 = crafted(coef, intercept, dtype=np.float32).predict_proba(z[:, None])
    p64 = crafted(coef, intercept).predict_proba(z[:, None].astype(np.float64))
    assert p32.dtype == np.float32
    check_probabilities(p32)
    np.testing.assert_allclose(p32, p64, rtol=2e-7, atol=1e-38)


@pytest.mark.parametrize("rows", [1, 7, 511, 512, 513, 1025])
def test_block_edges(rng, rows):
    ref = sklearn_linear.LogisticRegression().fit(rng.normal(size=(200, 4)), rng.integers(0, 2, 200))
    model = mlserve.convert(ref)
    X = rng.normal(size=(rows, 4)) * 30
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), rtol=1e-12, atol=1e-300)
