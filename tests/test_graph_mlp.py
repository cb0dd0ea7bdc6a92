"""mlserve.convert of scikit-learn's MLPClassifier / MLPRegressor, parity with scikit-learn."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

import mlserve


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def _labels_agree(got, ref, proba):
    """Labels equal except where scikit-learn's top two probabilities tie to float32."""
    top = np.sort(proba, axis=1)
    near_tie = (top[:, -1] - top[:, -2]) < 1e-5
    return bool(np.all((got == ref) | near_tie))


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_classifier_matches_sklearn(activation, n_classes):
    X, y = make_classification(400, 12, n_informative=6, n_classes=n_classes, random_state=0)
    labels = np.array(["cat", "dog", "emu"])[y]
    est = _fit(MLPClassifier((24, 10), activation=activation, max_iter=150, random_state=0),
               X, labels)
    model = mlserve.convert(est)
    ref = est.predict_proba(X)
    got = model.predict_proba(X)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-5
    assert list(model.classes_) == list(est.classes_)
    assert _labels_agree(model.predict(X), est.predict(X), ref)
    assert _labels_agree(model.predict(X[:1]), est.predict(X[:1]), ref[:1])


@pytest.mark.parametrize("n_targets", [1, 3])
def test_regressor_matches_sklearn(n_targets):
    X, y = make_regression(300, 8, n_targets=n_targets, random_state=0)
    est = _fit(MLPRegressor(hidden_layer_sizes=(16, 16), max_iter=200, random_state=0), X,
               y / 100)
    model = mlserve.convert(est)
    ref = est.predict(X)
    got = model.predict(X)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_save_load_round_trip_is_identical(tmp_path):
    X, y = make_classification(200, 6, random_state=1)
    model = mlserve.convert(_fit(MLPClassifier((8,), max_iter=100, random_state=0), X, y))
    mlserve.save(model, tmp_path / "mlp.mls")
    back = mlserve.load(tmp_path / "mlp.mls")
    assert np.array_equal(back.predict_proba(X), model.predict_proba(X))
    assert np.array_equal(back.predict(X), model.predict(X))
    assert back.metadata["task"] == "classification"


def test_bad_input_and_unsupported_configuration():
    X, y = make_classification(100, 5, random_state=2)
    model = mlserve.convert(_fit(MLPClassifier((4,), max_iter=50, random_state=0), X, y))
    with pytest.raises(ValueError, match="5"):
        model.predict(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((1, 5), np.nan))
    Y = np.stack([y, 1 - y], axis=1)
    multilabel = _fit(MLPClassifier((4,), max_iter=50, random_state=0), X, Y)
    with pytest.raises(mlserve.ConvertError, match="multilabel"):
        mlserve.convert(multilabel)
    with pytest.raises(mlserve.NotFittedError):
        mlserve.convert(MLPClassifier())


def test_strided_rows_give_the_same_output():
    X, y = make_classification(100, 5, random_state=3)
    model = mlserve.convert(_fit(MLPClassifier((6,), max_iter=50, random_state=0), X, y))
    wide = np.zeros((100, 9))
    wide[:, :5] = X
    assert np.array_equal(model.predict_proba(wide[:, :5]), model.predict_proba(X))


def test_poisson_regressor_exp_output_matches_sklearn():
    X, y = make_regression(200, 6, random_state=4)
    est = _fit(MLPRegressor(loss="poisson", hidden_layer_sizes=(8,), max_iter=100,
                            random_state=0), X / 10, np.exp(y / 200))
    ref = est.predict(X / 10)
    got = mlserve.convert(est).predict(X / 10)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_edge_shapes_match_sklearn_and_nan_raises_in_both():
    """One feature, one hidden unit, one row; NaN input is refused by both libraries."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 1))
    y = (X[:, 0] > 0).astype(int)
    for est in (MLPClassifier(hidden_layer_sizes=(1,), max_iter=300, random_state=0),
                MLPRegressor(hidden_layer_sizes=(1,), max_iter=300, random_state=0)):  # fmt: skip
        est = _fit(est, X, y)
        model = mlserve.convert(est)
        method = "predict_proba" if hasattr(est, "predict_proba") else "predict"
        for rows in (X, X[:1]):
            ref = getattr(est, method)(rows)
            np.testing.assert_allclose(getattr(model, method)(rows), ref, rtol=1e-5, atol=1e-6)
        bad = np.array([[np.nan]])
        with pytest.raises(ValueError):
            est.predict(bad)
        with pytest.raises(ValueError, match="NaN"):
            model.predict(bad)
