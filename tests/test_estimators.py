"""Estimator API: params, pickling, convert errors, feature names, CLI info."""
import pickle
import subprocess
import sys

import numpy as np
import pytest

import mlserve

sklearn_linear = pytest.importorskip("sklearn.linear_model")


@pytest.fixture
def classifier(rng):
    X = rng.normal(size=(120, 4))
    y = np.array(["no", "yes", "maybe"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 1)]
    return X, y, mlserve.LogisticRegression(C=0.5).fit(X, y)


def test_params_protocol():
    est = mlserve.LogisticRegression(C=2.0)
    assert est.get_params() == {
        "C": 2.0, "fit_intercept": True, "max_iter": 100, "tol": 1e-4, "progress": None
    }
    assert est.set_params(max_iter=7) is est and est.max_iter == 7
    assert repr(est) == "LogisticRegression(C=2.0, max_iter=7)"
    with pytest.raises(ValueError, match="invalid parameter 'alpha' for LogisticRegression"):
        est.set_params(alpha=1)


@pytest.mark.parametrize(
    "est, message",
    [
        (mlserve.Ridge(alpha=-1), "alpha must be a non-negative number, got -1"),
        (mlserve.Ridge(alpha="big"), "alpha must be a non-negative number, got 'big'"),
        (mlserve.LogisticRegression(C=0), "C must be a positive number, got 0"),
        (mlserve.LogisticRegression(max_iter=0), "max_iter must be a positive integer, got 0"),
        (mlserve.LogisticRegression(tol=-1.0), "tol must be a non-negative number, got -1.0"),
    ],
)
def test_bad_hyperparameters(est, message):
    with pytest.raises(ValueError, match=message):
        est.fit(np.eye(3), [0, 1, 1])


def test_fit_input_errors():
    est = mlserve.LinearRegression()
    with pytest.raises(ValueError, match="expected a 2-D array"):
        est.fit(np.arange(3.0), np.arange(3.0))
    with pytest.raises(ValueError, match="contains NaN at row 1, column 0"):
        est.fit([[1.0], [np.nan]], [1, 2])
    with pytest.raises(ValueError, match=r"y must have shape \(2,\)"):
        est.fit([[1.0], [2.0]], [1, 2, 3])
    with pytest.raises(TypeError, match="does not accept sparse input"):
        scipy_sparse = pytest.importorskip("scipy.sparse")
        est.fit(scipy_sparse.csr_matrix(np.eye(3)), [1, 2, 3])
    with pytest.raises(ValueError, match="only one class"):
        mlserve.LogisticRegression().fit(np.eye(3), [1, 1, 1])


def test_pickle_round_trip(classifier):
    X, y, model = classifier
    restored = pickle.loads(pickle.dumps(model))
    assert restored.get_params() == model.get_params()
    np.testing.assert_array_equal(restored.classes_, model.classes_)
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    unfitted = pickle.loads(pickle.dumps(mlserve.Ridge(alpha=3.0)))
    assert unfitted.alpha == 3.0 and not hasattr(unfitted, "coef_")


def test_loads_rejects_garbage():
    from mlserve import _core

    with pytest.raises(mlserve.ModelFormatError):
        _core.loads(b"\x00" * 300)


def test_feature_names_from_dataframe(rng):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(rng.normal(size=(30, 3)), columns=["age", "income", "tenure"])
    model = mlserve.Ridge().fit(X, X["age"] * 2)
    assert list(model.feature_names_in_) == ["age", "income", "tenure"]
    assert model.metadata["feature_names"] == ["age", "income", "tenure"]
    np.testing.assert_allclose(model.predict(X), model.predict(X.to_numpy()))


def test_metadata_contents(classifier):
    _, _, model = classifier
    meta = model.metadata
    assert meta["kind"] == "logistic_regression"
    assert meta["estimator"] == "LogisticRegression"
    assert meta["task"] == "classification"
    assert meta["n_features"] == 4
    assert meta["classes"] == ["maybe", "no", "yes"]
    assert meta["mlserve_version"] == mlserve.__version__
    assert meta["training"]["n_samples"] == 120
    assert len(meta["training"]["feature_mean"]) == 4


def test_convert_rejects_unsupported_estimators(rng):
    neighbors = pytest.importorskip("sklearn.neighbors")
    X = rng.normal(size=(20, 2))
    with pytest.raises(
        mlserve.ConvertError, match="does not support sklearn.neighbors._classification.KNeighborsClassifier"
    ):
        mlserve.convert(neighbors.KNeighborsClassifier().fit(X, X[:, 0] > 0))
    with pytest.raises(mlserve.ConvertError, match="does not support builtins.str"):
        mlserve.convert("model")
    with pytest.raises(mlserve.NotFittedError, match="LinearRegression is not fitted"):
        mlserve.convert(sklearn_linear.LinearRegression())
    with pytest.raises(mlserve.ConvertError, match="dtype must be float64 or float32"):
        mlserve.convert(sklearn_linear.LinearRegression().fit(X, X[:, 0]), dtype=np.int32)


def test_convert_fit_intercept_false_multioutput(rng):
    X = rng.normal(size=(50, 3))
    Y = X @ rng.normal(size=(3, 2))
    ref = sklearn_linear.LinearRegression(fit_intercept=False).fit(X, Y)
    np.testing.assert_allclose(mlserve.convert(ref).predict(X), ref.predict(X), rtol=1e-10, atol=1e-12)


def test_cli_info_prints_metadata(tmp_path, classifier):
    _, _, model = classifier
    path = tmp_path / "m.mls"
    mlserve.save(model, path)
    out = subprocess.run(
        [sys.executable, "-m", "mlserve.cli", "info", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "logistic_regression" in out and "LogisticRegression" in out
    assert "coef" in out and "float64" in out and "(3, 4)" in out
    bad = tmp_path / "bad.mls"
    bad.write_bytes(b"not a model")
    result = subprocess.run([sys.executable, "-m", "mlserve.cli", "info", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "Error" in result.stderr


def test_show_config(capsys):
    mlserve.show_config()
    out = capsys.readouterr().out
    assert f"mlserve {mlserve.__version__}" in out
    assert "OpenBLAS" in out and "threads" in out and "blas library" in out
