"""Pipelines over HTTP (issue 14, step 2): mixed-type columns by name through every
protocol (MLflow dataframe_split / dataframe_records / CSV, KServe V1 instances as
records and inputs as columns, KServe V2 one input per column with BYTES strings,
/predict/<name>), parity with scikit-learn's own pipeline, a wrong type is a 400
naming the column and the row, and the metadata and OpenAPI document show the
input schema. Flask's test client for the cases, one real gunicorn server for the
protocols end to end."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import requests
from flask import Flask
from serving_support import Server
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mlserve
from mlserve.serving import blueprint
from mlserve.store import ModelStore

COLUMNS = ["age", "income", "city", "plan"]


def frame(n=300, seed=5):
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n)
    age[rng.random(n) < 0.15] = np.nan
    income = rng.lognormal(10, 1, n)
    city = rng.choice(["paris", "lyon", "nîmes", "brest"], n).astype(object)
    city[rng.random(n) < 0.1] = None
    plan = rng.choice([f"p{i}" for i in range(30)], n).astype(object)
    X = pd.DataFrame({"age": age, "income": income, "city": city, "plan": plan})
    score = np.nan_to_num(age, nan=40) / 10 + (city == "paris") + rng.normal(0, 0.5, n)
    return X, np.where(score > np.median(score), "churn", "stay")


@pytest.fixture(scope="module")
def fitted():
    X, y = frame()
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
         ["age", "income"]),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                              OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
         ["city", "plan"]),
    ])
    pipe = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=2000))]).fit(X, y)
    return pipe, mlserve.convert(pipe)


# the request rows: a NaN, a None, an unseen category, a reordered record
REQUEST = pd.DataFrame({
    "age": [18.0, np.nan, 55.5, 21.0],
    "income": [21000.0, 54000.0, 8000.0, 33000.0],
    "city": ["brest", None, "atlantis", "paris"],
    "plan": ["p3", "p7", "p1", "never-seen"],
})


def records():
    out = []
    for r in REQUEST.to_dict("records"):
        rec = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        out.append(dict(reversed(list(rec.items()))))  # names, not order
    return out


def columns():
    return {k: [r[k] for r in records()] for k in reversed(COLUMNS)}


@pytest.fixture(scope="module")
def expected(fitted):
    pipe, _ = fitted
    return {"labels": pipe.predict(REQUEST).tolist(), "proba": pipe.predict_proba(REQUEST)}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, fitted):
    root = tmp_path_factory.mktemp("models")
    mlserve.save(fitted[1], root / "churn.mls")
    ModelStore(root / "store").publish("churn", root / "churn.mls", alias="production")
    return root / "store"


@pytest.fixture
def client(store_dir):
    app = Flask("host")
    app.register_blueprint(blueprint(ModelStore(store_dir), reload_interval=0))
    return app.test_client()


def v2_inputs():
    inputs = []
    for name in COLUMNS:
        values = [r[name] for r in records()]
        if name in ("city", "plan"):
            inputs.append({"name": name, "datatype": "BYTES", "shape": [4], "data": values})
        else:
            inputs.append({"name": name, "datatype": "FP64", "shape": [4],
                           "data": [v for v in values]})
    return inputs


def split():
    order = ["plan", "age", "city", "income"]
    return {"columns": order, "data": [[r[c] for c in order] for r in records()]}


PROTOCOLS = {
    "mlflow_split": ("/invocations", lambda: {"dataframe_split": split()},
                     lambda j: j["predictions"]),
    "mlflow_records": ("/invocations", lambda: {"dataframe_records": records()},
                       lambda j: j["predictions"]),
    "v1_instances": ("/v1/models/churn:predict", lambda: {"instances": records()},
                     lambda j: j["predictions"]),
    "v1_inputs": ("/v1/models/churn:predict", lambda: {"inputs": columns()},
                  lambda j: j["outputs"]),
    "v2": ("/v2/models/churn/infer", lambda: {"inputs": v2_inputs()},
           lambda j: j["outputs"][0]["data"]),
    "predict": ("/predict/churn", lambda: {"instances": records()},
                lambda j: j["predictions"]),
}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_every_protocol_matches_sklearn(client, expected, protocol):
    path, body, answer = PROTOCOLS[protocol]
    response = client.post(path, json=body())
    assert response.status_code == 200, response.get_json()
    assert answer(response.get_json()) == expected["labels"]


def test_probabilities_and_one_record(client, expected):
    response = client.post("/predict/churn", json={"features": records()[2], "return": "proba"})
    assert response.status_code == 200, response.get_json()
    np.testing.assert_allclose(response.get_json()["probabilities"], expected["proba"][2],
                               rtol=1e-9)
    response = client.post("/invocations", json={"dataframe_records": records(),
                                                  "params": {"output": "proba"}})
    assert response.status_code == 200, response.get_json()
    np.testing.assert_allclose(response.get_json()["predictions"], expected["proba"], rtol=1e-9)
    response = client.post("/v1/models/churn:predict", json={"instances": records(),
                                                             "return": "proba"})
    assert response.status_code == 200, response.get_json()
    np.testing.assert_allclose(response.get_json()["predictions"], expected["proba"], rtol=1e-9)


def test_request_labels_differ(expected):
    assert len(set(expected["labels"])) == 2  # the parity checks see both classes


def test_csv_matches_sklearn(client, expected):
    lines = ["city,age,plan,income"]
    for r in records():
        lines.append(",".join("" if r[c] is None else str(r[c])
                              for c in ["city", "age", "plan", "income"]))
    response = client.post("/invocations", data="\n".join(lines) + "\n",
                           content_type="text/csv")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["predictions"] == expected["labels"]


@pytest.mark.parametrize("path, body, message", [
    ("/invocations", lambda r: {"dataframe_records": r},
     "dataframe_records: column 'age', row 1: expected a number, got str 'forty'"),
    ("/v1/models/churn:predict", lambda r: {"instances": r},
     "instances: column 'age', row 1: expected a number, got str 'forty'"),
    ("/predict/churn", lambda r: {"instances": r},
     "instances: column 'age', row 1: expected a number, got str 'forty'"),
])
def test_string_where_a_number_is_expected_is_a_400(client, path, body, message):
    rows = records()
    rows[1]["age"] = "forty"
    response = client.post(path, json=body(rows))
    assert response.status_code == 400
    assert response.get_json()["error"] == message


def test_bad_inputs_are_400s_naming_the_problem(client):
    rows = records()
    rows[2]["city"] = 12
    r = client.post("/invocations", json={"dataframe_records": rows})
    assert r.status_code == 400
    assert "column 'city', row 2: expected a string, got int" in r.get_json()["error"]
    rows = records()
    del rows[0]["plan"]
    r = client.post("/invocations", json={"dataframe_records": rows})
    assert r.status_code == 400 and "'plan'" in r.get_json()["error"]
    r = client.post("/v1/models/churn:predict", json={"instances": [[1, 2, "a", "b"]]})
    assert r.status_code == 400 and "is a pipeline" in r.get_json()["error"]
    inputs = v2_inputs()
    inputs[2]["data"][1] = 7
    r = client.post("/v2/models/churn/infer", json={"inputs": inputs})
    assert r.status_code == 400
    assert "column 'city', row 1: expected a string" in r.get_json()["error"]
    inputs = v2_inputs()
    inputs[0] = {"name": "age", "datatype": "BYTES", "shape": [4], "data": ["1", "2", "3", "4"]}
    r = client.post("/v2/models/churn/infer", json={"inputs": inputs})
    assert r.status_code == 400
    assert "column 'age', row 0: expected a number, got str '1'" in r.get_json()["error"]
    r = client.post("/v2/models/churn/infer", json={"inputs": v2_inputs()[:3]})
    assert r.status_code == 400 and "'plan'" in r.get_json()["error"]
    r = client.post("/invocations", json={"dataframe_split": {"columns": COLUMNS,
                                                               "data": [[1.0, 2.0, "a"]]}})
    assert r.status_code == 400 and "row 0 has 3 values for 4 columns" in r.get_json()["error"]
    r = client.post("/invocations", json={"dataframe_records": []})
    assert r.status_code == 400


def test_v2_metadata_lists_every_column_with_its_datatype(client):
    meta = client.get("/v2/models/churn").get_json()
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("age", "FP64", [-1]), ("income", "FP64", [-1]), ("city", "BYTES", [-1]),
        ("plan", "BYTES", [-1])]
    v1 = client.get("/v1/models/churn/metadata").get_json()
    inputs = v1["metadata"]["signature_def"]["inputs"]
    assert inputs["city"] == {"dtype": "DT_STRING", "shape": [-1]}
    assert inputs["age"] == {"dtype": "DT_DOUBLE", "shape": [-1]}


def test_openapi_shows_the_input_schema(client, fitted):
    doc = client.get("/openapi.json").get_json()
    schema = doc["components"]["schemas"]["churn.record"]
    assert schema["required"] == COLUMNS
    assert schema["properties"]["age"] == {"type": ["number", "null"]}
    enc = fitted[0][0].named_transformers_["cat"][-1]
    assert schema["properties"]["city"]["type"] == ["string", "null"]
    assert schema["properties"]["city"]["examples"] == list(enc.categories_[0])[:20]


def test_real_gunicorn_server_every_protocol(store_dir, expected):
    server = Server(store_dir, "--workers", "1", "--threads", "2", "--reload-interval", "0")
    try:
        for protocol, (path, body, answer) in PROTOCOLS.items():
            response = requests.post(server.url + path, json=body(), timeout=10)
            assert response.status_code == 200, (protocol, response.text)
            assert answer(response.json()) == expected["labels"], protocol
        rows = records()
        rows[3]["income"] = "lots"
        response = requests.post(server.url + "/invocations",
                                 json={"dataframe_records": rows}, timeout=10)
        assert response.status_code == 400
        assert "column 'income', row 3: expected a number" in response.json()["error"]
        meta = requests.get(server.url + "/v2/models/churn", timeout=10).json()
        assert [i["datatype"] for i in meta["inputs"]] == ["FP64", "FP64", "BYTES", "BYTES"]
    finally:
        server.stop()


def test_explain_is_a_400_and_a_served_column_transformer_transforms(client, fitted, tmp_path):
    r = client.post("/v1/models/churn:explain", json={"instances": records()})
    assert r.status_code == 400 and "cannot explain" in r.get_json()["error"]
    pipe, _ = fitted
    mlserve.save(mlserve.convert(pipe[0]), tmp_path / "prep.mls")
    store = ModelStore(tmp_path / "store")
    store.publish("prep", tmp_path / "prep.mls", alias="production")
    app = Flask("host")
    app.register_blueprint(blueprint(store, reload_interval=0))
    r = app.test_client().post("/v1/models/prep:predict", json={"instances": records()})
    assert r.status_code == 200, r.get_json()
    np.testing.assert_allclose(r.get_json()["predictions"], pipe[0].transform(REQUEST),
                               rtol=1e-9, atol=1e-12)
