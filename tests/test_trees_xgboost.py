"""Parity of converted XGBoost models (XGBoost sums in float32: 1e-5 relative)."""
from __future__ import annotations

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")
from sklearn import datasets  # noqa: E402

import mlserve  # noqa: E402
from trees_support import reference_twin  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def _nan(X, rng, fraction=0.1):
    X = X.copy()
    X[rng.random(X.shape) < fraction] = np.nan
    return X


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    Xb, yb = datasets.load_breast_cancer(return_X_y=True)
    Xi, yi = datasets.load_iris(return_X_y=True)
    Xr, yr = datasets.load_diabetes(return_X_y=True)
    return {
        "binary": (_nan(Xb, rng), yb),
        "multiclass": (_nan(Xi, rng, 0.05), yi),
        "regression": (_nan(Xr, rng), yr),
    }


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_classifier_parity(data, kind):
    X, y = data[kind]
    est = xgb.XGBClassifier(n_estimators=40, max_depth=4, learning_rate=0.3, n_jobs=1).fit(X, y)
    model = mlserve.convert(est)
    _close(model.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(model.predict(X), est.predict(X))
    _close(model.decision_function(X), est.predict(X, output_margin=True))
    np.testing.assert_array_equal(reference_twin(model).predict_proba(X), model.predict_proba(X))
    assert model.metadata["source"]["objective"] in ("binary:logistic", "multi:softprob")


@pytest.mark.parametrize(
    "objective", ["reg:squarederror", "reg:absoluteerror", "count:poisson", "reg:gamma",
                  "reg:logistic", "reg:tweedie"]
)
def test_regressor_objectives(data, objective):
    X, y = data["regression"]
    if objective == "reg:logistic":
        y = (y - y.min()) / (y.max() - y.min())
    elif objective in ("count:poisson", "reg:gamma", "reg:tweedie"):
        y = y / 50.0
    est = xgb.XGBRegressor(n_estimators=30, max_depth=3, objective=objective, n_jobs=1).fit(X, y)
    model = mlserve.convert(est)
    _close(model.predict(X), est.predict(X))
    _close(model.decision_function(X), est.predict(X, output_margin=True))


def test_booster_and_file_round_trip(data, tmp_path):
    X, y = data["multiclass"]
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1},
        xgb.DMatrix(X, label=y), 15,
    )
    model = mlserve.convert(booster)
    expected = booster.predict(xgb.DMatrix(X))
    _close(model.predict_proba(X), expected)
    path = tmp_path / "model.json"
    booster.save_model(path)
    from mlserve.convert._xgboost import convert_file

    _close(convert_file(path).predict_proba(X), expected)
    mlserve.save(model, tmp_path / "x.mls")
    loaded = mlserve.load(tmp_path / "x.mls")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    # single rows and float32 input give the same values
    _close(model.predict_proba(X[3]), expected[3:4])
    np.testing.assert_array_equal(model.predict_proba(X.astype(np.float32)),
                                  model.predict_proba(X))


def test_inplace_predict_and_large_batches_with_threads(data):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20000, 10))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    est = xgb.XGBClassifier(n_estimators=60, max_depth=6, n_jobs=1).fit(X, y)
    model = mlserve.convert(est)
    expected = est.get_booster().inplace_predict(X)
    before = mlserve.get_num_threads()
    try:
        mlserve.set_num_threads(2)
        _close(model.predict_proba(X)[:, 1], expected)
    finally:
        mlserve.set_num_threads(before)


def test_early_stopping_uses_the_best_iteration(data):
    X, y = data["binary"]
    est = xgb.XGBClassifier(n_estimators=200, max_depth=3, learning_rate=0.5, n_jobs=1,
                            early_stopping_rounds=3)
    est.fit(X[:400], y[:400], eval_set=[(X[400:], y[400:])], verbose=False)
    assert est.best_iteration < 199
    model = mlserve.convert(est)
    _close(model.predict_proba(X), est.predict_proba(X))


def test_unsupported_xgboost_models(data):
    X, y = data["binary"]
    dart = xgb.XGBClassifier(n_estimators=3, booster="dart", n_jobs=1).fit(X, y)
    with pytest.raises(mlserve.ConvertError, match="booster='dart'"):
        mlserve.convert(dart)
    linear = xgb.XGBRegressor(n_estimators=3, booster="gblinear", n_jobs=1).fit(X, y)
    with pytest.raises(mlserve.ConvertError, match="booster='gblinear'"):
        mlserve.convert(linear)
    hinge = xgb.XGBClassifier(n_estimators=3, objective="binary:hinge", n_jobs=1).fit(X, y)
    with pytest.raises(mlserve.ConvertError, match="binary:hinge"):
        mlserve.convert(hinge)
    zero_missing = xgb.XGBClassifier(n_estimators=3, missing=0.0, n_jobs=1).fit(X, y)
    with pytest.raises(mlserve.ConvertError, match="missing=0.0"):
        mlserve.convert(zero_missing)
