"""The blueprint through Flask's test client: every endpoint and every error status."""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
import time

import numpy as np
import pytest
from flask import Flask

import mlserve
from mlserve.serving import ConfigError, MLServe, blueprint, serving_state
from mlserve.store import ModelStore
from serving_support import fit_classifier, fit_named_classifier, fit_regressor, training_data

X, _ = training_data(seed=1, n=5)
ROWS = X.tolist()


@pytest.fixture(scope="module")
def models():
    return {
        "reg": fit_regressor(),
        "clf": fit_classifier(),
        "clf2": fit_classifier(seed=2),
        "named": fit_named_classifier(),
    }


@pytest.fixture
def store(tmp_path, models):
    store = ModelStore(tmp_path / "models")
    store.publish("reg", models["reg"], alias="production")
    store.publish("clf", models["clf"], alias="production")
    store.publish("clf", models["clf2"], alias="staging")
    store.publish("named", models["named"])
    return store


@pytest.fixture
def app(store):
    app = Flask("host")
    # admin_enabled: the reload tests call POST /admin/reload without keys
    app.register_blueprint(blueprint(store, reload_interval=0, admin_enabled=True), url_prefix="/ml")
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def assert_error(response, status, message):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    assert set(response.json) == {"error"}
    assert message in response.json["error"], response.json["error"]


# --------------------------------------------------------------------- V1


def test_v1_status(client):
    response = client.get("/ml/v1/models/clf")
    assert response.status_code == 200
    assert response.json["ready"] is True
    # the versions that answer a request without a version: production's (v2 is only staging)
    assert [s["version"] for s in response.json["model_version_status"]] == ["1"]
    assert response.json["model_version_status"][0]["state"] == "AVAILABLE"
    one = client.get("/ml/v1/models/clf/labels/staging").json
    assert [s["version"] for s in one["model_version_status"]] == ["2"]
    assert client.get("/ml/v1/models/clf/versions/1").status_code == 200


def test_v1_model_names(client):
    assert client.get("/ml/v1/models").json == {"models": ["clf", "named", "reg"]}


def test_v1_metadata(client):
    response = client.get("/ml/v1/models/reg/metadata")
    assert response.json["model_spec"] == {"name": "reg", "version": "1"}
    assert response.json["metadata"]["signature_def"]["inputs"]["input"]["shape"] == [-1, 4]


def test_v1_predict_rows(client, models):
    response = client.post("/ml/v1/models/reg:predict", json={"instances": ROWS})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json["predictions"], models["reg"].predict(X))
    assert response.headers["X-Model-Version"] == "1"
    assert re.fullmatch(
        r"decode;dur=[\d.]+, queue;dur=[\d.]+, compute;dur=[\d.]+, encode;dur=[\d.]+, batch;desc=\d+",
        response.headers["Server-Timing"],
    )


def test_v1_predict_version_and_label(client, models):
    response = client.post("/ml/v1/models/clf/versions/2:predict", json={"instances": ROWS})
    assert response.json["predictions"] == models["clf2"].predict(X).tolist()
    assert response.headers["X-Model-Version"] == "2"
    response = client.post("/ml/v1/models/clf/labels/staging:predict", json={"instances": ROWS})
    assert response.headers["X-Model-Version"] == "2"
    response = client.post("/ml/v1/models/clf:predict", json={"instances": ROWS})
    assert response.headers["X-Model-Version"] == "1"  # the production alias


def test_v1_predict_columnar(client, models):
    expected = models["reg"].predict(X)
    response = client.post("/ml/v1/models/reg:predict", json={"inputs": ROWS})
    np.testing.assert_allclose(response.json["outputs"], expected)
    response = client.post("/ml/v1/models/reg:predict", json={"inputs": {"input": ROWS}})
    np.testing.assert_allclose(response.json["outputs"], expected)


def test_v1_named_inputs_and_instances(client, models):
    columns = {name: X[:, i].tolist() for i, name in enumerate("dcba"[::-1])}
    expected = models["named"].predict(X).tolist()
    response = client.post("/ml/v1/models/named:predict", json={"inputs": columns})
    assert response.json["outputs"] == expected
    records = [dict(zip("abcd", row)) for row in ROWS]
    response = client.post("/ml/v1/models/named:predict", json={"instances": records})
    assert response.json["predictions"] == expected
    response = client.post(
        "/ml/v1/models/clf:predict", json={"instances": [{"input": row} for row in ROWS]}
    )
    assert response.json["predictions"] == models["clf"].predict(X).tolist()


def test_v1_probabilities(client, models):
    proba = models["clf"].predict_proba(X)
    response = client.post("/ml/v1/models/clf:predict", json={"instances": ROWS, "return": "proba"})
    np.testing.assert_allclose(response.json["predictions"], proba)
    response = client.post("/ml/v1/models/clf:predict", json={"instances": ROWS, "return": "all"})
    first = response.json["predictions"][0]
    assert first["predict"] == models["clf"].predict(X[:1])[0]
    np.testing.assert_allclose(first["predict_proba"], proba[0])
    response = client.post("/ml/v1/models/clf:predict", json={"inputs": ROWS, "return": "all"})
    assert set(response.json["outputs"]) == {"predict", "predict_proba"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "exactly one of 'instances' or 'inputs'"),
        ({"instances": ROWS, "inputs": ROWS}, "exactly one of 'instances' or 'inputs'"),
        ({"instances": [[1, 2, 3]]}, "expected 4 features, got 3"),
        ({"instances": [[1, 2, 3, "x"]]}, "must contain only numbers, found the string 'x'"),
        ({"instances": [[1, 2, 3, 4], [1, 2]]}, "rows have different lengths"),
        ({"instances": [[1, 2, 3, None]]}, "input contains NaN at row 0, column 3"),
        ({"instances": [[[1, 2, 3, 4]]]}, "got 3 dimensions"),
        ({"instances": "abc"}, "'instances' must be a list"),
        ({"instances": ROWS, "return": "maybe"}, "'return' must be one of"),
    ],
)
def test_v1_bad_requests(client, body, message):
    assert_error(client.post("/ml/v1/models/clf:predict", json=body), 400, message)
    # and the server keeps serving
    assert client.post("/ml/v1/models/clf:predict", json={"instances": ROWS}).status_code == 200


def test_v1_nan_literal_and_regressor_probabilities(client):
    response = client.post(
        "/ml/v1/models/reg:predict",
        data='{"instances": [[1, 2, NaN, 4]]}',
        content_type="application/json",
    )
    # strict JSON: the literal is refused where it stands (a null reaches the model's NaN check)
    assert_error(response, 400, "column 23: NaN and Infinity are not valid JSON numbers")
    response = client.post("/ml/v1/models/reg:predict", json={"instances": ROWS, "return": "proba"})
    assert_error(response, 400, "not a classifier")


def test_v1_not_found_and_methods(client):
    assert_error(
        client.post("/ml/v1/models/nope:predict", json={"instances": ROWS}),
        404,
        "model 'nope' not found",
    )
    assert_error(
        client.post("/ml/v1/models/clf/versions/9:predict", json={"instances": ROWS}),
        404,
        "no version 9",
    )
    assert_error(
        client.post("/ml/v1/models/clf/labels/qa:predict", json={"instances": ROWS}),
        404,
        "no alias 'qa'",
    )
    assert_error(client.get("/ml/v1/models/nope"), 404, "not found")
    assert_error(client.post("/ml/v1/models/clf:classify", json={}), 404, "unsupported verb")
    assert_error(client.get("/ml/v1/models/clf:predict"), 405, "use POST")
    assert_error(client.post("/ml/v1/models/clf", json={}), 405, "use GET")
    assert_error(client.get("/ml/v1/models/clf/a/b/c"), 404, "no such endpoint")


def test_malformed_json_and_content_types(client):
    response = client.post(
        "/ml/v1/models/clf:predict", data="{oops", content_type="application/json"
    )
    assert_error(response, 400, "malformed JSON")
    response = client.post(
        "/ml/v1/models/clf:predict", data=b'{"a": "\xff"}', content_type="application/json"
    )
    assert_error(response, 400, "malformed JSON: invalid JSON at line 1, column 8: invalid UTF-8")
    response = client.post(
        "/ml/v1/models/clf:predict", data="[1, 2]", content_type="application/json"
    )
    assert_error(response, 400, "expected a JSON object, got an array")
    response = client.post("/ml/v1/models/clf:predict", data="", content_type="application/json")
    assert_error(response, 400, "body is empty")
    response = client.post(
        "/ml/v1/models/clf:predict", data="a=1", content_type="application/x-www-form-urlencoded"
    )
    assert_error(response, 415, "unsupported Content-Type 'application/x-www-form-urlencoded'")
    response = client.post("/ml/v2/models/clf/infer", data="x", content_type="text/plain")
    assert_error(response, 415, "send application/json or application/octet-stream")
    # a missing Content-Type is read as JSON
    response = client.post("/ml/v1/models/clf:predict", data=json.dumps({"instances": ROWS}))
    assert response.status_code == 200


def test_body_limit_gives_413(store):
    app = Flask("small")
    app.register_blueprint(blueprint(store, max_body_bytes=1000, reload_interval=0))
    client = app.test_client()
    big = {"instances": [[1.0, 2.0, 3.0, 4.0]] * 100}
    assert_error(
        client.post("/v1/models/clf:predict", json=big),
        413,
        "the limit is 1000 (MLSERVE_MAX_BODY_BYTES)",
    )
    bomb = gzip.compress(json.dumps(big).encode())
    response = client.post(
        "/v1/models/clf:predict",
        data=bomb,
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )
    assert_error(response, 413, "decompressed request body is over the limit")
    assert client.post("/v1/models/clf:predict", json={"instances": ROWS[:1]}).status_code == 200


def test_gzip_body_and_bad_encodings(client):
    body = gzip.compress(json.dumps({"instances": ROWS}).encode())
    response = client.post(
        "/ml/v1/models/clf:predict",
        data=body,
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )
    assert response.status_code == 200
    response = client.post(
        "/ml/v1/models/clf:predict",
        data=b"not gzip",
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    )
    assert_error(response, 400, "malformed gzip body")
    response = client.post(
        "/ml/v1/models/clf:predict",
        data=b"{}",
        content_type="application/json",
        headers={"Content-Encoding": "br"},
    )
    assert_error(response, 415, "unsupported Content-Encoding 'br'")


# --------------------------------------------------------------------- V2


def test_v2_server_endpoints(client):
    assert client.get("/ml/v2").json == {
        "name": "mlserve",
        "version": mlserve.__version__,
        "extensions": [
            "binary_tensor_data", "model_configuration", "statistics",
            "model_repository", "model_repository(unload_dependents)",
        ],
    }  # fmt: skip
    assert client.get("/ml/v2/health/live").json == {"live": True}
    assert client.get("/ml/v2/health/ready").json == {"ready": True}


def test_v2_model_metadata_and_ready(client):
    meta = client.get("/ml/v2/models/clf").json
    assert meta["name"] == "clf"
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("predict", "BYTES", [-1]),
        ("predict_proba", "FP64", [-1, 2]),
    ]
    assert client.get("/ml/v2/models/clf/versions/2").json["parameters"]["version"] == "2"
    reg = client.get("/ml/v2/models/reg").json
    assert [(o["name"], o["datatype"], o["shape"]) for o in reg["outputs"]] == [
        ("predict", "FP64", [-1])
    ]
    named = client.get("/ml/v2/models/named").json
    assert named["inputs"][0]["parameters"] == {"feature_names": ["a", "b", "c", "d"]}
    assert named["outputs"][0]["datatype"] == "INT64"
    assert client.get("/ml/v2/models/clf/ready").json == {
        "name": "clf",
        "version": "1",
        "ready": True,
    }
    assert client.get("/ml/v2/models/clf/versions/2/ready").status_code == 200
    assert_error(client.get("/ml/v2/models/nope"), 404, "not found")
    assert_error(client.get("/ml/v2/models/clf/versions/7/ready"), 404, "no version 7")


def v2_input(array, datatype="FP64", name="input"):
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "data": array.ravel().tolist(),
    }


def test_v2_infer_json(client, models):
    body = {"id": "r1", "inputs": [v2_input(X)]}
    response = client.post("/ml/v2/models/clf/infer", json=body)
    assert response.status_code == 200
    out = response.json
    assert out["model_name"] == "clf" and out["model_version"] == "1" and out["id"] == "r1"
    predict, proba = out["outputs"]
    assert predict == {
        "name": "predict",
        "datatype": "BYTES",
        "shape": [5],
        "data": models["clf"].predict(X).tolist(),
    }
    assert proba["shape"] == [5, 2]
    np.testing.assert_allclose(np.reshape(proba["data"], (5, 2)), models["clf"].predict_proba(X))
    assert response.headers["X-Model-Version"] == "1"


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32", "INT64", "BOOL"])
def test_v2_infer_input_datatypes(client, models, datatype):
    values = (X > 0) if datatype == "BOOL" else np.round(X * 10)
    body = {"inputs": [v2_input(values, datatype)], "outputs": [{"name": "predict"}]}
    response = client.post("/ml/v2/models/reg/versions/1/infer", json=body)
    assert response.status_code == 200, response.json
    expected = models["reg"].predict(values.astype(np.float64))
    np.testing.assert_allclose(response.json["outputs"][0]["data"], expected, rtol=1e-6)


def test_v2_infer_binary_in_and_out(client, models):
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [5, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 80},
            }
        ],
        "outputs": [
            {"name": "predict", "parameters": {"binary_data": True}},
            {"name": "predict_proba"},
        ],
    }
    raw_header = json.dumps(header).encode()
    body = raw_header + X.astype("<f4").tobytes()
    response = client.post(
        "/ml/v2/models/clf/infer",
        data=body,
        content_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(raw_header))},
    )
    assert response.status_code == 200, response.get_data()
    length = int(response.headers["Inference-Header-Content-Length"])
    payload = response.get_data()
    out = json.loads(payload[:length])
    predict, proba = out["outputs"]
    assert "data" not in predict and "data" in proba
    raw = payload[length:]
    assert len(raw) == predict["parameters"]["binary_data_size"]
    labels, offset = [], 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        labels.append(raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    assert labels == models["clf"].predict(X.astype(np.float32)).tolist()


def test_v2_binary_output_for_all(client, models):
    body = {"inputs": [v2_input(X)], "parameters": {"binary_data_output": True}}
    response = client.post("/ml/v2/models/reg/infer", json=body)
    length = int(response.headers["Inference-Header-Content-Length"])
    raw = response.get_data()[length:]
    np.testing.assert_allclose(np.frombuffer(raw, "<f8"), models["reg"].predict(X))


def test_v2_several_inputs_are_feature_columns(client, models):
    inputs = [v2_input(X[:, i], name=name) for i, name in reversed(list(enumerate("abcd")))]
    response = client.post("/ml/v2/models/named/infer", json={"inputs": inputs})
    assert response.json["outputs"][0]["data"] == models["named"].predict(X).tolist()


def _binary_request(client, header, raw, length=None):
    raw_header = json.dumps(header).encode()
    return client.post(
        "/ml/v2/models/reg/infer",
        data=raw_header + raw,
        headers={
            "Inference-Header-Content-Length": str(
                length if length is not None else len(raw_header)
            )
        },
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'inputs' must be a non-empty list"),
        ({"inputs": [7]}, "input 0 must be an object"),
        (
            {"inputs": [{"shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
            "input 0 has no 'name'",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}
                ]
            },
            "unknown datatype 'FP99'",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BYTES", "data": ["a"]}]},
            "BYTES is not supported",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, -4], "datatype": "FP64", "data": [1]}]},
            "'shape' must be a list of non-negative integers",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}
                ]
            },
            "shape [2, 4] needs 8 values, 'data' has 4",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64"}]},
            "neither 'data' nor a binary_data_size",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            "expected 4 features, got 3",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, "x", 4]}
                ]
            },
            "only numbers",
        ),
        (
            {"inputs": [v2_input(X)], "outputs": [{"name": "nope"}]},
            "has no output 'nope'; its outputs are predict",
        ),
        (
            {"inputs": [v2_input(X)], "outputs": [{"name": "predict_proba"}]},
            "has no output 'predict_proba'",
        ),
        (
            {
                "inputs": [v2_input(X)],
                "outputs": [{"name": "predict", "parameters": {"class_count": 2}}],
            },
            "class_count",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 4],
                        "datatype": "FP64",
                        "data": [1, 2, 3, 4],
                        "parameters": {"shared_memory_region": "r"},
                    }
                ]
            },
            "shared memory",
        ),
    ],
)
def test_v2_bad_requests(client, body, message):
    assert_error(client.post("/ml/v2/models/reg/infer", json=body), 400, message)


def test_v2_bad_binary_requests(client):
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 4],
                "datatype": "FP64",
                "parameters": {"binary_data_size": 32},
            }
        ]
    }
    good = np.ones(4).tobytes()
    assert _binary_request(client, header, good).status_code == 200
    assert_error(_binary_request(client, header, good[:16]), 400, "runs past the end of the body")
    assert_error(_binary_request(client, header, good + b"xx"), 400, "declare 32")
    assert_error(
        _binary_request(client, header, good, length=10**6),
        400,
        "Inference-Header-Content-Length is 1000000",
    )
    assert_error(_binary_request(client, header, good, length="abc"), 400, "must be an integer")
    header["inputs"][0]["parameters"]["binary_data_size"] = 31
    assert_error(
        _binary_request(client, header, good[:31]),
        400,
        "binary_data_size is 31 bytes but shape [1, 4] of FP64 needs 32",
    )
    nan = np.array([1.0, np.nan, 0, 0]).tobytes()
    header["inputs"][0]["parameters"]["binary_data_size"] = 32
    assert_error(_binary_request(client, header, nan), 400, "NaN at row 0, column 1")


def test_v2_unknown_model_and_version(client):
    body = {"inputs": [v2_input(X)]}
    assert_error(client.post("/ml/v2/models/nope/infer", json=body), 404, "not found")
    assert_error(client.post("/ml/v2/models/reg/versions/3/infer", json=body), 404, "no version 3")
    assert_error(
        client.post("/ml/v2/models/reg/versions/x/infer", json=body), 404, "expected a number"
    )
    assert_error(
        client.post("/ml/v2/models/reg/versions/\u00b2/infer", json=body), 404, "expected a number"
    )


# ------------------------------------------------------------------ MLflow


@pytest.fixture
def mlflow_client(store):
    app = Flask("mlflow")
    app.config["MLSERVE_DEFAULT_MODEL"] = "named"
    app.register_blueprint(blueprint(store, reload_interval=0))
    return app.test_client()


def test_mlflow_formats(mlflow_client, models):
    expected = models["named"].predict(X).tolist()
    split = {"dataframe_split": {"columns": ["d", "c", "b", "a"], "data": X[:, ::-1].tolist()}}
    records = {"dataframe_records": [dict(zip("abcd", row)) for row in ROWS]}
    for body in (split, records, {"instances": ROWS}, {"inputs": ROWS}):
        response = mlflow_client.post("/invocations", json=body)
        assert response.status_code == 200, response.json
        assert response.json == {"predictions": expected}
        assert response.headers["X-Model-Version"] == "1"
    csv_body = "b,a,c,d\n" + "\n".join(",".join(str(v) for v in row[[1, 0, 2, 3]]) for row in X)
    response = mlflow_client.post("/invocations", data=csv_body, content_type="text/csv")
    assert response.json == {"predictions": expected}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "exactly one of 'dataframe_split', 'dataframe_records', 'instances', 'inputs'"),
        ({"instances": ROWS, "inputs": ROWS}, "got 'instances', 'inputs'"),
        (
            {"dataframe_split": {"columns": ["a", "b", "c", "x"], "data": ROWS}},
            "missing feature 'd'",
        ),
        (
            {"dataframe_split": {"columns": ["a", "b"], "data": ROWS}},
            "2 columns but rows of 4 values",
        ),
        ({"dataframe_split": [1]}, "must be an object with 'data'"),
        ({"dataframe_records": [{"a": 1, "b": 2, "c": 3}]}, "missing feature 'd'"),
        (
            {"dataframe_records": [{"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 1}]},
            "dataframe_records row 1 is missing features 'b', 'c', 'd'",
        ),
        ({"dataframe_records": [1, 2]}, "list of objects"),
    ],
)
def test_mlflow_bad_requests(mlflow_client, body, message):
    assert_error(mlflow_client.post("/invocations", json=body), 400, message)


def test_mlflow_csv_errors_and_health(mlflow_client):
    response = mlflow_client.post(
        "/invocations", data="a,b,c,d\n1,2,x,4\n", content_type="text/csv"
    )
    assert_error(response, 400, "CSV data must be numbers")
    assert_error(
        mlflow_client.post("/invocations", data="", content_type="text/csv"),
        400,
        "CSV body is empty",
    )
    assert_error(
        mlflow_client.post("/invocations", data="x", content_type="text/html"), 415, "text/csv"
    )
    assert mlflow_client.get("/ping").status_code == 200
    assert mlflow_client.get("/health").json == {"status": "ok"}
    assert mlflow_client.get("/version").get_data(as_text=True) == mlserve.__version__


def test_mlflow_without_a_default_model(client):
    assert_error(
        client.post("/ml/invocations", json={"instances": ROWS}),
        404,
        "set MLSERVE_DEFAULT_MODEL to one of clf, named, reg",
    )


# ------------------------------------------------------------------ simple


def test_simple_predict(client, models):
    response = client.post("/ml/predict/clf", json={"features": ROWS[0]})
    assert response.json == {
        "model": "clf",
        "version": 1,
        "prediction": models["clf"].predict(X[:1])[0],
    }
    response = client.post("/ml/predict/clf", json={"instances": ROWS, "return": "all"})
    assert response.json["predictions"] == models["clf"].predict(X).tolist()
    np.testing.assert_allclose(response.json["probabilities"], models["clf"].predict_proba(X))
    response = client.post(
        "/ml/predict/clf?version=2", json={"features": ROWS[0], "return": "proba"}
    )
    assert (
        set(response.json) == {"model", "version", "probabilities"}
        and response.json["version"] == 2
    )
    response = client.post("/ml/predict/clf?alias=staging", json={"features": ROWS[0]})
    assert response.headers["X-Model-Version"] == "2"
    response = client.post("/ml/predict/named", json={"features": dict(zip("dcba", ROWS[0][::-1]))})
    assert response.json["prediction"] == models["named"].predict(X[:1])[0]


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_simple_predict_npy(client, models):
    response = client.post("/ml/predict/reg", data=npy(X), content_type="application/x-npy")
    np.testing.assert_allclose(response.json["predictions"], models["reg"].predict(X))
    response = client.post(
        "/ml/predict/reg", data=npy(X[0].astype(np.float32)), content_type="application/x-npy"
    )
    assert response.json["prediction"] == pytest.approx(models["reg"].predict(X[:1])[0], rel=1e-6)
    response = client.post(
        "/ml/predict/clf?return=proba",
        data=npy(X),
        content_type="application/x-npy",
        headers={"Accept": "application/x-npy"},
    )
    assert response.mimetype == "application/x-npy"
    np.testing.assert_allclose(
        np.load(io.BytesIO(response.get_data())), models["clf"].predict_proba(X)
    )
    response = client.post(
        "/ml/predict/clf",
        data=npy(X),
        content_type="application/x-npy",
        headers={"Accept": "application/x-npy"},
    )
    labels = np.load(io.BytesIO(response.get_data()), allow_pickle=False)
    assert labels.tolist() == models["clf"].predict(X).tolist()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"garbage", "malformed .npy body"),
        (npy(np.array([{"a": 1}], dtype=object)), "malformed .npy body"),
        (npy(np.array(["a", "b"])), "must hold a numeric array"),
        (npy(np.zeros((1, 1, 4))), "1 or 2 dimensions, got 3"),
        (npy(np.zeros((2, 3))), "expected 4 features, got 3"),
    ],
)
def test_simple_npy_errors(client, data, message):
    assert_error(
        client.post("/ml/predict/reg", data=data, content_type="application/x-npy"), 400, message
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "exactly one of 'features' (one row) or 'instances'"),
        ({"features": [[1, 2, 3, 4]]}, "one row"),
        ({"features": "1,2,3,4"}, "must be an array of numbers, got a string"),
        ({"features": {"a": 1}}, "missing feature"),
    ],
)
def test_simple_bad_requests(client, body, message):
    assert_error(client.post("/ml/predict/named", json=body), 400, message)


def test_models_listing(client):
    listing = client.get("/ml/models").json["models"]
    assert [m["name"] for m in listing] == ["clf", "named", "reg"]
    clf = listing[0]
    assert clf["versions"] == [1, 2]
    assert clf["aliases"] == {
        "production": [{"version": 1, "weight": 1.0}],
        "staging": [{"version": 2, "weight": 1.0}],
    }
    assert clf["input_shape"] == [-1, 4]
    assert client.get("/ml/models/reg").json["name"] == "reg"
    assert_error(client.get("/ml/models/nope"), 404, "not found")


def test_openapi_document(client):
    doc = client.get("/ml/openapi.json").json
    assert doc["openapi"].startswith("3.")
    assert doc["servers"] == [{"url": "/ml"}]
    for path in (
        "/v1/models/{name}:predict",
        "/v2/models/{name}/infer",
        "/invocations",
        "/predict/{name}",
        "/models",
    ):
        assert path in doc["paths"]


# ------------------------------------------------------- reload and canary


def test_admin_reload_sees_new_versions_and_moved_aliases(client, store, models):
    assert client.post("/ml/predict/reg", json={"features": ROWS[0]}).json["version"] == 1
    store.publish("reg", models["reg"], alias="production")
    assert client.post("/ml/predict/reg", json={"features": ROWS[0]}).json["version"] == 1
    response = client.post("/ml/admin/reload")
    assert response.json["loaded"]["reg"] == [1, 2]
    assert client.post("/ml/predict/reg", json={"features": ROWS[0]}).json["version"] == 2
    store.rollback("reg", "production")
    client.post("/ml/admin/reload")
    assert client.post("/ml/predict/reg", json={"features": ROWS[0]}).json["version"] == 1
    store.publish("new", models["reg"])
    client.post("/ml/admin/reload")
    assert client.post("/ml/predict/new", json={"features": ROWS[0]}).status_code == 200


def test_polling_reload(store, models):
    app = Flask("poll")
    app.register_blueprint(blueprint(store, reload_interval=0.05))
    client = app.test_client()
    assert client.post("/predict/reg", json={"features": ROWS[0]}).json["version"] == 1
    store.publish("reg", models["reg"], alias="production")
    time.sleep(0.1)
    assert client.post("/predict/reg", json={"features": ROWS[0]}).json["version"] == 2


def test_a_broken_new_version_never_takes_traffic(client, store, models):
    version = store.publish("reg", models["reg"], alias="production")
    store.path("reg", version).write_bytes(b"corrupted after publish")
    client.post("/ml/admin/reload")
    response = client.post("/ml/predict/reg", json={"features": ROWS[0]})
    assert response.status_code == 200
    assert response.json["version"] == 1


def test_admin_can_be_disabled(store):
    app = Flask("noadmin")
    app.register_blueprint(blueprint(store, admin_enabled=False, reload_interval=0))
    assert_error(app.test_client().post("/admin/reload"), 404, "MLSERVE_ADMIN_ENABLED")


def test_canary_alias_splits_traffic_and_reports_the_version(client, store):
    store.set_alias("clf", "production", {1: 50, 2: 50})
    client.post("/ml/admin/reload")
    seen = {
        client.post("/ml/predict/clf", json={"features": ROWS[0]}).headers["X-Model-Version"]
        for _ in range(60)
    }
    assert seen == {"1", "2"}


def test_sticky_canary_follows_the_key_header(store):
    store.set_alias("clf", "production", {1: 50, 2: 50})
    app = Flask("sticky")
    app.config.update(
        MLSERVE_STORE=str(store.root), MLSERVE_RELOAD_INTERVAL=0,
        MLSERVE_CANARY_KEY_HEADER="X-User-ID",
    )  # fmt: skip
    MLServe(app)
    client = app.test_client()

    def version(user=None):
        headers = {"X-User-ID": user} if user is not None else {}
        response = client.post("/predict/clf", json={"features": ROWS[0]}, headers=headers)
        assert response.status_code == 200
        return response.headers["X-Model-Version"]

    for user in ("alice", "bob", "carol"):
        expected = str(store.resolve("clf", sticky_key=user))
        assert {version(user) for _ in range(15)} == {expected}
    assert {version(f"u{i}") for i in range(60)} == {"1", "2"}
    assert {version() for _ in range(60)} == {"1", "2"}  # no header: random, as before


@pytest.mark.parametrize("bad", ["X User", "X-User:", 3])
def test_canary_key_header_must_be_a_header_name(store, bad):
    app = Flask("badsticky")
    app.config.update(MLSERVE_STORE=str(store.root), MLSERVE_CANARY_KEY_HEADER=bad)
    with pytest.raises(ConfigError, match="MLSERVE_CANARY_KEY_HEADER must be an HTTP header name"):
        MLServe(app)


# --------------------------------------------------------------- extension


def test_extension_with_config_keys(store):
    app = Flask("ext")
    app.config.update(
        MLSERVE_STORE=str(store.root), MLSERVE_URL_PREFIX="/api/ml", MLSERVE_RELOAD_INTERVAL=0
    )

    @app.get("/")
    def index():
        return "host app"

    MLServe(app)
    client = app.test_client()
    assert client.get("/").get_data(as_text=True) == "host app"
    assert client.post("/api/ml/predict/reg", json={"features": ROWS[0]}).status_code == 200
    with app.app_context():
        assert MLServe.state().config.reload_interval == 0


def test_extension_with_app_factories_and_two_apps(store, tmp_path, models):
    other = ModelStore(tmp_path / "other")
    other.publish("only", models["reg"])
    ext = MLServe()
    apps = []
    for root in (store.root, other.root):
        app = Flask("factory")
        app.config["MLSERVE_STORE"] = root
        ext.init_app(app)
        apps.append(app)
    assert [m["name"] for m in apps[0].test_client().get("/models").json["models"]] == [
        "clf",
        "named",
        "reg",
    ]
    assert [m["name"] for m in apps[1].test_client().get("/models").json["models"]] == ["only"]
    assert serving_state(apps[1]).store.root == other.root


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "MLSERVE_STORE is not set"),
        ({"MLSERVE_STORE": 3}, "MLSERVE_STORE must be a folder path or a ModelStore"),
        ({"MLSERVE_MAX_BODY_BYTES": "64M"}, "MLSERVE_MAX_BODY_BYTES must be a positive integer"),
        ({"MLSERVE_MAX_BODY_BYTES": 0}, "MLSERVE_MAX_BODY_BYTES must be a positive integer"),
        (
            {"MLSERVE_RELOAD_INTERVAL": -1},
            "MLSERVE_RELOAD_INTERVAL must be a number of seconds >= 0",
        ),
        ({"MLSERVE_DEFAULT_MODEL": "a/b"}, "MLSERVE_DEFAULT_MODEL: invalid model name"),
        ({"MLSERVE_DEFAULT_ALIAS": "1"}, "MLSERVE_DEFAULT_ALIAS"),
        ({"MLSERVE_WARMUP": "yes"}, "MLSERVE_WARMUP must be True or False"),
        ({"MLSERVE_URL_PREFIX": "ml"}, "MLSERVE_URL_PREFIX must be '' or start with '/'"),
        ({"MLSERVE_RELOAD": 1}, "unknown configuration key MLSERVE_RELOAD"),
    ],
)
def test_extension_config_errors_name_the_key(store, config, message):
    app = Flask("bad")
    if "MLSERVE_STORE" not in config and message != "MLSERVE_STORE is not set":
        config = {"MLSERVE_STORE": str(store.root), **config}
    app.config.update(config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        MLServe(app)


def test_flask_cli_commands(app, store, models, tmp_path):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["mlserve", "models"])
    assert result.exit_code == 0, result.output
    assert "clf  versions: 1, 2  aliases: production -> v1; staging -> v2" in result.output
    path = tmp_path / "reg.mls"
    mlserve.save(models["reg"], path)
    result = runner.invoke(
        args=["mlserve", "publish", str(path), "--name", "reg", "--alias", "staging"]
    )
    assert result.output.strip() == "published reg version 2 as staging"
    result = runner.invoke(args=["mlserve", "alias", "reg", "production", "1=90,2=10"])
    assert result.output.strip() == "reg: production -> v1 (90%), v2 (10%)"
    result = runner.invoke(args=["mlserve", "rollback", "reg", "production"])
    assert result.output.strip() == "reg: production -> v1"
    result = runner.invoke(args=["mlserve", "rollback", "reg", "production"])
    assert result.exit_code == 1 and "no previous version" in result.output


def test_host_app_routing_errors_are_left_to_the_host(client):
    # the blueprint does not take over the host app's own 404 pages
    response = client.get("/not-mlserve")
    assert response.status_code == 404 and not response.is_json


def test_edge_values_are_client_errors(client):
    body = {
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP16", "data": [0, 0, 0, 65520]}]
    }
    assert_error(client.post("/ml/v2/models/reg/infer", json=body), 400, "out of range for FP16")
    huge = '{"instances": [[1, 2, 3, ' + "9" * 400 + "]]}"
    response = client.post("/ml/v1/models/reg:predict", data=huge, content_type="application/json")
    assert_error(response, 400, "too large for float64")
    huger = '{"instances": [[1, 2, 3, ' + "9" * 5000 + "]]}"
    response = client.post("/ml/v1/models/reg:predict", data=huger, content_type="application/json")
    assert_error(response, 400, "a number is too large for float64 at line 1, column 26")
    lone = '{"id": ' + "9" * 5000 + ', "inputs": []}'  # a lone integer is a Python int
    response = client.post("/ml/v2/models/reg/infer", data=lone, content_type="application/json")
    assert_error(response, 400, "malformed JSON: Exceeds the limit")
    deep = '{"instances": ' + "[" * 100000 + "]" * 100000 + "}"
    response = client.post("/ml/v1/models/reg:predict", data=deep, content_type="application/json")
    assert_error(response, 400, "malformed JSON: nested too deeply")
    response = client.post("/ml/v1/models/reg:predict", json={"inputs": {"a": [], "b": 0}})
    assert_error(response, 400, "was fitted without feature names")
    response = client.post(
        "/ml/v1/models/named:predict", json={"inputs": {"a": [], "b": 0, "c": [1], "d": [2]}}
    )
    assert_error(response, 400, "columns must all have the same length")
