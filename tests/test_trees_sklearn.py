"""Parity of converted scikit-learn trees, forests and gradient boosting."""
from __future__ import annotations

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn import datasets, ensemble, tree  # noqa: E402

import mlserve  # noqa: E402
from trees_support import reference_twin  # noqa: E402

@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread():
    # fitting HistGradientBoosting with OpenMP on a busy 2-core machine is slow
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):
        yield


ATOL = 1e-9  # float64 outputs: the sums are the same additions in the same order


def _with_nans(X, rng, fraction=0.1):
    X = X.copy()
    X[rng.random(X.shape) < fraction] = np.nan
    return X


def _data(kind, rng, nan=False):
    if kind == "binary":
        X, y = datasets.load_breast_cancer(return_X_y=True)
    elif kind == "multiclass":
        X, y = datasets.load_iris(return_X_y=True)
    elif kind == "multiclass5":
        X, y = datasets.make_classification(
            600, 12, n_informative=8, n_classes=5, random_state=1
        )
    else:
        X, y = datasets.load_diabetes(return_X_y=True)
    if nan:
        X = _with_nans(X, rng)
    return X, y


def _check_parity(est, X, *, dtype=np.float64):
    """dtype=float32 models take float32 rows: they match the source given the
    same float32 values (exactly where the source casts to float32 itself)."""
    model = mlserve.convert(est, dtype=dtype)
    if dtype == np.float32:
        X = X.astype(np.float32)
    assert isinstance(model, mlserve.TreeEnsembleModel)
    assert model.n_features_in_ == X.shape[1]
    if dtype == np.float64:
        tol = dict(rtol=0, atol=ATOL)
    else:
        tol = dict(rtol=1e-5, atol=1e-6)
    if hasattr(est, "predict_proba"):
        got = model.predict_proba(X)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, est.predict_proba(X), **tol)
        np.testing.assert_array_equal(model.classes_, est.classes_)
        np.testing.assert_array_equal(model.predict(X), est.predict(X))
    else:
        got = model.predict(X)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, est.predict(X), **tol)
    if hasattr(est, "decision_function"):
        np.testing.assert_allclose(model.decision_function(X), est.decision_function(X), **tol)
    # the fast walker and the reference walker agree bit for bit
    twin = reference_twin(model)
    method = "predict_proba" if hasattr(est, "predict_proba") else "predict"
    np.testing.assert_array_equal(getattr(twin, method)(X), getattr(model, method)(X))
    # one row at a time (the few-rows path) gives the same values
    for i in (0, 5):
        np.testing.assert_array_equal(getattr(model, method)(X[i]), getattr(model, method)(X[i : i + 1]))
        np.testing.assert_array_equal(
            getattr(model, method)(X[i : i + 1]), getattr(model, method)(X)[i : i + 1]
        )
    return model


SMALL = dict(random_state=0)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize(
    "make",
    [
        lambda c: (tree.DecisionTreeClassifier if c else tree.DecisionTreeRegressor)(
            max_depth=8, **SMALL
        ),
        lambda c: (tree.ExtraTreeClassifier if c else tree.ExtraTreeRegressor)(**SMALL),
        lambda c: (ensemble.RandomForestClassifier if c else ensemble.RandomForestRegressor)(
            n_estimators=15, max_depth=7, **SMALL
        ),
        lambda c: (ensemble.ExtraTreesClassifier if c else ensemble.ExtraTreesRegressor)(
            n_estimators=10, **SMALL
        ),
        lambda c: (
            ensemble.GradientBoostingClassifier if c else ensemble.GradientBoostingRegressor
        )(n_estimators=20, max_depth=3, **SMALL),
        lambda c: (
            ensemble.HistGradientBoostingClassifier
            if c
            else ensemble.HistGradientBoostingRegressor
        )(max_iter=20, **SMALL),
    ],
    ids=["DecisionTree", "ExtraTree", "RandomForest", "ExtraTrees", "GradientBoosting", "HistGB"],
)
def test_parity_sklearn_datasets(make, kind, rng):
    X, y = _data(kind, rng)
    est = make(kind != "regression").fit(X, y)
    _check_parity(est, X)
    _check_parity(est, X, dtype=np.float32)


@pytest.mark.parametrize(
    "est",
    [
        tree.DecisionTreeClassifier(max_depth=6, **SMALL),
        ensemble.RandomForestClassifier(n_estimators=10, max_depth=6, **SMALL),
        ensemble.RandomForestRegressor(n_estimators=10, max_depth=6, **SMALL),
        ensemble.ExtraTreesRegressor(n_estimators=10, max_depth=6, **SMALL),
        ensemble.HistGradientBoostingClassifier(max_iter=15, **SMALL),
        ensemble.HistGradientBoostingRegressor(max_iter=15, **SMALL),
    ],
    ids=lambda e: type(e).__name__,
)
def test_parity_with_missing_values(est, rng):
    kind = "regression" if "Regressor" in type(est).__name__ else "multiclass5"
    X, y = _data(kind, rng, nan=True)
    est.fit(X, y)
    _check_parity(est, X)
    # rows that are all NaN follow the learned default directions
    allnan = np.full((3, X.shape[1]), np.nan)
    method = "predict_proba" if hasattr(est, "predict_proba") else "predict"
    np.testing.assert_allclose(
        getattr(mlserve.convert(est), method)(allnan), getattr(est, method)(allnan), atol=ATOL
    )


def test_parity_generated_multiclass_gradient_boosting(rng):
    X, y = _data("multiclass5", rng)
    est = ensemble.GradientBoostingClassifier(n_estimators=15, max_depth=3, **SMALL).fit(X, y)
    _check_parity(est, X)


def test_thresholds_at_float32_boundaries(rng):
    # values that sit exactly on, just below and just above float32 thresholds
    X, y = _data("regression", rng)
    est = tree.DecisionTreeRegressor(max_depth=10, **SMALL).fit(X, y)
    t = est.tree_.threshold[est.tree_.feature >= 0]
    f = est.tree_.feature[est.tree_.feature >= 0]
    Xb = np.repeat(X[:1], 3 * t.size, axis=0)
    t32 = t.astype(np.float32).astype(np.float64)
    for j, offset in enumerate((0.0, -1e-9, 1e-9)):
        Xb[np.arange(t.size) * 3 + j, f] = t32 + offset
    _check_parity(est, Xb)


@pytest.mark.parametrize("missing", [False, True])
def test_hist_gradient_boosting_categorical(rng, missing):
    n = 800
    X = np.column_stack(
        [rng.integers(0, 6, n), rng.integers(0, 40, n), rng.normal(size=n), rng.normal(size=n)]
    ).astype(np.float64)
    y = (np.isin(X[:, 0], [1, 3]) ^ (X[:, 1] % 7 < 3)).astype(int) + (X[:, 2] > 1)
    if missing:
        X[rng.random(X.shape) < 0.1] = np.nan
    est = ensemble.HistGradientBoostingClassifier(
        max_iter=20, categorical_features=[0, 1], **SMALL
    ).fit(X, y)
    _check_parity(est, X)
    # categories never seen in training, negative ones and NaN
    Xu = X[:40].copy()
    Xu[:10, 0] = 6
    Xu[10:20, 1] = 45
    Xu[20:30, 0] = -1
    Xu[30:40, 1] = np.nan
    _check_parity(est, Xu)


@pytest.mark.parametrize("loss", ["poisson", "absolute_error", "gamma", "quantile"])
def test_hist_gradient_boosting_regression_losses(loss, rng):
    X, y = _data("regression", rng)
    y = y - y.min() + 1
    kw = {"quantile": 0.8} if loss == "quantile" else {}
    est = ensemble.HistGradientBoostingRegressor(loss=loss, max_iter=15, **kw, **SMALL).fit(X, y)
    _check_parity(est, X)


def test_gradient_boosting_zero_init_and_losses(rng):
    X, y = _data("regression", rng)
    for est in (
        ensemble.GradientBoostingRegressor(n_estimators=10, init="zero", **SMALL),
        ensemble.GradientBoostingRegressor(n_estimators=10, loss="huber", **SMALL),
        ensemble.GradientBoostingRegressor(n_estimators=10, loss="quantile", alpha=0.7, **SMALL),
    ):
        _check_parity(est.fit(X, y), X)


def test_multi_output_regression_and_string_labels(rng):
    X, y = _data("regression", rng)
    Y = np.column_stack([y, -2 * y, y ** 0.5])
    est = ensemble.RandomForestRegressor(n_estimators=8, max_depth=5, **SMALL).fit(X, Y)
    model = _check_parity(est, X)
    assert model.predict(X).shape == (X.shape[0], 3)
    Xc, yc = _data("multiclass", rng)
    labels = np.array(["setosa", "versicolor", "virginica"])[yc]
    est = ensemble.RandomForestClassifier(n_estimators=5, **SMALL).fit(Xc, labels)
    model = _check_parity(est, Xc)
    assert model.predict(Xc).dtype == labels.dtype


def test_save_load_round_trip(tmp_path, rng):
    X, y = _data("multiclass5", rng, nan=True)
    est = ensemble.HistGradientBoostingClassifier(max_iter=10, **SMALL).fit(X, y)
    model = mlserve.convert(est)
    path = tmp_path / "hgb.mls"
    mlserve.save(model, path)
    loaded = mlserve.load(path)
    assert isinstance(loaded, mlserve.TreeEnsembleModel)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    assert loaded.metadata["source"]["library"] == "scikit-learn"
    assert loaded.metadata["estimator"] == "TreeEnsembleModel"
    assert loaded.model_.mapping is not None  # arrays used in place


def test_pickle_round_trip(rng):
    import pickle

    X, y = _data("binary", rng)
    est = ensemble.RandomForestClassifier(n_estimators=5, max_depth=4, **SMALL).fit(X, y)
    model = mlserve.convert(est)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))


def test_unsupported_sklearn_configurations(rng):
    X, y = _data("binary", rng)
    est = ensemble.GradientBoostingClassifier(n_estimators=3, loss="exponential", **SMALL)
    with pytest.raises(mlserve.ConvertError, match="loss='exponential'"):
        mlserve.convert(est.fit(X, y))
    multi = ensemble.RandomForestClassifier(n_estimators=3, **SMALL).fit(X, np.column_stack([y, y]))
    with pytest.raises(mlserve.ConvertError, match="single-output"):
        mlserve.convert(multi)
    with pytest.raises(mlserve.NotFittedError):
        mlserve.convert(ensemble.RandomForestRegressor())


def test_regressor_has_no_predict_proba(rng):
    X, y = _data("regression", rng)
    model = mlserve.convert(tree.DecisionTreeRegressor(max_depth=3, **SMALL).fit(X, y))
    with pytest.raises(AttributeError, match="regressor"):
        model.predict_proba(X)
    with pytest.raises(NotImplementedError):
        model.fit(X, y)


def test_score_matches_scikit_learn(rng):
    X = rng.normal(size=(80, 4))
    y = X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=80)
    w = rng.uniform(0.5, 2.0, size=80)
    reg = tree.DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, y)
    ours = mlserve.convert(reg)
    assert ours.score(X, y) == pytest.approx(reg.score(X, y), rel=1e-12)
    assert ours.score(X, y, sample_weight=w) == pytest.approx(reg.score(X, y, sample_weight=w), rel=1e-12)
    # a constant target predicted exactly: scikit-learn's R^2 is 1.0, not 0.0
    constant = np.full(80, 3.5)
    flat = tree.DecisionTreeRegressor().fit(X, constant)
    assert mlserve.convert(flat).score(X, constant) == flat.score(X, constant) == 1.0
    clf = tree.DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y > 0)
    assert mlserve.convert(clf).score(X, y > 0) == pytest.approx(clf.score(X, y > 0), rel=1e-12)
