"""A k-means model served by every protocol: cluster ids, and distances on request.

Over real HTTP (a gunicorn server from tests/serving_support.py): V1, V2
(JSON and binary), MLflow and /predict/<name> return the model's own
predict (int64 ids) and, with "return": "distances" (or the V2 output
"transform", or MLflow's params), its transform; the metadata endpoints
describe both outputs and the number of clusters; the store refuses to move
an alias to a model with another number of clusters. The Flask test client
covers the error cases (no probabilities, no distances for a regressor).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import requests
from flask import Flask
from serving_support import Server, fit_regressor

import mlserve
from mlserve._compatibility import compatibility_problems
from mlserve.serving import blueprint
from mlserve.store import IncompatibleModelError, ModelStore

rng = np.random.default_rng(7)
CENTERS = np.array([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 0.0, 0.0], [0.0, 5.0, 5.0, 5.0]])
X_TRAIN = np.vstack([c + rng.normal(scale=0.5, size=(60, 4)) for c in CENTERS])
ROWS = X_TRAIN[::37][:5]


def fit_kmeans(k=3, names=None):
    X = X_TRAIN
    if names is not None:
        pd = pytest.importorskip("pandas")
        X = pd.DataFrame(X, columns=names)
    return mlserve.KMeans(k, random_state=0).fit(X)


@pytest.fixture(scope="module")
def models():
    return {"km": fit_kmeans(), "reg": fit_regressor()}


@pytest.fixture(scope="module")
def server(tmp_path_factory, models):
    root = tmp_path_factory.mktemp("kmeans")
    store = ModelStore(root / "models")
    store.publish("km", models["km"], alias="production")
    server = Server(root / "models", "--workers", "1", "--threads", "4", "--no-access-log")
    try:
        yield server
    finally:
        server.stop()


def _post(server, path, body, **kwargs):
    response = requests.post(f"{server.url}/{path.lstrip('/')}", json=body, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def test_v1_returns_cluster_ids_and_distances(server, models):
    km = models["km"]
    expected_ids = km.predict(ROWS).tolist()
    expected_dist = km.transform(ROWS)
    body = _post(server, "/v1/models/km:predict", {"instances": ROWS.tolist()})
    assert body == {"predictions": expected_ids}
    body = _post(server, "/v1/models/km:predict",
                 {"instances": ROWS.tolist(), "return": "distances"})  # fmt: skip
    np.testing.assert_allclose(body["predictions"], expected_dist, rtol=1e-15)
    body = _post(server, "/v1/models/km:predict", {"instances": ROWS.tolist(), "return": "all"})
    assert [p["predict"] for p in body["predictions"]] == expected_ids
    np.testing.assert_allclose([p["transform"] for p in body["predictions"]], expected_dist)
    body = _post(server, "/v1/models/km:predict",
                 {"instances": ROWS.tolist(), "signature_name": "transform"})  # fmt: skip
    np.testing.assert_allclose(body["predictions"], expected_dist)


def test_v2_json_and_binary(server, models):
    km = models["km"]
    request = {"inputs": [{"name": "input", "shape": list(ROWS.shape), "datatype": "FP64",
                           "data": ROWS.ravel().tolist()}]}  # fmt: skip
    body = _post(server, "/v2/models/km/infer", request)  # no outputs named: all of them
    assert [o["name"] for o in body["outputs"]] == ["predict", "transform"]
    body = _post(server, "/v2/models/km/infer", {**request, "outputs": [{"name": "predict"}]})
    (out,) = body["outputs"]
    assert out["name"] == "predict" and out["datatype"] == "INT64"
    assert out["data"] == km.predict(ROWS).tolist()
    body = _post(server, "/v2/models/km/infer", {**request, "outputs": [{"name": "transform"}]})
    (out,) = body["outputs"]
    assert out["datatype"] == "FP64" and out["shape"] == [len(ROWS), 3]
    np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), km.transform(ROWS))
    # binary output
    header = json.dumps({**request, "outputs": [{"name": "transform",
                                                 "parameters": {"binary_data": True}}]}).encode()
    response = requests.post(
        f"{server.url}/v2/models/km/infer", data=header, timeout=30,
        headers={"Inference-Header-Content-Length": str(len(header)),
                 "Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:length])
    raw = response.content[length:]
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == len(raw)
    values = struct.unpack(f"<{len(raw) // 8}d", raw)
    np.testing.assert_array_equal(np.reshape(values, (len(ROWS), 3)), km.transform(ROWS))


def test_mlflow_and_simple_predict(server, models):
    km = models["km"]
    body = _post(server, "/invocations", {"inputs": ROWS.tolist()})
    assert body == {"predictions": km.predict(ROWS).tolist()}
    body = _post(server, "/invocations", {"inputs": ROWS.tolist(),
                                          "params": {"output": "distances"}})  # fmt: skip
    np.testing.assert_allclose(body["predictions"], km.transform(ROWS))
    body = _post(server, "/predict/km", {"features": ROWS[0].tolist()})
    assert body["prediction"] == int(km.predict(ROWS[:1])[0])
    body = _post(server, "/predict/km", {"features": ROWS[0].tolist(), "return": "distances"})
    np.testing.assert_allclose(body["distances"], km.transform(ROWS[:1])[0])
    body = _post(server, "/predict/km", {"instances": ROWS.tolist(), "return": "distances"})
    np.testing.assert_allclose(body["distances"], km.transform(ROWS))


def test_metadata_describes_ids_distances_and_clusters(server):
    meta = requests.get(f"{server.url}/v2/models/km", timeout=30).json()
    assert meta["parameters"]["task"] == "clustering"
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["predict"]["datatype"] == "INT64" and outputs["predict"]["shape"] == [-1]
    assert outputs["transform"]["datatype"] == "FP64"
    assert outputs["transform"]["shape"] == [-1, 3]
    assert outputs["transform"]["parameters"] == {"n_clusters": 3}
    v1 = requests.get(f"{server.url}/v1/models/km/metadata", timeout=30).json()
    sig = v1["metadata"]["signature_def"]
    assert sig["outputs"]["transform"] == {"dtype": "FP64", "shape": [-1, 3]}
    assert sig["outputs"]["predict"] == {"dtype": "INT64", "shape": [-1]}
    config = requests.get(f"{server.url}/v2/models/km/config", timeout=30).json()
    assert config["parameters"]["n_clusters"] == {"string_value": "3"}


# ------------------------------------------------------------- in-process cases


def make_client(store, **config):
    app = Flask("host")
    app.config.update({"MLSERVE_RELOAD_INTERVAL": 0, **config})
    app.register_blueprint(blueprint(store), url_prefix="/ml")
    return app.test_client()


@pytest.fixture
def client(tmp_path, models):
    store = ModelStore(tmp_path / "models")
    store.publish("km", models["km"], alias="production")
    store.publish("reg", models["reg"], alias="production")
    return make_client(store)


@pytest.mark.parametrize("path, body, message", [
    ("/ml/v1/models/km:predict", {"instances": [[0, 0, 0, 0]], "return": "proba"},
     "model 'km' is not a classifier; it has no probabilities"),
    ("/ml/v1/models/reg:predict", {"instances": [[0, 0, 0, 0]], "return": "distances"},
     "model 'reg' is not a k-means model; it has no distances (only a clusterer has)"),
    ("/ml/invocations", {"inputs": [[0, 0, 0, 0]], "params": {"output": "distances"}},
     None),  # two models: the default model is missing, a 404 before any output check
    ("/ml/predict/km", {"features": [0, 0, 0, 0], "return": "proba"},
     "model 'km' is not a classifier; it has no probabilities"),
    ("/ml/predict/km", {"features": [0, 0, 0], "return": "distances"},
     "expected 4 features, got 3"),
    ("/ml/predict/km", {"features": [0, 0, float("nan"), 0]}, None),
])  # fmt: skip
def test_bad_requests_are_4xx_with_a_message(client, path, body, message):
    response = client.post(path, data=json.dumps(body), content_type="application/json")
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    assert set(response.json) == {"error"}
    if message is not None:
        assert message in response.json["error"]


def test_batched_distances_match_unbatched(tmp_path, models):
    store = ModelStore(tmp_path / "models")
    store.publish("km", models["km"], alias="production")
    km = models["km"]
    for batching in (True, False):
        client = make_client(store, MLSERVE_BATCHING=batching)
        response = client.post("/ml/v1/models/km:predict",
                               json={"instances": ROWS.tolist(), "return": "all"})  # fmt: skip
        assert response.status_code == 200, response.get_data(as_text=True)
        predictions = response.json["predictions"]
        assert [p["predict"] for p in predictions] == km.predict(ROWS).tolist()
        np.testing.assert_allclose([p["transform"] for p in predictions], km.transform(ROWS))


def test_named_features_are_matched_by_name(tmp_path):
    km = fit_kmeans(names=["a", "b", "c", "d"])
    store = ModelStore(tmp_path / "models")
    store.publish("km", km, alias="production")
    client = make_client(store)
    record = dict(zip(["d", "c", "b", "a"], ROWS[0][::-1].tolist()))
    response = client.post("/ml/predict/km", json={"features": record})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["prediction"] == int(km.predict(ROWS[:1])[0])
    response = client.post("/ml/predict/km", json={"features": {"a": 1, "b": 2, "c": 3}})
    assert response.status_code == 400
    assert "missing feature 'd'" in response.json["error"]


def test_store_compatibility_knows_clusters(tmp_path):
    three, four = fit_kmeans(3), fit_kmeans(4)
    assert compatibility_problems(three.metadata, fit_kmeans(3).metadata) == []
    assert compatibility_problems(three.metadata, four.metadata, candidate_label="version 2") == [
        "version 2 has 4 clusters, the alias serves 3"
    ]
    problems = compatibility_problems(fit_regressor().metadata, three.metadata)
    assert problems[0] == (
        "the new version is a clustering model, the alias serves a regression model"
    )
    store = ModelStore(tmp_path / "models")
    store.publish("km", three, alias="production")
    refusal = r"version 2 has 4 clusters, production serves 3 \(version 1\)"
    with pytest.raises(IncompatibleModelError, match=refusal):
        store.publish("km", four, alias="production")
