"""Pipelines as one .mls file (issue 14, step 2; MLS_KIND_PIPELINE = 7): save/load
round trip, the input schema in the file, `mlserve info`, the store, and corrupt
or truncated sections refused with a reason (csrc/mls_pipeline.c)."""
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from trees_support import patch_section

import mlserve
from mlserve import _core
from mlserve.cli import main as cli_main


def frame(n=300, seed=3):
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n)
    age[rng.random(n) < 0.15] = np.nan
    income = rng.lognormal(10, 1, n)
    city = rng.choice(["paris", "lyon", "nîmes", "brest"], n).astype(object)
    city[rng.random(n) < 0.1] = None
    plan = rng.choice([f"p{i}" for i in range(40)], n).astype(object)
    X = pd.DataFrame({"age": age, "income": income, "city": city, "plan": plan})
    score = np.nan_to_num(age, nan=40) / 10 + (city == "paris") + rng.normal(0, 0.5, n)
    return X, (score > np.median(score)).astype(int), score


def prep():
    return ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
         ["age", "income"]),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                              OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
         ["city", "plan"]),
    ])


@pytest.fixture(scope="module")
def fitted():
    X, y, _ = frame()
    pipe = Pipeline([("prep", prep()), ("clf", LogisticRegression(max_iter=2000))]).fit(X, y)
    return X, pipe, mlserve.convert(pipe)


def unseen(X):
    Y = X.head(20).copy()
    Y.loc[Y.index[:5], "city"] = "atlantis"
    Y.loc[Y.index[5:8], "plan"] = None
    return Y


def test_imputed_string_columns_match_sklearn(fitted):
    X, pipe, model = fitted
    for data in (X, unseen(X)):
        np.testing.assert_allclose(model.predict_proba(data), pipe.predict_proba(data),
                                   rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(model.predict(data), pipe.predict(data))
        np.testing.assert_allclose(model.transform(data), pipe[0].transform(data),
                                   rtol=1e-6, atol=1e-9)


def test_save_load_round_trip_is_identical(fitted, tmp_path):
    X, pipe, model = fitted
    path = tmp_path / "churn.mls"
    mlserve.save(model, path)
    loaded = mlserve.load(path)
    assert isinstance(loaded, mlserve.PipelineModel)
    assert loaded.model_.mapping is not None  # arrays used in place from the file
    for method in ("predict", "predict_proba", "decision_function", "transform"):
        for data in (X, unseen(X)):
            np.testing.assert_array_equal(getattr(loaded, method)(data),
                                          getattr(model, method)(data))
    assert loaded.input_schema == model.input_schema
    assert loaded.steps == model.steps
    np.testing.assert_array_equal(loaded.classes_, pipe.classes_)
    np.testing.assert_array_equal(list(loaded.feature_names_in_), ["age", "income", "city",
                                                                   "plan"])


def test_input_schema_names_kinds_and_categories(fitted):
    _, pipe, model = fitted
    schema = {c["name"]: c for c in model.input_schema}
    assert [c["name"] for c in model.input_schema] == ["age", "income", "city", "plan"]
    assert schema["age"] == {"name": "age", "kind": "numeric", "categories": None}
    enc = pipe[0].named_transformers_["cat"][-1]
    assert schema["city"]["kind"] == "string"
    assert schema["city"]["categories"] == list(enc.categories_[0])
    assert "missing" in schema["city"]["categories"]  # the imputer's fill is a category
    assert schema["plan"]["categories"] == list(enc.categories_[1])
    assert model.metadata["input_schema"] == model.input_schema


def test_records_one_record_and_dict_of_columns(fitted):
    X, pipe, model = fitted
    want = pipe.predict_proba(X.head(5))
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
               for r in X.head(5).to_dict("records")]
    np.testing.assert_allclose(model.predict_proba(records), want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.predict_proba(records[0]), want[:1], rtol=1e-6,
                               atol=1e-9)
    cols = {k: X.head(5)[k].tolist() for k in reversed(X.columns)}
    np.testing.assert_allclose(model.predict_proba(cols), want, rtol=1e-6, atol=1e-9)


def test_wrong_types_name_column_and_row(fitted):
    _, _, model = fitted
    records = [{"age": 30.0, "income": 1.0, "city": "paris", "plan": "p1"},
               {"age": "old", "income": 1.0, "city": "paris", "plan": "p1"}]
    with pytest.raises(ValueError, match=r"column 'age', row 1: expected a number, got str"):
        model.predict(records)
    records[1] = {"age": 3.0, "income": 1.0, "city": 7, "plan": "p1"}
    with pytest.raises(ValueError, match=r"column 'city', row 1: expected a string, got int"):
        model.predict(records)
    with pytest.raises(ValueError, match="row 0 is missing column 'plan'"):
        model.predict([{"age": 1.0, "income": 1.0, "city": "x"}])


def test_bare_column_transformer_round_trip(tmp_path):
    X, _, _ = frame()
    ct = prep().fit(X)
    model = mlserve.convert(ct)
    mlserve.save(model, tmp_path / "ct.mls")
    loaded = mlserve.load(tmp_path / "ct.mls")
    np.testing.assert_allclose(loaded.transform(X), ct.transform(X), rtol=1e-6, atol=1e-9)
    with pytest.raises(AttributeError, match="has no predict"):
        loaded.predict(X)


def test_regressor_and_tree_finals_round_trip(tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    X, y, score = frame()
    for final, target, methods in (
            (LinearRegression(), score, ["predict"]),
            (RandomForestClassifier(n_estimators=8, random_state=0), y,
             ["predict", "predict_proba"])):
        pipe = Pipeline([("prep", prep()), ("final", final)]).fit(X, target)
        mlserve.save(mlserve.convert(pipe), tmp_path / "m.mls")
        loaded = mlserve.load(tmp_path / "m.mls")
        for m in methods:
            np.testing.assert_allclose(getattr(loaded, m)(X), getattr(pipe, m)(X), rtol=1e-6,
                                       atol=1e-9)


def test_info_shows_steps_and_schema(fitted, tmp_path):
    _, _, model = fitted
    mlserve.save(model, tmp_path / "p.mls")
    result = CliRunner().invoke(cli_main, ["info", str(tmp_path / "p.mls")])
    assert result.exit_code == 0, result.output
    assert "prep (ColumnTransformer)" in result.output
    assert "num: SimpleImputer -> StandardScaler on age, income" in result.output
    assert "cat: SimpleImputer -> OneHotEncoder on city, plan" in result.output
    assert "clf (LogisticRegression)" in result.output
    assert "input schema:" in result.output
    assert "brest, lyon, missing, nîmes, paris" in result.output
    as_json = CliRunner().invoke(cli_main, ["info", "--json", str(tmp_path / "p.mls")])
    assert json.loads(as_json.output)["input_schema"] == model.input_schema


def test_store_publishes_and_compares_the_input_schema(fitted, tmp_path):
    X, pipe, model = fitted
    store = mlserve.ModelStore(tmp_path / "store")
    mlserve.save(model, tmp_path / "v1.mls")
    store.publish("churn", tmp_path / "v1.mls", alias="production")
    served = store.get("churn", alias="production")
    np.testing.assert_allclose(served.predict_proba(X), pipe.predict_proba(X), rtol=1e-6,
                               atol=1e-9)
    # the same columns, but 'paris' and others are unknown to the candidate
    Y = X.copy()
    Y["city"] = Y["city"].replace({"paris": "lyon"})
    y = (np.nan_to_num(Y["age"], nan=40) > 40).astype(int)
    other = Pipeline([("prep", prep()), ("clf", LogisticRegression(max_iter=2000))]).fit(Y, y)
    mlserve.save(mlserve.convert(other), tmp_path / "v2.mls")
    with pytest.raises(mlserve.store.IncompatibleModelError,
                       match="does not know categories \\['paris'\\] of column 'city'"):
        store.publish("churn", tmp_path / "v2.mls", alias="production")
    # a column that changed kind
    Z = X.copy()
    Z["plan"] = np.arange(len(Z), dtype=float)
    third = Pipeline([("prep", ColumnTransformer([
        ("num", SimpleImputer(), ["age", "income", "plan"]),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["city"])])),
        ("clf", LogisticRegression(max_iter=2000))]).fit(Z.fillna({"city": "x"}), y)
    mlserve.save(mlserve.convert(third), tmp_path / "v3.mls")
    with pytest.raises(mlserve.store.IncompatibleModelError,
                       match="takes column 'plan' as numeric, production as string"):
        store.publish("churn", tmp_path / "v3.mls", alias="production")


# ---------------------------------------------------------------- corrupt sections

def sections(model):
    return {k: np.array(v) for k, v in model.model_.arrays().items()}


def ops_with(model, row, col, value):
    a = sections(model)["pipe.ops"]
    a[row, col] = value
    return a


def header_with(model, i, value):
    a = sections(model)["pipe.header"]
    a[i] = value
    return a


CORRUPT = [
    ("pipe.header", lambda m: None, "section 'pipe.header' is missing"),
    ("pipe.header", lambda m: header_with(m, 4, 2), "layout version 2"),
    ("pipe.header", lambda m: header_with(m, 0, 99), "section 'pipe.columns' has the wrong"),
    ("pipe.header", lambda m: header_with(m, 1, 3), "past the 3 outputs"),
    ("pipe.header", lambda m: header_with(m, 2, 7), "final model kind 7"),
    ("pipe.header", lambda m: header_with(m, 2, 99), "final model kind 99"),
    ("pipe.header", lambda m: header_with(m, 3, 1 << 40), "section 'pipe.ops' has the wrong"),
    ("pipe.header", lambda m: header_with(m, 0, -1), "-1 inputs"),
    ("pipe.columns", lambda m: np.array([0, 0, 2, 1]), "column 2 has kind 2"),
    ("pipe.columns", lambda m: np.array([0, 0, 0, 1]), "input column 2 is not a string"),
    ("pipe.columns", lambda m: np.array([1, 0, 1, 1]), "input column 0 is not numeric"),
    ("pipe.ops", lambda m: ops_with(m, 0, 0, 9), "op 0 has kind 9"),
    ("pipe.ops", lambda m: ops_with(m, 0, 1, 4), "input column 4 outside 0..3"),
    ("pipe.ops", lambda m: ops_with(m, 0, 1, -5), "input column -5"),
    ("pipe.ops", lambda m: ops_with(m, 0, 3, 10**6), "indicator column 1000000"),
    ("pipe.ops", lambda m: ops_with(m, 3, 2, 10**6), "output columns 1000000"),
    ("pipe.ops", lambda m: ops_with(m, 3, 5, 10**9), "1000000000 categories"),
    ("pipe.ops", lambda m: ops_with(m, 3, 5, -1), "-1 categories"),
    ("pipe.ops", lambda m: ops_with(m, 3, 6, 1 << 62), "past the"),
    ("pipe.ops", lambda m: ops_with(m, 3, 7, 1 << 62), "past the"),
    ("pipe.ops", lambda m: ops_with(m, 3, 7, 10**6), "past the"),
    ("pipe.ops", lambda m: ops_with(m, 3, 4, 5), "unknown mode 5"),
    ("pipe.missing", lambda m: np.array([-1, -1, 10**6, -1]), "missing category 1000000"),
    ("pipe.ops", lambda m: ops_with(m, 3, 8, 10**6), "category map from 1000000 past"),
    ("pipe.ops", lambda m: ops_with(m, 3, 8, -7), "category map from -7 past"),
    ("pipe.ops", lambda m: ops_with(m, 3, 10, 2), "unknown column without a category map"),
    ("pipe.cat_out", lambda m: None, "section 'pipe.cat_out' is missing"),
    ("pipe.ops", lambda m: ops_with(m, 0, 11, 99), "op 0 has function 99"),
    ("pipe.ops", lambda m: ops_with(m, 0, 11, -1), "op 0 has function -1"),
    ("pipe.cat_offsets", lambda m: sections(m)["pipe.cat_offsets"][:3],
     "past the 3 offsets"),
    ("pipe.cat_offsets", lambda m: sections(m)["pipe.cat_offsets"][::-1].copy(),
     "start at 0|out of order"),
    ("pipe.cat_bytes", lambda m: sections(m)["pipe.cat_bytes"][:4], "past the"),
    ("pipe.params", lambda m: np.zeros((4, 3)), "section 'pipe.params' has the wrong"),
    ("final.coef", lambda m: None, "coef"),
    ("final.coef", lambda m: np.zeros((1, 3)), "features"),
    ("pipe.extra", lambda m: np.zeros(2), "unexpected section 'pipe.extra'"),
    ("other", lambda m: np.zeros(2), "unexpected section 'other'"),
]


@pytest.mark.parametrize("name, make, message", CORRUPT, ids=[c[2][:30] for c in CORRUPT])
def test_corrupt_sections_are_refused_with_the_reason(fitted, name, make, message):
    _, _, model = fitted
    arrays = sections(model)
    value = make(model)
    if value is None:
        arrays.pop(name)
    else:
        arrays[name] = value
    with pytest.raises((ValueError, TypeError, mlserve.ModelFormatError), match=message):
        _core.create("pipeline", arrays, model.model_.metadata)


def test_corrupt_file_sections_are_format_errors(fitted, tmp_path):
    _, _, model = fitted
    path = tmp_path / "p.mls"
    mlserve.save(model, path)
    ops = sections(model)["pipe.ops"]
    ops[3, 6] = 1 << 62  # offsets far past the section
    patch_section(path, "pipe.ops", ops.tobytes())
    with pytest.raises(mlserve.ModelFormatError, match="past the"):
        mlserve.load(path)
    mlserve.save(model, path)
    patch_section(path, "pipe.ops", ops.tobytes(), fix_checksums=False)
    with pytest.raises(mlserve.ModelFormatError):
        mlserve.load(path)
    data = path.read_bytes()
    for cut in (10, 200, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.mls").write_bytes(data[:cut])
        with pytest.raises(mlserve.ModelFormatError):
            mlserve.load(tmp_path / "cut.mls")


def test_numeric_matrix_refused_for_string_columns(fitted):
    _, _, model = fitted
    with pytest.raises(TypeError, match="string columns"):
        model.model_.predict(np.zeros((2, 4)))


def test_many_rows_go_through_in_chunks_like_sklearn():
    """Rows pass in cache-sized chunks (csrc/mls_pipeline.c): parity across chunk edges,
    and an error's row counts from the first row of the batch."""
    X, y, _ = frame(n=3000, seed=8)
    pipe = Pipeline([("prep", ColumnTransformer([
        ("num", SimpleImputer(), ["age", "income"]),
        ("cat", OneHotEncoder(sparse_output=False), ["plan"])])),
        ("clf", LogisticRegression(max_iter=2000))]).fit(X.fillna({"city": "x"}), y)
    model = mlserve.convert(pipe)
    big = pd.concat([X] * 4, ignore_index=True)  # 12 000 rows, 42 outputs: 780 per chunk
    np.testing.assert_allclose(model.predict_proba(big), pipe.predict_proba(big), rtol=1e-6,
                               atol=1e-9)
    big.loc[9000, "plan"] = "never-seen"
    with pytest.raises(ValueError, match="row 9000, input column 2: unknown category"):
        model.predict_proba(big)


def test_a_thousand_calls_do_not_leak(fitted):
    from memory_support import steady_rss_growth

    X, _, model = fitted
    record = {"age": 30.0, "income": 1.0, "city": "paris", "plan": "p1"}
    head = X.head(3)

    def calls():
        for _ in range(1000):
            model.predict_proba(record)  # records decoded in C
            model.predict(head)  # columns

    assert steady_rss_growth(calls) < 2 << 20


# ---------------------------------------------------------------- more steps (step 4)

def test_none_as_a_onehot_category_matches_sklearn(tmp_path):
    """A missing value in the training column is a category of OneHotEncoder (scikit-learn
    stores it as NaN): NaN takes its column, other unseen values are all zeros. mlserve
    reads None as missing too (JSON's null), so a record with None gets NaN's answer."""
    X, y, _ = frame()
    ct = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore",
                                                  sparse_output=False), ["city"])])
    pipe = Pipeline([("prep", ct), ("clf", LogisticRegression(max_iter=2000))]).fit(X, y)
    assert any(not isinstance(c, str) for c in pipe[0].named_transformers_["cat"]
               .categories_[0])
    model = mlserve.convert(pipe)
    Y = X.head(8).copy()
    Y["city"] = Y["city"].astype(object)
    Y.loc[Y.index[0], "city"] = np.nan
    Y.loc[Y.index[2], "city"] = "atlantis"
    for data in (X, Y):
        np.testing.assert_array_equal(model.transform(data), pipe[0].transform(data))
        np.testing.assert_allclose(model.predict_proba(data), pipe.predict_proba(data),
                                   rtol=1e-6, atol=1e-9)
    record = {"age": 1.0, "income": 1.0, "city": None, "plan": "p1"}
    np.testing.assert_allclose(model.predict_proba(record), pipe.predict_proba(Y.head(1)),
                               rtol=1e-6, atol=1e-9)
    mlserve.save(model, tmp_path / "m.mls")
    np.testing.assert_array_equal(mlserve.load(tmp_path / "m.mls").transform(Y),
                                  pipe[0].transform(Y))
    assert None not in model.input_schema[0]["categories"]


def test_none_as_an_ordinal_category_is_a_convert_error():
    from sklearn.preprocessing import OrdinalEncoder

    X, _, _ = frame()
    ct = ColumnTransformer([("cat", OrdinalEncoder(), ["city"])]).fit(X)
    with pytest.raises(mlserve.ConvertError, match="OrdinalEncoder.*OneHotEncoder only"):
        mlserve.convert(ct)


def test_kmeans_final_step_matches_sklearn(tmp_path):
    from sklearn.cluster import KMeans

    X, _, _ = frame()
    pipe = Pipeline([("prep", prep()), ("km", KMeans(n_clusters=4, n_init=3,
                                                     random_state=0))]).fit(X)
    model = mlserve.convert(pipe)
    mlserve.save(model, tmp_path / "km.mls")
    for m in (model, mlserve.load(tmp_path / "km.mls")):
        for data in (X, unseen(X)):
            np.testing.assert_array_equal(m.predict(data), pipe.predict(data))
            np.testing.assert_allclose(m.transform(data), pipe.transform(data), rtol=1e-6,
                                       atol=1e-9)
        assert m.cluster_centers_.shape[0] == 4


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_mlp_final_step_matches_sklearn(task, tmp_path):
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    X, y, score = frame()
    if task == "regression":
        final, target = MLPRegressor(hidden_layer_sizes=(8,), max_iter=300, random_state=0), score
    else:
        target = y if task == "binary" else np.digitize(score, [3.5, 4.5])
        final = MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the fit is not the point
        pipe = Pipeline([("prep", prep()), ("mlp", final)]).fit(X, target)
    model = mlserve.convert(pipe)
    mlserve.save(model, tmp_path / "mlp.mls")
    loaded = mlserve.load(tmp_path / "mlp.mls")
    for m in (model, loaded):
        for data in (X, unseen(X)):
            # the C graph computes in float32, as mlserve's converted MLPs do
            np.testing.assert_allclose(m.predict(data) if task == "regression"
                                       else m.predict_proba(data),
                                       pipe.predict(data) if task == "regression"
                                       else pipe.predict_proba(data), rtol=1e-4, atol=1e-5)
            if task != "regression":
                agree = (m.predict(data) == pipe.predict(data)).mean()
                assert agree >= 0.99


ONEHOTS = {
    "drop_first": {"drop": "first"},
    "drop_if_binary": {"drop": "if_binary"},
    "drop_first_ignore": {"drop": "first", "handle_unknown": "ignore"},
    "min_frequency": {"min_frequency": 12, "handle_unknown": "infrequent_if_exist"},
    "min_frequency_ignore": {"min_frequency": 0.05, "handle_unknown": "ignore"},
    "max_categories": {"max_categories": 6, "handle_unknown": "infrequent_if_exist"},
    "max_categories_drop": {"max_categories": 6, "drop": "first"},
    "infrequent_none": {"handle_unknown": "infrequent_if_exist"},
}


@pytest.mark.parametrize("options", list(ONEHOTS))
def test_onehot_drop_and_infrequent_match_sklearn(options, tmp_path):
    import warnings

    X, y, _ = frame()
    X = X.fillna({"city": "none"})
    X["binary"] = np.where(X["age"].fillna(0) > 40, "old", "young").astype(object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # drop + ignore warns that unknowns look like dropped
        enc = OneHotEncoder(sparse_output=False, **ONEHOTS[options])
        pipe = Pipeline([("prep", ColumnTransformer([
            ("num", SimpleImputer(), ["age"]),
            ("cat", enc, ["city", "plan", "binary"])])),
            ("clf", LogisticRegression(max_iter=3000))]).fit(X, y)
    model = mlserve.convert(pipe)
    mlserve.save(model, tmp_path / "m.mls")
    loaded = mlserve.load(tmp_path / "m.mls")
    Y = X.head(30).copy()
    if enc.handle_unknown != "error":
        Y.loc[Y.index[:4], "city"] = "atlantis"
        Y.loc[Y.index[4:6], "plan"] = "p-unseen"
    for m in (model, loaded):
        for data in (X, Y):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scikit-learn: unknown categories warning
                want_t, want_p = pipe[0].transform(data), pipe.predict_proba(data)
            np.testing.assert_array_equal(m.transform(data), want_t)
            np.testing.assert_allclose(m.predict_proba(data), want_p, rtol=1e-6, atol=1e-9)


def test_corrupt_category_map_is_refused():
    X, y, _ = frame()
    pipe = Pipeline([("prep", ColumnTransformer([
        ("cat", OneHotEncoder(drop="first", sparse_output=False), ["plan"])])),
        ("clf", LogisticRegression(max_iter=2000))]).fit(X, y)
    model = mlserve.convert(pipe)
    for index, value, message in ((0, 999, "goes to column 999"), (1, -2, "goes to column -2")):
        arrays = sections(model)
        arrays["pipe.cat_out"][index] = value
        with pytest.raises(ValueError, match=message):
            _core.create("pipeline", arrays, model.model_.metadata)
    arrays = sections(model)
    arrays["pipe.ops"][0, 10] = 10**6  # the unknown value's column
    with pytest.raises(ValueError, match="unknown column 1000000 out of range"):
        _core.create("pipeline", arrays, model.model_.metadata)


@pytest.mark.parametrize("projection", ["pca", "pca_whiten", "svd"])
def test_pca_and_truncated_svd_steps_match_sklearn(projection, tmp_path):
    from sklearn.decomposition import PCA, TruncatedSVD

    X, y, _ = frame()
    step = {"pca": PCA(n_components=5), "pca_whiten": PCA(n_components=4, whiten=True),
            "svd": TruncatedSVD(n_components=6, random_state=0)}[projection]
    pipe = Pipeline([("prep", prep()), ("proj", step),
                     ("clf", LogisticRegression(max_iter=2000))]).fit(X, y)
    model = mlserve.convert(pipe)
    mlserve.save(model, tmp_path / "p.mls")
    for m in (model, mlserve.load(tmp_path / "p.mls")):
        for data in (X, unseen(X)):
            np.testing.assert_allclose(m.transform(data), pipe[:-1].transform(data), rtol=1e-6,
                                       atol=1e-9)
            np.testing.assert_allclose(m.predict_proba(data), pipe.predict_proba(data),
                                       rtol=1e-6, atol=1e-9)
    assert [s["class"] for s in model.steps] == ["ColumnTransformer", type(step).__name__,
                                                 "LogisticRegression"]
    bare = mlserve.convert(Pipeline([("prep", prep()), ("proj", step)]).fit(X))
    np.testing.assert_allclose(bare.transform(X), pipe[:-1].transform(X), rtol=1e-6,
                               atol=1e-9)
    arrays = sections(model)
    arrays["pipe.proj_weights"] = arrays["pipe.proj_weights"][:, :3]
    with pytest.raises(ValueError, match="pipe.proj_weights' has the wrong"):
        _core.create("pipeline", arrays, model.model_.metadata)
    arrays = sections(model)
    del arrays["pipe.proj_mean"]
    with pytest.raises(ValueError, match="come together"):
        _core.create("pipeline", arrays, model.model_.metadata)


@pytest.mark.parametrize("ufunc", ["log1p", "log", "sqrt", "square", "tanh", "absolute",
                                   "expm1"])
def test_function_transformer_ufuncs_match_sklearn(ufunc, tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    X, y, _ = frame()
    f = getattr(np, ufunc)
    scale = 1e-4 if ufunc in ("expm1", "tanh", "square") else 1.0  # keep exp/square finite
    X = X.assign(income=X["income"] * scale)
    num = make_pipeline(SimpleImputer(strategy="median"), FunctionTransformer(f),
                        StandardScaler())
    pipe = Pipeline([("prep", ColumnTransformer([
        ("num", num, ["age", "income"]),
        ("lone", FunctionTransformer(f), ["income"]),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["plan"])])),
        ("clf", LogisticRegression(max_iter=3000))])
    with np.errstate(all="ignore"):
        pipe.fit(X.assign(age=X["age"].abs()), y)
    model = mlserve.convert(pipe)
    mlserve.save(model, tmp_path / "f.mls")
    data = X.assign(age=X["age"].abs())
    for m in (model, mlserve.load(tmp_path / "f.mls")):
        np.testing.assert_allclose(m.transform(data), pipe[0].transform(data), rtol=1e-6,
                                   atol=1e-9)
        np.testing.assert_allclose(m.predict_proba(data), pipe.predict_proba(data), rtol=1e-6,
                                   atol=1e-9)


def test_function_transformer_of_other_functions_is_a_convert_error():
    from sklearn.preprocessing import FunctionTransformer

    X, _, _ = frame()
    for func, message in ((lambda v: v * 2, "func '<lambda>' is not a numpy ufunc"),
                          (np.sin, "func 'sin' is not a numpy ufunc")):
        ct = ColumnTransformer([("f", FunctionTransformer(func), ["income"])]).fit(X)
        with pytest.raises(mlserve.ConvertError, match=message):
            mlserve.convert(ct)
    ct = ColumnTransformer([("f", FunctionTransformer(np.log1p, kw_args={"out": None}),
                             ["income"])]).fit(X)
    with pytest.raises(mlserve.ConvertError, match="kw_args"):
        mlserve.convert(ct)


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_normalizer_step_matches_sklearn(norm, tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import Normalizer

    X, y, _ = frame()
    pipe = Pipeline([("prep", prep()), ("norm", Normalizer(norm=norm)),
                     ("pca", PCA(n_components=3)),
                     ("clf", LogisticRegression(max_iter=2000))]).fit(X, y)
    model = mlserve.convert(pipe)
    mlserve.save(model, tmp_path / "n.mls")
    for m in (model, mlserve.load(tmp_path / "n.mls")):
        for data in (X, unseen(X)):
            np.testing.assert_allclose(m.transform(data), pipe[:-1].transform(data), rtol=1e-6,
                                       atol=1e-9)
            np.testing.assert_allclose(m.predict_proba(data), pipe.predict_proba(data),
                                       rtol=1e-6, atol=1e-9)
    bare = Pipeline([("prep", prep()), ("norm", Normalizer(norm=norm))]).fit(X)
    np.testing.assert_allclose(mlserve.convert(bare).transform(X), bare.transform(X),
                               rtol=1e-6, atol=1e-9)
    arrays = sections(model)
    arrays["pipe.normalize"] = np.array([7])
    with pytest.raises(ValueError, match="normalize 7"):
        _core.create("pipeline", arrays, model.model_.metadata)


def test_make_column_selector_is_resolved_at_fit():
    from sklearn.compose import make_column_selector

    X, y, _ = frame()
    ct = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()),
         make_column_selector(dtype_include=np.number)),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(handle_unknown="ignore")),
         make_column_selector(dtype_exclude=np.number))])
    pipe = Pipeline([("ct", ct), ("clf", LogisticRegression(max_iter=2000))]).fit(X, y)
    model = mlserve.convert(pipe)
    assert [c["kind"] for c in model.input_schema] == ["numeric", "numeric", "string", "string"]
    for data in (X, unseen(X)):
        np.testing.assert_allclose(model.predict_proba(data), pipe.predict_proba(data),
                                   rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("task", ["classifier", "regressor"])
def test_hist_gradient_boosting_with_categorical_features_matches_sklearn(task, tmp_path):
    """Strings ordinal-encoded in the ColumnTransformer, split on as categories by the
    final HistGradientBoosting (its 256-bit category sets, mlserve's tree engine);
    unseen and missing strings are NaN: HGB's missing side."""
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
    )
    from sklearn.preprocessing import OrdinalEncoder

    X, y, score = frame(n=600)
    ct = ColumnTransformer([
        ("num", "passthrough", ["age", "income"]),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                              OrdinalEncoder(handle_unknown="use_encoded_value",
                                             unknown_value=np.nan)), ["city", "plan"])])
    est = (HistGradientBoostingClassifier if task == "classifier"
           else HistGradientBoostingRegressor)(max_iter=30, categorical_features=[2, 3],
                                               random_state=0)
    pipe = Pipeline([("prep", ct), ("hgb", est)]).fit(X, y if task == "classifier" else score)
    model = mlserve.convert(pipe)
    mlserve.save(model, tmp_path / "h.mls")
    methods = ["predict", "predict_proba"] if task == "classifier" else ["predict"]
    for m in (model, mlserve.load(tmp_path / "h.mls")):
        for data in (X, unseen(X)):
            for method in methods:
                np.testing.assert_allclose(getattr(m, method)(data), getattr(pipe, method)(data),
                                           rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("options", [{"degree": 2}, {"degree": 3, "include_bias": False},
                                     {"degree": 2, "interaction_only": True}])
def test_polynomial_features_step_matches_sklearn(options, tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import PolynomialFeatures

    X, y, _ = frame()
    small = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income"]),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["city"])])
    pipe = Pipeline([("prep", small), ("poly", PolynomialFeatures(**options)),
                     ("clf", LogisticRegression(max_iter=3000))]).fit(X, y)
    with_pca = Pipeline([("prep", small), ("poly", PolynomialFeatures(**options)),
                         ("pca", PCA(n_components=4)),
                         ("clf", LogisticRegression(max_iter=3000))]).fit(X, y)
    for p in (pipe, with_pca):
        model = mlserve.convert(p)
        mlserve.save(model, tmp_path / "p.mls")
        for m in (model, mlserve.load(tmp_path / "p.mls")):
            for data in (X, unseen(X)):
                np.testing.assert_allclose(m.transform(data), p[:-1].transform(data),
                                           rtol=1e-6, atol=1e-9)
                np.testing.assert_allclose(m.predict_proba(data), p.predict_proba(data),
                                           rtol=1e-6, atol=1e-9)
    arrays = sections(mlserve.convert(pipe))
    arrays["pipe.poly_powers"][0, 0] = 99
    with pytest.raises(ValueError, match="polynomial power 99"):
        _core.create("pipeline", arrays, mlserve.convert(pipe).model_.metadata)


@pytest.mark.parametrize("encode, strategy", [("ordinal", "quantile"), ("onehot", "uniform"),
                                              ("onehot-dense", "kmeans")])
def test_kbins_discretizer_matches_sklearn(encode, strategy, tmp_path):
    import warnings

    from sklearn.preprocessing import KBinsDiscretizer

    X, y, _ = frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantile_method / subsample FutureWarnings
        kb = KBinsDiscretizer(n_bins=5, encode=encode, strategy=strategy)
        pipe = Pipeline([("prep", ColumnTransformer([
            ("bins", make_pipeline(SimpleImputer(strategy="median"), kb), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["plan"])])),
            ("clf", LogisticRegression(max_iter=3000))]).fit(X, y)
    model = mlserve.convert(pipe)
    mlserve.save(model, tmp_path / "k.mls")
    edges = pipe[0].named_transformers_["bins"][-1].bin_edges_[0]
    Y = X.head(6).copy()
    Y["age"] = [edges[0] - 5, edges[1], edges[2], edges[-1] + 5, np.nan, edges[3]]  # on edges
    for m in (model, mlserve.load(tmp_path / "k.mls")):
        for data in (X, Y):
            np.testing.assert_array_equal(m.transform(data), _dense(pipe[0].transform(data)))
            np.testing.assert_allclose(m.predict_proba(data), pipe.predict_proba(data),
                                       rtol=1e-6, atol=1e-9)


def _dense(a):
    return a.toarray() if hasattr(a, "toarray") else a


def test_kbins_corrupt_edges_are_refused():
    from sklearn.preprocessing import KBinsDiscretizer

    X, y, _ = frame()
    pipe = Pipeline([("prep", ColumnTransformer([
        ("bins", make_pipeline(SimpleImputer(), KBinsDiscretizer(
            n_bins=4, encode="ordinal", strategy="uniform")), ["age"])])),
        ("clf", LogisticRegression())]).fit(X, y)
    model = mlserve.convert(pipe)
    arrays = sections(model)
    arrays["pipe.bin_edges"][:3] = [3.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="bin edges out of order"):
        _core.create("pipeline", arrays, model.model_.metadata)
    arrays = sections(model)
    arrays["pipe.ops"][0, 5] = 10**6
    with pytest.raises(ValueError, match="1000000 bins from edge 0 past"):
        _core.create("pipeline", arrays, model.model_.metadata)
    arrays = sections(model)
    del arrays["pipe.bin_edges"]
    with pytest.raises(ValueError, match="without a float64 pipe.bin_edges"):
        _core.create("pipeline", arrays, model.model_.metadata)


def test_random_section_values_never_crash(fitted):
    """Random values in every pipe.* section: create refuses them or the model predicts
    (a crash would end the test process); seeded, bounded."""
    X, _, model = fitted
    rng = np.random.default_rng(1234)
    print("seed 1234")
    base = sections(model)
    head = X.head(5)
    refused = accepted = 0
    for trial in range(400):
        arrays = {k: v.copy() for k, v in base.items()}
        name = sorted(k for k in arrays if k.startswith("pipe."))[trial % 8]
        a = arrays[name].reshape(-1)
        k = int(rng.integers(0, a.size))
        if a.dtype == np.uint8:
            a[k] = rng.integers(0, 256)
        elif a.dtype == np.int64:
            a[k] = rng.choice([-1, 0, 1, 2, 3, 7, 64, -(2**62), 2**62, int(rng.integers(-9, 99))])
        else:
            a[k] = rng.choice([np.nan, np.inf, -1.0, 0.0, 1e300])
        try:
            core = _core.create("pipeline", arrays, model.model_.metadata)
        except (ValueError, TypeError, mlserve.ModelFormatError):
            refused += 1
            continue
        accepted += 1
        twin = mlserve.PipelineModel()
        twin._install(core)
        try:
            twin.predict_proba(head)
        except (ValueError, TypeError, FloatingPointError, NotImplementedError):
            pass  # e.g. a header naming another final kind: no predict_proba there
    assert refused > 50 and accepted > 50, (refused, accepted)
