"""Named inputs over HTTP are matched to the model's features by name (issue 12, part 1).

Every named form (V1 records and columns, MLflow dataframe_split /
dataframe_records / CSV header, V2 one input per feature, the simple
``features`` object), through Flask's test client and a real gunicorn server:
columns in another order get the right predictions, a missing, unknown or
repeated column is a 400 that names it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
from flask import Flask

import mlserve
from mlserve.serving import blueprint
from mlserve.store import ModelStore
from serving_support import Server

pd = pytest.importorskip("pandas")

COLUMNS = ["age", "income", "tenure", "score"]
SHUFFLED = ["score", "age", "tenure", "income"]


def _frame(seed=0, n=200):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, 4)) * [1.0, 3.0, 0.5, 2.0], columns=COLUMNS)


X = _frame(seed=1, n=5)  # the request rows
ROWS = X.to_numpy()


@pytest.fixture(scope="module")
def models():
    from sklearn.ensemble import HistGradientBoostingRegressor

    train = _frame()
    y = (train["age"] - 2 * train["income"] + 3 * train["score"]).to_numpy()
    return {
        "named": mlserve.LinearRegression().fit(train, y),
        "tree": mlserve.convert(HistGradientBoostingRegressor(max_iter=10).fit(train, y)),
        "plain": mlserve.LinearRegression().fit(train.to_numpy(), y),
    }


@pytest.fixture(scope="module")
def expected(models):
    return {name: model.predict(ROWS) for name, model in models.items()}


@pytest.fixture
def client(tmp_path, models):
    store = ModelStore(tmp_path / "models")
    for name, model in models.items():
        store.publish(name, model, alias="production")
    app = Flask("host")
    app.register_blueprint(blueprint(store, reload_interval=0, default_model="named"))
    return app.test_client()


def _col(name):
    """The data column sent under ``name`` (a name the model does not know sends column 0)."""
    return COLUMNS.index(name) if name in COLUMNS else 0


def _records(columns=SHUFFLED, rows=ROWS):
    index = [_col(c) for c in columns]
    return [{c: float(row[j]) for c, j in zip(columns, index)} for row in rows]


def _columns(columns=SHUFFLED):
    return {c: ROWS[:, _col(c)].tolist() for c in columns}


def _split(columns=SHUFFLED):
    index = [_col(c) for c in columns]
    return {"columns": list(columns), "data": ROWS[:, index].tolist()}


def _csv(columns=SHUFFLED):
    index = [_col(c) for c in columns]
    lines = [",".join(columns)] + [",".join(repr(float(v)) for v in row[index]) for row in ROWS]
    return "\n".join(lines) + "\n"


def _v2_inputs(columns=SHUFFLED, shape_suffix=()):
    return [
        {
            "name": c,
            "datatype": "FP64",
            "shape": [len(ROWS), *shape_suffix],
            "data": ROWS[:, _col(c)].tolist(),
        }
        for c in columns
    ]


def _predict(client, form, name, columns=SHUFFLED):
    """POST one request of ``form``; returns (status, predictions or error)."""
    if form == "v1_records":
        response = client.post(f"/v1/models/{name}:predict", json={"instances": _records(columns)})
        key = "predictions"
    elif form == "v1_columns":
        response = client.post(f"/v1/models/{name}:predict", json={"inputs": _columns(columns)})
        key = "outputs"
    elif form == "v2":
        response = client.post(f"/v2/models/{name}/infer", json={"inputs": _v2_inputs(columns)})
        key = "outputs"
    elif form == "simple":
        response = client.post(f"/predict/{name}", json={"instances": _records(columns)})
        key = "predictions"
    else:
        if form == "csv":
            response = client.post("/invocations", data=_csv(columns), content_type="text/csv")
        elif form == "dataframe_split":
            response = client.post("/invocations", json={"dataframe_split": _split(columns)})
        else:
            response = client.post("/invocations", json={"dataframe_records": _records(columns)})
        key = "predictions"
    body = response.get_json()
    if response.status_code != 200:
        assert set(body) == {"error"}, body
        return response.status_code, body["error"]
    value = body[key]
    if form == "v2":
        value = value[0]["data"]
    return 200, np.asarray(value, dtype=np.float64)


V1_V2_FORMS = ["v1_records", "v1_columns", "v2", "simple"]
MLFLOW_FORMS = ["csv", "dataframe_split", "dataframe_records"]  # the default model: "named"


@pytest.mark.parametrize("form", V1_V2_FORMS + MLFLOW_FORMS)
def test_every_named_form_is_matched_by_name(client, expected, form):
    names = ["named", "tree"] if form in V1_V2_FORMS else ["named"]
    for name in names:
        status, predictions = _predict(client, form, name)
        assert status == 200, predictions
        np.testing.assert_allclose(predictions, expected[name], rtol=1e-12)


@pytest.mark.parametrize("form", V1_V2_FORMS + MLFLOW_FORMS)
@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["score", "age", "tenure"], "is missing feature 'income' that the model was fitted with"),
        (COLUMNS + ["zz"], "has feature 'zz' that the model was not fitted with"),
        (
            ["score", "age", "tenure", "incme"],
            "is missing feature 'income' that the model was fitted with, and has feature "
            "'incme' that the model was not fitted with",
        ),
    ],
)
def test_missing_and_unknown_columns_are_named(client, form, columns, message):
    status, error = _predict(client, form, "named", columns)
    assert status == 400
    assert message in error, error


def test_the_form_is_named_in_the_message(client):
    _, error = _predict(client, "dataframe_split", "named", ["age"])
    assert error.startswith("dataframe_split columns is missing features 'income', 'tenure', ")
    _, error = _predict(client, "csv", "named", ["age", "income", "tenure"])
    assert error == "CSV header is missing feature 'score' that the model was fitted with"
    _, error = _predict(client, "v1_columns", "named", ["age", "income", "tenure"])
    assert error == "inputs is missing feature 'score' that the model was fitted with"
    _, error = _predict(client, "v2", "named", ["age", "income", "tenure"])
    assert error == "inputs is missing feature 'score' that the model was fitted with"


def test_records_whose_keys_differ_row_to_row(client, expected):
    records = _records(COLUMNS)
    records[1] = {k: records[1][k] for k in reversed(COLUMNS)}  # same keys, other order: fine
    response = client.post("/v1/models/named:predict", json={"instances": records})
    np.testing.assert_allclose(response.json["predictions"], expected["named"], rtol=1e-12)

    missing = [dict(r) for r in records]
    del missing[3]["tenure"]
    response = client.post("/v1/models/named:predict", json={"instances": missing})
    assert response.status_code == 400
    assert response.json["error"] == (
        "instances row 3 is missing feature 'tenure' that the model was fitted with"
    )
    extra = [dict(r) for r in records]
    extra[2]["zz"] = 1.0  # today's code read row 0's keys only and dropped this one
    response = client.post("/invocations", json={"dataframe_records": extra})
    assert response.status_code == 400
    assert response.json["error"] == (
        "dataframe_records row 2 has feature 'zz' that the model was not fitted with"
    )


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        (
            {"json": {"dataframe_split": {"columns": ["age", "age", "tenure", "score"],
                                          "data": ROWS.tolist()}}},
            "dataframe_split columns has column 'age' more than once",
        ),
        (
            {"data": "age,income,income,score\n1,2,3,4\n", "content_type": "text/csv"},
            "CSV header has column 'income' more than once",
        ),
    ],
)
def test_repeated_column_names_are_refused(client, request_kwargs, message):
    response = client.post("/invocations", **request_kwargs)
    assert response.status_code == 400
    assert message in response.json["error"]


def test_v2_repeated_input(client):
    inputs = _v2_inputs(COLUMNS)
    inputs[3] = dict(inputs[0])
    response = client.post("/v2/models/named/infer", json={"inputs": inputs})
    assert response.status_code == 400
    assert "input 'age' appears twice" in response.json["error"]


def test_v2_columns_of_shape_n_by_1_and_binary(client, expected):
    inputs = _v2_inputs(SHUFFLED, shape_suffix=(1,))
    response = client.post("/v2/models/named/infer", json={"inputs": inputs})
    np.testing.assert_allclose(response.json["outputs"][0]["data"], expected["named"], rtol=1e-12)

    header, blobs = [], []
    for column in SHUFFLED:
        raw = np.ascontiguousarray(ROWS[:, COLUMNS.index(column)], dtype="<f4").tobytes()
        header.append({"name": column, "datatype": "FP32", "shape": [len(ROWS)],
                       "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
        blobs.append(raw)
    head = json.dumps({"inputs": header}).encode()
    response = client.post(
        "/v2/models/named/infer", data=head + b"".join(blobs),
        headers={"Inference-Header-Content-Length": str(len(head))},
        content_type="application/octet-stream",
    )  # fmt: skip
    assert response.status_code == 200, response.get_data(as_text=True)
    # the client sent float32 columns: equal to float32 precision
    np.testing.assert_allclose(response.json["outputs"][0]["data"], expected["named"], rtol=1e-5)


def test_v2_single_input_named_after_a_feature(client):
    inputs = _v2_inputs(["income"])
    response = client.post("/v2/models/named/infer", json={"inputs": inputs})
    assert response.status_code == 400
    assert response.json["error"] == (
        "inputs is missing features 'age', 'tenure', 'score' that the model was fitted with"
    )


def test_v2_single_input_of_whole_rows_is_positional(client, expected):
    """One input of shape [n, 4] holds rows, whatever its name (even a feature's)."""
    inputs = [{"name": "age", "datatype": "FP64", "shape": list(ROWS.shape), "data": ROWS.tolist()}]
    response = client.post("/v2/models/named/infer", json={"inputs": inputs})
    np.testing.assert_allclose(response.json["outputs"][0]["data"], expected["named"], rtol=1e-12)


# ------------------------------------------------------- a model without feature names


@pytest.mark.parametrize(
    "body",
    [
        {"instances": _records(COLUMNS)},
        {"inputs": _columns(COLUMNS)},
    ],
)
def test_model_without_names_refuses_json_objects(client, body):
    """JSON object keys have no order (RFC 8259): taking them by position would guess."""
    response = client.post("/v1/models/plain:predict", json=body)
    assert response.status_code == 400
    assert response.json["error"].startswith("model 'plain' was fitted without feature names, so")
    assert "send each row as a list of 4 numbers in the training order" in response.json["error"]
    response = client.post("/predict/plain", json={"features": _records(COLUMNS)[0]})
    assert response.status_code == 400
    assert "fitted without feature names" in response.json["error"]


def test_model_without_names_takes_ordered_names_by_position(client, expected):
    """Lists of names (V2 inputs here; dataframe_split and CSV below) keep the client's
    order, as a DataFrame does in Python: such a model takes them by position."""
    positional = ["x1", "x2", "x3", "x4"]
    inputs = [
        {"name": c, "datatype": "FP64", "shape": [len(ROWS)], "data": ROWS[:, j].tolist()}
        for j, c in enumerate(positional)
    ]
    response = client.post("/v2/models/plain/infer", json={"inputs": inputs})
    np.testing.assert_allclose(response.json["outputs"][0]["data"], expected["plain"], rtol=1e-12)
    response = client.post("/v2/models/plain/infer", json={"inputs": inputs[:3]})
    assert response.status_code == 400
    assert response.json["error"] == "inputs has 3 columns; model 'plain' expects 4 features"


@pytest.fixture
def plain_mlflow(tmp_path, models):
    store = ModelStore(tmp_path / "plain")
    store.publish("plain", models["plain"], alias="production")
    app = Flask("host")
    app.register_blueprint(blueprint(store, reload_interval=0))
    return app.test_client()


def test_model_without_names_mlflow(plain_mlflow, expected):
    split = {"dataframe_split": {"columns": ["x1", "x2", "x3", "x4"], "data": ROWS.tolist()}}
    response = plain_mlflow.post("/invocations", json=split)
    np.testing.assert_allclose(response.json["predictions"], expected["plain"], rtol=1e-12)
    csv = "x1,x2,x3,x4\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in ROWS)
    response = plain_mlflow.post("/invocations", data=csv, content_type="text/csv")
    np.testing.assert_allclose(response.json["predictions"], expected["plain"], rtol=1e-12)
    response = plain_mlflow.post("/invocations", json={"dataframe_records": _records(COLUMNS)})
    assert response.status_code == 400
    assert "model 'plain' was fitted without feature names" in response.json["error"]


# -------------------------------------------------------------------- empty requests


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/models/named:predict", {"instances": []}, "'instances' is empty: send at least one row"),
        ("/v1/models/named:predict", {"inputs": []}, "'inputs' is empty: send at least one row"),
        ("/predict/named", {"instances": []}, "'instances' is empty: send at least one row"),
        ("/invocations", {"instances": []}, "'instances' is empty: send at least one row"),
        ("/invocations", {"dataframe_records": []}, "'dataframe_records' is empty: send at least one row"),
        (
            "/invocations",
            {"dataframe_split": {"columns": COLUMNS, "data": []}},
            "'dataframe_split' data is empty: send at least one row",
        ),
        (
            "/v1/models/named:predict",
            {"inputs": {c: [] for c in COLUMNS}},
            "inputs columns are empty: send at least one row",
        ),
    ],
)
def test_empty_requests_say_so(client, path, body, message):
    response = client.post(path, json=body)
    assert response.status_code == 400
    assert response.json == {"error": message}


def test_csv_without_rows_says_so(client):
    response = client.post("/invocations", data="age,income,tenure,score\n", content_type="text/csv")
    assert response.status_code == 400
    assert response.json == {"error": "CSV body has a header but no data rows: send at least one row"}


# ---------------------------------------------------------------- a real gunicorn server


def test_named_forms_on_a_real_server(tmp_path, models, expected):
    import tritonclient.http as triton

    root = tmp_path / "models"
    store = ModelStore(root)
    store.publish("named", models["named"], alias="production")
    server = Server(root, "--workers", "1", "--threads", "2", "--reload-interval", "0")
    try:
        url = server.url
        response = requests.post(
            f"{url}/v1/models/named:predict", json={"instances": _records()}, timeout=10
        )
        np.testing.assert_allclose(response.json()["predictions"], expected["named"], rtol=1e-12)
        response = requests.post(
            f"{url}/invocations", data=_csv(), headers={"Content-Type": "text/csv"}, timeout=10
        )
        np.testing.assert_allclose(response.json()["predictions"], expected["named"], rtol=1e-12)
        missing = _records()
        del missing[3]["age"]
        response = requests.post(
            f"{url}/invocations", json={"dataframe_records": missing}, timeout=10
        )
        assert response.status_code == 400
        assert response.json() == {
            "error": "dataframe_records row 3 is missing feature 'age' that the model was fitted with"
        }

        client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=10)
        tensors = []
        for column in SHUFFLED:
            tensor = triton.InferInput(column, [len(ROWS)], "FP64")
            tensor.set_data_from_numpy(np.ascontiguousarray(ROWS[:, COLUMNS.index(column)]))
            tensors.append(tensor)
        result = client.infer("named", tensors)
        np.testing.assert_allclose(result.as_numpy("predict"), expected["named"], rtol=1e-12)
        client.close()
    finally:
        server.stop()


def test_a_key_repeated_in_a_json_object_is_refused(client):
    """json_decode kept the last of two equal keys: a record's first value was lost."""
    from mlserve._core import json_decode

    with pytest.raises(ValueError, match="duplicate key 'a' in a JSON object"):
        json_decode(b'[{"a": 1, "b": 2}, {"a": 3, "a": 4}]', unique_keys=True)
    assert json_decode(b'[{"a": 3, "a": 4}]') == [{"a": 4}]  # json.loads' rule by default
    assert json_decode(b'{"a": {"a": 1}, "b": [{"a": 2}]}', unique_keys=True) == {
        "a": {"a": 1},
        "b": [{"a": 2}],
    }
    body = '{"instances": [{"age": 1, "income": 2, "tenure": 3, "score": 4, "age": 5}]}'
    response = client.post("/v1/models/named:predict", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json == {
        "error": "duplicate key 'age' in a JSON object; keys must be unique "
        "(a repeated feature would lose a value)"
    }
