"""Parity of converted LightGBM models (float64 sums in LightGBM's order)."""
from __future__ import annotations

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")
from sklearn import datasets  # noqa: E402

import mlserve  # noqa: E402
from trees_support import reference_twin  # noqa: E402

TOL = dict(rtol=1e-9, atol=1e-9)
COMMON = dict(n_jobs=1, verbose=-1)


def _nan(X, rng, fraction=0.1):
    X = X.copy()
    X[rng.random(X.shape) < fraction] = np.nan
    return X


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    Xb, yb = datasets.load_breast_cancer(return_X_y=True)
    Xi, yi = datasets.load_iris(return_X_y=True)
    Xr, yr = datasets.load_diabetes(return_X_y=True)
    Xm, ym = datasets.make_classification(1500, 10, n_informative=6, n_classes=5, random_state=2)
    return {
        "binary": (_nan(Xb, rng), yb),
        "iris": (Xi, yi),
        "multiclass": (_nan(Xm, rng), ym),
        "regression": (_nan(Xr, rng), yr),
    }


def _check(model, est, X, raw_scale=1.0):
    if hasattr(est, "predict_proba"):
        np.testing.assert_allclose(model.predict_proba(X), est.predict_proba(X), **TOL)
        np.testing.assert_array_equal(model.predict(X), est.predict(X))
        np.testing.assert_allclose(model.decision_function(X) * raw_scale,
                                   est.predict(X, raw_score=True), **TOL)
    else:
        np.testing.assert_allclose(model.predict(X), est.predict(X), **TOL)
    method = "predict_proba" if hasattr(est, "predict_proba") else "predict"
    np.testing.assert_array_equal(getattr(reference_twin(model), method)(X),
                                  getattr(model, method)(X))


@pytest.mark.parametrize("kind", ["binary", "iris", "multiclass"])
def test_classifier_parity(data, kind):
    X, y = data[kind]
    est = lgb.LGBMClassifier(n_estimators=30, num_leaves=15, **COMMON).fit(X, y)
    _check(mlserve.convert(est), est, X)


@pytest.mark.parametrize("objective", ["regression", "regression_l1", "huber", "poisson",
                                       "gamma", "tweedie", "quantile"])
def test_regression_objectives(data, objective):
    X, y = data["regression"]
    est = lgb.LGBMRegressor(n_estimators=20, num_leaves=15, objective=objective, **COMMON)
    _check(mlserve.convert(est.fit(X, y)), est, X)


def test_categorical_splits_and_unknown_categories():
    rng = np.random.default_rng(5)
    n = 3000
    X = np.column_stack([rng.integers(0, 30, n), rng.normal(size=n), rng.integers(0, 4, n),
                         rng.normal(size=n)]).astype(np.float64)
    y = (np.isin(X[:, 0], [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]) ^ (X[:, 1] > 0.3)).astype(int)
    X[rng.random(X.shape) < 0.05] = np.nan
    est = lgb.LGBMClassifier(n_estimators=30, num_leaves=15, min_data_per_group=5,
                             cat_smooth=1, **COMMON)
    est.fit(X, y, categorical_feature=[0, 2])
    model = mlserve.convert(est)
    _check(model, est, X)
    Xu = X[:50].copy()
    Xu[:10, 0] = 31  # unseen
    Xu[10:20, 0] = -1  # negative
    Xu[20:30, 0] = 2.7  # truncated to 2
    Xu[30:40, 0] = 1000  # beyond every bitset
    Xu[40:50, 2] = np.nan
    _check(model, est, Xu)


@pytest.mark.parametrize("zero_as_missing,use_missing", [(True, True), (False, False)])
def test_missing_value_modes(zero_as_missing, use_missing):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(2000, 5))
    X[rng.random(X.shape) < 0.2] = 0.0
    y = X[:, 0] * 2 + (X[:, 1] == 0) + X[:, 2]
    X[rng.random(X.shape) < 0.1] = np.nan
    est = lgb.LGBMRegressor(n_estimators=25, num_leaves=15, zero_as_missing=zero_as_missing,
                            use_missing=use_missing, **COMMON).fit(X, y)
    model = mlserve.convert(est)
    _check(model, est, X)
    Xz = X[:20].copy()
    Xz[:, 0] = [0.0, -0.0, 1e-36, -1e-36, 1e-34, np.nan] + [0.5] * 14
    _check(model, est, Xz)


def test_random_forest_mode_averages(data):
    X, y = data["multiclass"]
    est = lgb.LGBMClassifier(boosting_type="rf", n_estimators=10, num_leaves=15,
                             bagging_fraction=0.7, bagging_freq=1, **COMMON).fit(X, y)
    # LightGBM's raw_score in rf mode is the sum; decision_function is the mean
    _check(mlserve.convert(est), est, X, raw_scale=10)


def test_booster_file_and_early_stopping(data, tmp_path):
    X, y = data["binary"]
    est = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.3, num_leaves=7, **COMMON)
    import inspect

    if "eval_X" in inspect.signature(est.fit).parameters:
        evals = dict(eval_X=(X[400:],), eval_y=(y[400:],))
    else:
        evals = dict(eval_set=[(X[400:], y[400:])])
    est.fit(X[:400], y[:400], callbacks=[lgb.early_stopping(3, verbose=False)], **evals)
    assert 0 < est.best_iteration_ < 300
    _check(mlserve.convert(est), est, X)
    booster = est.booster_
    model = mlserve.convert(booster)
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], booster.predict(X), **TOL)
    path = tmp_path / "model.txt"
    booster.save_model(path, num_iteration=-1)
    from mlserve.convert._lightgbm import convert_file

    full = convert_file(path)
    np.testing.assert_allclose(full.predict_proba(X)[:, 1],
                               lgb.Booster(model_file=str(path)).predict(X), **TOL)
    mlserve.save(full, tmp_path / "m.mls")
    np.testing.assert_array_equal(mlserve.load(tmp_path / "m.mls").predict_proba(X),
                                  full.predict_proba(X))


def test_string_labels(data):
    X, y = data["iris"]
    labels = np.array(["a", "b", "c"])[y]
    est = lgb.LGBMClassifier(n_estimators=5, **COMMON).fit(X, labels)
    model = mlserve.convert(est)
    np.testing.assert_array_equal(model.predict(X), est.predict(X))


def test_unsupported_lightgbm_models(data):
    X, y = data["regression"]
    linear = lgb.LGBMRegressor(n_estimators=3, linear_tree=True, **COMMON).fit(X, y)
    with pytest.raises(mlserve.ConvertError, match="linear trees"):
        mlserve.convert(linear)
    Xc, yc = data["multiclass"]
    ova = lgb.LGBMClassifier(n_estimators=3, objective="multiclassova", **COMMON).fit(Xc, yc)
    with pytest.raises(mlserve.ConvertError, match="multiclassova"):
        mlserve.convert(ova)
