"""Pipeline column transforms in C (issue 14, step 1): parity with
scikit-learn's own ColumnTransformer output, from DataFrames, records and
dicts of columns; bad input and corrupt transform tables give errors."""
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)

import mlserve
from mlserve import _core
from mlserve.convert._sklearn_pipeline import convert_column_transformer


def frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n)
    age[rng.random(n) < 0.15] = np.nan
    income = rng.lognormal(10, 1, n)
    city = rng.choice(["paris", "lyon", "nîmes", "brest"], n).astype(object)
    city[rng.random(n) < 0.1] = None
    plan = rng.choice([f"p{i}" for i in range(60)], n).astype(object)
    return pd.DataFrame({"age": age, "income": income, "city": city, "plan": plan})


NUMERIC_STEPS = [
    lambda: StandardScaler(),
    lambda: MinMaxScaler(),
    lambda: MaxAbsScaler(),
    lambda: RobustScaler(),
    lambda: SimpleImputer(strategy="mean"),
    lambda: SimpleImputer(strategy="median", add_indicator=True),
    lambda: SimpleImputer(strategy="constant", fill_value=-1.0),
    lambda: make_pipeline(SimpleImputer(strategy="most_frequent"), StandardScaler()),
    lambda: make_pipeline(SimpleImputer(), MinMaxScaler(), StandardScaler()),
]


@pytest.mark.parametrize("make_step", NUMERIC_STEPS)
def test_numeric_step_matches_sklearn(make_step):
    X = frame()
    ct = ColumnTransformer([("num", make_step(), ["age", "income"])]).fit(X)
    got = convert_column_transformer(ct).transform(X)
    np.testing.assert_allclose(got, ct.transform(X), rtol=1e-6, atol=1e-9)


def string_frame():
    X = frame()
    X["city"] = X["city"].fillna("unknown")
    return X


@pytest.mark.parametrize(
    "enc",
    [
        OneHotEncoder(sparse_output=False),
        OneHotEncoder(sparse_output=False, handle_unknown="ignore"),
        OrdinalEncoder(),
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
    ],
)
def test_encoder_matches_sklearn(enc):
    X = string_frame()
    ct = ColumnTransformer([("cat", enc, ["city", "plan"])]).fit(X)
    got = convert_column_transformer(ct).transform(X)
    np.testing.assert_array_equal(got, ct.transform(X))


def test_unseen_categories_ignored_like_sklearn():
    X = string_frame()
    ct = ColumnTransformer(
        [
            ("oh", OneHotEncoder(sparse_output=False, handle_unknown="ignore"), ["city"]),
            ("ord", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-7),
             ["plan"]),
        ]
    ).fit(X)
    Y = X.copy()
    Y.loc[:4, "city"] = "atlantis"
    Y.loc[:4, "plan"] = "never-seen"
    got = convert_column_transformer(ct).transform(Y)
    np.testing.assert_array_equal(got, ct.transform(Y))
    assert (got[:5, -1] == -7).all()


def realistic():
    return ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
             ["age", "income"]),
            ("city", OneHotEncoder(sparse_output=False, handle_unknown="ignore"), ["city"]),
            ("plan", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
             ["plan"]),
        ]
    )


def test_realistic_from_frame_records_dict_and_reordered():
    X = string_frame()
    ct = realistic().fit(X)
    want = ct.transform(X)
    model = convert_column_transformer(ct)
    np.testing.assert_allclose(model.transform(X), want, rtol=1e-6, atol=1e-9)
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
               for r in X.to_dict("records")]
    np.testing.assert_allclose(model.transform(records), want, rtol=1e-6, atol=1e-9)
    columns = {k: X[k].tolist() for k in reversed(X.columns)}
    np.testing.assert_allclose(model.transform(columns), want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.transform(X[X.columns[::-1]]), want, rtol=1e-6,
                               atol=1e-9)


def test_remainder_passthrough_by_index():
    X = string_frame()[["age", "income", "city"]]
    ct = ColumnTransformer(
        [("city", OneHotEncoder(sparse_output=False), [2])], remainder="passthrough"
    ).fit(X)
    np.testing.assert_allclose(convert_column_transformer(ct).transform(X), ct.transform(X))


def test_missing_column_is_named():
    X = string_frame()
    model = convert_column_transformer(realistic().fit(X))
    with pytest.raises(ValueError, match="'plan'"):
        model.transform(X.drop(columns=["plan"]))
    with pytest.raises(ValueError, match="'city'"):
        model.transform([{"age": 1.0, "income": 2.0, "plan": "p1"}])


def test_unknown_category_with_handle_unknown_error_raises():
    X = string_frame()
    ct = ColumnTransformer([("cat", OneHotEncoder(sparse_output=False), ["city"])]).fit(X)
    with pytest.raises(ValueError, match="unknown category"):
        convert_column_transformer(ct).transform(pd.DataFrame({"city": ["atlantis"]}))


def test_wrong_typed_string_value_names_column_and_row():
    X = string_frame()
    model = convert_column_transformer(realistic().fit(X))
    Y = X.head(3).copy()
    Y["city"] = Y["city"].astype(object)
    Y.loc[1, "city"] = 12
    with pytest.raises(ValueError, match="row 1"):
        model.transform(Y)


def test_unsupported_step_names_it():
    from sklearn.preprocessing import QuantileTransformer

    X = string_frame()
    ct = ColumnTransformer([("q", QuantileTransformer(n_quantiles=10), ["age"])]).fit(X)
    with pytest.raises(mlserve.ConvertError, match="QuantileTransformer"):
        convert_column_transformer(ct)


def cats(values):
    b = [v.encode() for v in values]
    return b"".join(b), np.concatenate([[0], np.cumsum([len(x) for x in b])]).astype(np.int64)


@pytest.mark.parametrize(
    "op, message",
    [
        ((0, 5, 0, 0, 1, 0, -1, None, None, 0, 0), "input column 5"),
        ((0, 0, 9, 0, 1, 0, -1, None, None, 0, 0), "output columns 9"),
        ((0, 0, 0, 0, 1, 0, 7, None, None, 0, 0), "indicator column 7"),
        ((1, 1, 0, 0, 1, 0, -1, b"ab", np.array([0, 1, 9]), 0, 0), "past the 2 bytes"),
        ((1, 1, 0, 0, 1, 0, -1, b"ab", np.array([0, 2, 1]), 0, 0), "out of order"),
        ((1, 1, 0, 0, 1, 0, -1, b"ab", np.array([1, 2]), 0, 0), "start at 0"),
        ((2, 1, 0, 0, 1, 0, -1, *cats(["a", "b", "c"]), 0, 0), None),
        ((1, 1, 0, 0, 1, 0, -1, *cats(["a", "b", "c"]), 0, 0), "output columns 0"),
        ((1, 0, 0, 0, 1, 0, -1, *cats(["a"]), 0, 0), "not a string column"),
        ((0, 1, 0, 0, 1, 0, -1, None, None, 0, 0), "not numeric"),
        ((9, 0, 0, 0, 1, 0, -1, None, None, 0, 0), "unknown kind 9"),
    ],
)
def test_corrupt_transform_tables_give_errors(op, message):
    columns = [np.array([1.0, 2.0]), np.array(["a", None], dtype=object)]
    if message is None:
        np.testing.assert_array_equal(_core.transform_apply([op], columns, 2)[:, 0], [0, 0])
        return
    with pytest.raises((mlserve.ModelFormatError, TypeError, ValueError), match=message):
        _core.transform_apply([op], columns, 2)
    with pytest.raises((mlserve.ModelFormatError, TypeError, ValueError), match=message):
        _core.transform_apply(_core.transform_plan([op]), columns, 2)  # tables built once


def test_transform_plan_is_reused_and_checked():
    op = (2, 1, 0, 0, 1, 0, -1, *cats(["a", "b", "c"]), 0, -1.0)
    plan = _core.transform_plan([op])
    for values in (["c", None, "zz"], ["a"], []):
        got = _core.transform_apply(plan, [np.zeros(len(values)),
                                           np.array(values, dtype=object)], 1)
        want = [{"a": 0, "b": 1, "c": 2}.get(v, -1) for v in values]
        np.testing.assert_array_equal(got[:, 0], want)
    with pytest.raises(TypeError):
        _core.transform_plan("not a list")
    import datetime

    with pytest.raises(ValueError):  # a capsule of another kind is refused, not used
        _core.transform_apply(datetime.datetime_CAPI, [], 1)


def test_category_string_and_nullable_dtypes():
    X = string_frame()
    ct = realistic().fit(X)
    Y = X.copy()
    Y["age"] = Y["age"].astype("Float64")
    Y["city"] = Y["city"].astype("category")
    Y["plan"] = Y["plan"].astype("string")
    np.testing.assert_allclose(convert_column_transformer(ct).transform(Y), ct.transform(X),
                               rtol=1e-6, atol=1e-9)


# mlserve.convert(Pipeline | ColumnTransformer): the C transform then the converted final model


def labelled(n=300, seed=1):
    X = frame(n, seed)
    X["city"] = X["city"].fillna("unknown")
    rng = np.random.default_rng(seed)
    score = (np.nan_to_num(X["age"].to_numpy(), nan=40.0) / 10
             + (X["city"] == "paris") * 2.0 + rng.normal(0, 0.5, n))
    return X, score, (score > np.median(score)).astype(int), np.digitize(score, [4.5, 5.5])


def unseen(X):
    Y = X.head(20).copy()
    Y.loc[Y.index[:5], "city"] = "atlantis"
    Y.loc[Y.index[3:8], "plan"] = "p999"
    Y.loc[Y.index[6:10], "age"] = np.nan
    return Y


def as_records(X):
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in X.to_dict("records")]


def sk_pipeline(final):
    from sklearn.pipeline import Pipeline

    return Pipeline([("prep", realistic()), ("model", final)])


def check_methods(pipe, model, X, methods):
    for method in methods:
        want = getattr(pipe, method)(X)
        columns = {k: X[k].tolist() for k in reversed(X.columns)}
        for given in (X, as_records(X), X[X.columns[::-1]], columns):
            got = getattr(model, method)(given)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9, err_msg=method)


@pytest.mark.parametrize("final", ["linear", "ridge"])
def test_convert_pipeline_regressor_matches_sklearn(final):
    from sklearn.linear_model import LinearRegression, Ridge

    X, y, _, _ = labelled()
    pipe = sk_pipeline(LinearRegression() if final == "linear" else Ridge(alpha=0.7)).fit(X, y)
    model = mlserve.convert(pipe)
    check_methods(pipe, model, X, ["predict"])
    check_methods(pipe, model, unseen(X), ["predict"])
    assert list(model.feature_names_in_) == list(X.columns)


@pytest.mark.parametrize("multiclass", [False, True])
def test_convert_pipeline_logistic_matches_sklearn(multiclass):
    from sklearn.linear_model import LogisticRegression

    X, _, y2, y3 = labelled()
    y = y3 if multiclass else y2
    pipe = sk_pipeline(LogisticRegression(max_iter=2000)).fit(X, y)
    model = mlserve.convert(pipe)
    methods = ["predict_proba", "decision_function", "predict"]
    check_methods(pipe, model, X, methods)
    check_methods(pipe, model, unseen(X), methods)
    np.testing.assert_array_equal(model.classes_, pipe.classes_)


def test_convert_pipeline_string_labels_and_float32():
    from sklearn.linear_model import LogisticRegression

    X, _, y2, _ = labelled()
    labels = np.where(y2 == 1, "churn", "stay")
    pipe = sk_pipeline(LogisticRegression(max_iter=2000)).fit(X, labels)
    model = mlserve.convert(pipe)
    np.testing.assert_array_equal(model.predict(as_records(X)), pipe.predict(X))
    small = mlserve.convert(pipe, dtype=np.float32)
    np.testing.assert_allclose(small.predict_proba(X), pipe.predict_proba(X), rtol=1e-4,
                               atol=1e-5)


def test_convert_column_transformer_matches_sklearn():
    X, _, _, _ = labelled()
    ct = realistic().fit(X)
    model = mlserve.convert(ct)
    for given in (unseen(X), as_records(unseen(X))):
        np.testing.assert_allclose(model.transform(given), ct.transform(unseen(X)),
                                   rtol=1e-6, atol=1e-9)


def test_convert_pipeline_missing_column_is_named():
    from sklearn.linear_model import LinearRegression

    X, y, _, _ = labelled()
    model = mlserve.convert(sk_pipeline(LinearRegression()).fit(X, y))
    with pytest.raises(ValueError, match="'income'"):
        model.predict(X.drop(columns=["income"]))
    with pytest.raises(AttributeError, match="predict_proba"):
        model.predict_proba(X)


def test_convert_pipeline_unsupported_final_step_names_it():
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVR

    X, y, _, _ = labelled()
    with pytest.raises(mlserve.ConvertError, match=r"'model' \(SVR\)"):
        mlserve.convert(sk_pipeline(SVR()).fit(X, y))
    num = X[["age", "income"]].fillna(0.0)
    from sklearn.linear_model import LinearRegression

    pipe = Pipeline([("scale", StandardScaler()), ("model", LinearRegression())]).fit(num, y)
    with pytest.raises(mlserve.ConvertError, match=r"'scale' \(StandardScaler\)"):
        mlserve.convert(pipe)
    pipe = Pipeline([("prep", realistic()), ("scale", StandardScaler()),
                     ("model", LinearRegression())]).fit(X, y)
    with pytest.raises(mlserve.ConvertError, match="StandardScaler"):
        mlserve.convert(pipe)
    with pytest.raises(mlserve.ConvertError, match="not fitted"):
        mlserve.convert(sk_pipeline(LinearRegression()))


@pytest.mark.parametrize("final", ["forest", "gb", "tree"])
def test_convert_pipeline_tree_final_matches_sklearn(final):
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    X, y, _, y3 = labelled()
    if final == "gb":
        pipe = sk_pipeline(GradientBoostingRegressor(n_estimators=20, random_state=0)).fit(X, y)
        methods = ["predict"]
    else:
        est = (RandomForestClassifier(n_estimators=10, random_state=0) if final == "forest"
               else DecisionTreeClassifier(max_depth=6, random_state=0))
        pipe = sk_pipeline(est).fit(X, y3)
        methods = ["predict_proba", "predict"]
    model = mlserve.convert(pipe)
    check_methods(pipe, model, X, methods)
    check_methods(pipe, model, unseen(X), methods)


def test_convert_pipeline_saves_to_one_file(tmp_path):
    """Step 2 stores a pipeline as one .mls (kind 7); see tests/test_pipeline_file.py."""
    from sklearn.linear_model import LinearRegression

    X, y, _, _ = labelled()
    pipe = sk_pipeline(LinearRegression()).fit(X, y)
    mlserve.save(mlserve.convert(pipe), tmp_path / "p.mls")
    mlserve.save(mlserve.convert(pipe.named_steps["prep"]), tmp_path / "c.mls")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mls", "p.mls"]
    np.testing.assert_allclose(mlserve.load(tmp_path / "p.mls").predict(X), pipe.predict(X),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(mlserve.load(tmp_path / "c.mls").transform(X),
                               pipe.named_steps["prep"].transform(X), rtol=1e-6, atol=1e-9)


def test_convert_pipeline_edge_rows_match_sklearn():
    """One row, a row whose every value is missing or unseen, and one record as a dict."""
    from sklearn.linear_model import LogisticRegression

    X, _, y2, _ = labelled()
    pipe = sk_pipeline(LogisticRegression(max_iter=2000)).fit(X, y2)
    model = mlserve.convert(pipe)
    methods = ["predict_proba", "decision_function", "predict"]
    check_methods(pipe, model, X.head(1), methods)
    empty = X.head(1).copy()
    empty.loc[empty.index[0], ["age", "income"]] = np.nan
    empty.loc[empty.index[0], ["city", "plan"]] = "never-seen"
    check_methods(pipe, model, empty, methods)
    record = as_records(X.head(1))[0]
    np.testing.assert_allclose(model.predict_proba([record]), pipe.predict_proba(X.head(1)),
                               rtol=1e-6, atol=1e-9)  # fmt: skip
