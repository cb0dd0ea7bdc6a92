"""DataFrames are matched to a model's features by name (issue 12, part 1, in Python).

Every family (linear, logistic, sklearn trees, XGBoost, LightGBM, mlserve's own
fit) is checked against the source library's real output on a DataFrame whose
columns are shuffled: mlserve reorders by name, so its answer equals the
source's on the frame in the fitted order.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import mlserve

pd = pytest.importorskip("pandas")

COLUMNS = ["age", "income", "tenure", "score"]
SHUFFLED = ["score", "age", "tenure", "income"]


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(120, 4)) * [1.0, 3.0, 0.5, 2.0], columns=COLUMNS)
    y = X["age"] - 2.0 * X["income"] + 0.5 * X["tenure"] + 3.0 * X["score"]
    return X, y.to_numpy(), (y > 0).astype(np.int64).to_numpy()


def _sklearn(name):
    from sklearn import ensemble, linear_model

    return {
        "linear": lambda: linear_model.LinearRegression(),
        "ridge": lambda: linear_model.Ridge(alpha=0.5),
        "logistic": lambda: linear_model.LogisticRegression(),
        "forest": lambda: ensemble.RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0),
        "hgb": lambda: ensemble.HistGradientBoostingRegressor(max_iter=10),
        "hgb_classifier": lambda: ensemble.HistGradientBoostingClassifier(max_iter=10),
    }[name]()


def _xgboost(name):
    xgb = pytest.importorskip("xgboost")
    if name == "xgb":
        return xgb.XGBRegressor(n_estimators=8, max_depth=3)
    return xgb.XGBClassifier(n_estimators=8, max_depth=3)


def _lightgbm(name):
    lgb = pytest.importorskip("lightgbm")
    if name == "lgbm":
        return lgb.LGBMRegressor(n_estimators=8, num_leaves=7, verbose=-1)
    return lgb.LGBMClassifier(n_estimators=8, num_leaves=7, verbose=-1)


CLASSIFIERS = {"logistic", "forest", "hgb_classifier", "xgb_classifier", "lgbm_classifier"}
SOURCES = {
    **{n: _sklearn for n in ("linear", "ridge", "logistic", "forest", "hgb", "hgb_classifier")},
    "xgb": _xgboost,
    "xgb_classifier": _xgboost,
    "lgbm": _lightgbm,
    "lgbm_classifier": _lightgbm,
}
# XGBoost sums in float32 (see mlserve/convert/_xgboost.py); the others to rounding
TOLERANCE = {"xgb": 1e-5, "xgb_classifier": 1e-5}


@pytest.fixture(scope="module", params=sorted(SOURCES))
def converted(request, frame):
    X, y, labels = frame
    source = SOURCES[request.param](request.param)
    source.fit(X, labels if request.param in CLASSIFIERS else y)
    return request.param, source, mlserve.convert(source)


def _methods(model):
    names = ["predict"]
    if getattr(model, "_estimator_type", None) == "classifier":
        names += ["predict_proba", "predict_log_proba"]
    if hasattr(model, "decision_function") and not isinstance(model, mlserve.TreeEnsembleModel):
        names.append("decision_function")
    return names


def test_converted_models_keep_feature_names(converted):
    _, _, model = converted
    assert list(model.feature_names_in_) == COLUMNS
    assert model.metadata["feature_names"] == COLUMNS


def test_shuffled_frame_matches_the_source_on_the_fitted_order(converted, frame):
    name, source, model = converted
    X, _, _ = frame
    shuffled = X[SHUFFLED]
    rtol = TOLERANCE.get(name, 1e-9)
    for method in _methods(model):
        with np.errstate(divide="ignore"):  # a forest's log(0)
            if method == "predict_log_proba" and not hasattr(source, method):
                expected = np.log(source.predict_proba(X[COLUMNS]))
            else:
                expected = getattr(source, method)(X[COLUMNS])
        got = getattr(model, method)(shuffled)
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol, err_msg=method)
        # and the shuffled NumPy array is positional: different answers
        positional = getattr(model, method)(shuffled.to_numpy())
        assert not np.allclose(positional, expected), method


def test_tree_decision_function_and_score_by_name(frame):
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, _, labels = frame
    source = HistGradientBoostingClassifier(max_iter=10).fit(X, labels)
    model = mlserve.convert(source)
    np.testing.assert_allclose(
        model.decision_function(X[SHUFFLED]), source.decision_function(X), rtol=1e-9, atol=1e-12
    )
    assert model.score(X[SHUFFLED], labels) == pytest.approx(source.score(X, labels))


@pytest.mark.parametrize("cls", [mlserve.LinearRegression, mlserve.Ridge, mlserve.LogisticRegression])
def test_mlserve_fitted_estimators_match_by_name(cls, frame):
    X, y, labels = frame
    target = labels if cls is mlserve.LogisticRegression else y
    model = cls().fit(X, target)
    assert list(model.feature_names_in_) == COLUMNS
    for method in _methods(model):
        expected = getattr(model, method)(X.to_numpy())
        np.testing.assert_array_equal(getattr(model, method)(X[SHUFFLED]), expected)
    assert model.score(X[SHUFFLED], target) == pytest.approx(model.score(X.to_numpy(), target))


def test_save_load_keeps_names_and_matching(tmp_path, frame):
    X, _, labels = frame
    model = mlserve.LogisticRegression().fit(X, labels)
    path = tmp_path / "named.mls"
    mlserve.save(model, path)
    loaded = mlserve.load(path)
    assert list(loaded.feature_names_in_) == COLUMNS
    np.testing.assert_array_equal(loaded.predict_proba(X[SHUFFLED]), model.predict_proba(X))
    with pytest.raises(ValueError, match="X is missing feature 'score'"):
        loaded.predict(X[COLUMNS[:3]])


def test_converted_tree_round_trip(tmp_path, frame):
    from sklearn.ensemble import RandomForestRegressor

    X, y, _ = frame
    source = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(X, y)
    path = tmp_path / "forest.mls"
    mlserve.save(mlserve.convert(source), path)
    loaded = mlserve.load(path)
    np.testing.assert_allclose(loaded.predict(X[SHUFFLED]), source.predict(X), rtol=1e-12)


@pytest.fixture(scope="module")
def named_model(frame):
    X, y, _ = frame
    return mlserve.LinearRegression().fit(X, y)


@pytest.mark.parametrize(
    ("columns", "error", "message"),
    [
        (
            ["age", "income", "tenure"],
            ValueError,
            "X is missing feature 'score' that the model was fitted with",
        ),
        (
            COLUMNS + ["zz"],
            ValueError,
            "X has feature 'zz' that the model was not fitted with",
        ),
        (
            ["age", "incme", "tenure", "score"],
            ValueError,
            "X is missing feature 'income' that the model was fitted with, "
            "and has feature 'incme' that the model was not fitted with",
        ),
        (["age"], ValueError, "X is missing features 'income', 'tenure', 'score' that"),
        (
            ["age", "age", "tenure", "score"],
            ValueError,
            "X has column 'age' more than once; column names must be unique",
        ),
        (["age", 1, "tenure", "score"], TypeError, "X's column names must all be strings"),
    ],
)
def test_bad_columns_are_named(named_model, frame, columns, error, message):
    X, _, _ = frame
    data = np.zeros((3, len(columns)))
    bad = pd.DataFrame(data, columns=pd.Index(columns, dtype=object))
    for method in ("predict", "score"):
        with pytest.raises(error, match=message):
            if method == "score":
                named_model.score(bad, np.zeros(3))
            else:
                named_model.predict(bad)


def test_long_lists_of_names_are_cut(named_model):
    wide = pd.DataFrame(np.zeros((1, 11)), columns=[f"x{j}" for j in range(7)] + COLUMNS)
    with pytest.raises(ValueError, match="'x0', 'x1', 'x2', 'x3', 'x4' and 2 more that"):
        named_model.predict(wide)


def test_integer_columns_and_arrays_are_positional(named_model, frame):
    X, _, _ = frame
    expected = named_model.predict(X.to_numpy())
    np.testing.assert_array_equal(named_model.predict(X.set_axis(range(4), axis=1)), expected)
    np.testing.assert_array_equal(named_model.predict(X.to_numpy().tolist()), expected)
    np.testing.assert_array_equal(named_model.predict(X.to_numpy()[0]), expected[:1])


def test_model_without_names_takes_frames_by_position(frame):
    X, y, _ = frame
    model = mlserve.LinearRegression().fit(X.to_numpy(), y)
    assert not hasattr(model, "feature_names_in_")
    shuffled = X[SHUFFLED]
    np.testing.assert_array_equal(model.predict(shuffled), model.predict(shuffled.to_numpy()))
    with pytest.raises(ValueError, match="expected 4 features, got 3"):
        model.predict(X[COLUMNS[:3]])


def test_any_table_with_columns_is_matched(named_model, frame):
    """Not only pandas: anything with string ``columns`` and ``__array__`` (polars, ...)."""
    X, _, _ = frame

    class Table:
        columns = SHUFFLED

        def __array__(self, dtype=None, copy=None):
            return X[SHUFFLED].to_numpy(dtype=dtype)

    np.testing.assert_array_equal(named_model.predict(Table()), named_model.predict(X))


def test_numpy_input_is_returned_as_is():
    from mlserve._mixins import in_model_order

    array = np.zeros((2, 4))
    assert in_model_order(array, np.asarray(COLUMNS, dtype=object)) is array
    in_order = pd.DataFrame(array, columns=COLUMNS)
    assert in_model_order(in_order, np.asarray(COLUMNS, dtype=object)) is in_order


def test_importing_mlserve_does_not_import_pandas():
    code = "import sys, mlserve; sys.exit('pandas' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_fit_refuses_duplicate_and_mixed_names(frame):
    X, y, _ = frame
    with pytest.raises(ValueError, match="X has column 'age' more than once"):
        mlserve.Ridge().fit(X.set_axis(["age", "age", "tenure", "score"], axis=1), y)
    with pytest.raises(TypeError, match="column names must all be strings"):
        mlserve.Ridge().fit(X.set_axis(["age", 1, "tenure", "score"], axis=1), y)


# ------------------------------------------------------------------ LightGBM names


def test_lightgbm_trained_on_numpy_stays_positional(frame):
    """LightGBM calls the features of a NumPy-trained model Column_0, Column_1, ...;
    LightGBM itself predicts a DataFrame by position then, and so does mlserve."""
    lgb = pytest.importorskip("lightgbm")
    X, y, _ = frame
    source = lgb.LGBMRegressor(n_estimators=5, num_leaves=7, verbose=-1).fit(X.to_numpy(), y)
    assert source.booster_.feature_name() == ["Column_0", "Column_1", "Column_2", "Column_3"]
    for model in (mlserve.convert(source), mlserve.convert(source.booster_)):
        assert not hasattr(model, "feature_names_in_")
        assert model.metadata["feature_names"] is None
        shuffled = X[SHUFFLED]
        np.testing.assert_allclose(model.predict(shuffled), source.predict(shuffled), rtol=1e-12)


def test_lightgbm_booster_from_a_frame_keeps_names(frame):
    lgb = pytest.importorskip("lightgbm")
    X, y, _ = frame
    source = lgb.LGBMRegressor(n_estimators=5, num_leaves=7, verbose=-1).fit(X, y)
    model = mlserve.convert(source.booster_)
    assert list(model.feature_names_in_) == COLUMNS
    np.testing.assert_allclose(model.predict(X[SHUFFLED]), source.predict(X), rtol=1e-12)


def test_lightgbm_user_columns_named_like_placeholders_are_kept(frame):
    """A frame whose columns really are called Column_0.. keeps them (LGBMModel knows)."""
    lgb = pytest.importorskip("lightgbm")
    X, y, _ = frame
    names = [f"Column_{j}" for j in range(4)]
    source = lgb.LGBMRegressor(n_estimators=5, num_leaves=7, verbose=-1)
    source.fit(X.set_axis(names, axis=1), y)
    model = mlserve.convert(source)
    assert list(model.feature_names_in_) == names
    reordered = X.set_axis(names, axis=1)[names[::-1]]
    expected = source.predict(X.set_axis(names, axis=1))
    np.testing.assert_allclose(model.predict(reordered), expected, rtol=1e-12)


def test_xgboost_booster_keeps_names(frame):
    xgb = pytest.importorskip("xgboost")
    X, y, _ = frame
    source = xgb.XGBRegressor(n_estimators=5, max_depth=3).fit(X, y)
    model = mlserve.convert(source.get_booster())
    assert list(model.feature_names_in_) == COLUMNS
    np.testing.assert_allclose(model.predict(X[SHUFFLED]), source.predict(X), rtol=1e-5)
    with pytest.raises(ValueError, match="X has feature 'zz'"):
        model.predict(X.assign(zz=1.0))
