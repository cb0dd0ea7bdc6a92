"""The rest of the protocols clients use (issue 12 part 5).

Triton's model configuration, statistics and model repository extensions
through tritonclient against a real gunicorn server; KServe V1 liveness at the
mount point; TF Serving's signature_name; MLflow's params; JSON bodies without
a Content-Type; JSON errors (404 and 405 included) for browsers under the
blueprint's mount, while the host app's own pages keep their errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
from flask import Flask
from serving_support import Server, training_data

from mlserve.serving import blueprint, serving_state
from mlserve.serving.security import create_key
from mlserve.store import ModelStore

X, _ = training_data(seed=3, n=6)
ROWS = X.tolist()
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def make_client(store, prefix="/ml", **config):
    app = Flask("host")
    app.config.update({"MLSERVE_RELOAD_INTERVAL": 0, **config})
    app.register_blueprint(blueprint(store), url_prefix=prefix)
    return app.test_client()


def assert_error(response, status, *fragments):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)[:200]
    assert set(response.json) == {"error"}
    for fragment in fragments:
        assert fragment in response.json["error"], response.json["error"]


# ------------------------------------------------- Triton over a real server


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory, models):
    root = tmp_path_factory.mktemp("triton")
    store = ModelStore(root / "models")
    store.publish("reg", models["reg"], alias="production")
    store.publish("clf", models["clf"], alias="production")
    store.publish("clf", models["clf"])  # version 2: not what production serves
    keys = str(root / "keys.json")
    admin, _ = create_key(keys, ["predict", "read", "admin"], name="ops")
    reader, _ = create_key(keys, ["predict", "read"], name="app")
    server = Server(
        root / "models", "--workers", "1", "--threads", "4", "--no-access-log",
        "--api-keys", keys,
    )  # fmt: skip
    try:
        yield server, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {reader}"}
    finally:
        server.stop()


@pytest.fixture
def triton(triton_server):
    import tritonclient.http as triton_http

    server, admin, reader = triton_server
    client = triton_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        yield client, admin, reader
    finally:
        client.close()


def _infer(client, name, rows, headers, **kwargs):
    import tritonclient.http as triton_http

    tensor = triton_http.InferInput("input", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(np.ascontiguousarray(rows))
    return client.infer(name, [tensor], headers=headers, **kwargs)


def test_stats_url_is_not_taken_as_a_model_name(triton_server):
    server, _, reader = triton_server
    response = requests.get(f"{server.url}/v2/models/stats", headers=reader, timeout=10)
    assert response.status_code == 200, response.text  # today: 404 "model 'stats' not found"
    assert {entry["name"] for entry in response.json()["model_stats"]} == {"clf", "reg"}


def test_tritonclient_model_config(triton, models):
    client, _, reader = triton
    config = client.get_model_config("clf", headers=reader)
    assert config["name"] == "clf"
    assert config["input"] == [
        {"name": "input", "data_type": "TYPE_FP64", "format": "FORMAT_NONE", "dims": [4]}
    ]
    outputs = {o["name"]: o for o in config["output"]}
    assert outputs["predict"]["data_type"] == "TYPE_STRING"  # the labels "high"/"low"
    assert outputs["predict"]["reshape"] == {"shape": []}  # one label per row
    assert outputs["predict_proba"] == {"name": "predict_proba", "data_type": "TYPE_FP64", "dims": [2]}
    assert config["max_batch_size"] == 100_000  # MLSERVE_MAX_ROWS: rows per request
    assert config["parameters"]["classes"] == {"string_value": "high,low"}
    assert config["parameters"]["version"] == {"string_value": "1"}  # production
    assert "dynamic_batching" in config  # batching is on by default
    assert client.get_model_config("clf", "2", headers=reader)["parameters"]["version"] == {
        "string_value": "2"
    }
    assert client.get_model_config("reg", headers=reader)["output"][0]["data_type"] == "TYPE_FP64"


def test_tritonclient_statistics_count_real_requests(triton, models):
    from tritonclient.utils import InferenceServerException

    client, _, reader = triton

    def clf_v1():
        (entry,) = client.get_inference_statistics("clf", "1", headers=reader)["model_stats"]
        assert entry["name"] == "clf" and entry["version"] == "1"
        return entry

    before = clf_v1()
    for _ in range(3):
        _infer(client, "clf", X[:2], reader)
    with pytest.raises(InferenceServerException, match="expected 4 features, got 3"):
        _infer(client, "clf", X[:2, :3], reader)
    after = clf_v1()
    stats, old = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] - old["success"]["count"] == 3
    assert stats["fail"]["count"] - old["fail"]["count"] == 1
    assert after["inference_count"] - before["inference_count"] == 6  # rows
    assert after["execution_count"] - before["execution_count"] == 3  # one core call each
    for name in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert stats[name]["count"] - old[name]["count"] == 3, name
    assert stats["compute_infer"]["ns"] > old["compute_infer"]["ns"]
    assert stats["success"]["ns"] >= stats["compute_infer"]["ns"]  # the whole request
    assert after["last_inference"] >= before["last_inference"]
    assert after["last_inference"] > 0
    batch_of_two = next(b for b in after["batch_stats"] if b["batch_size"] == 2)
    assert batch_of_two["compute_infer"]["count"] >= 3

    everything = client.get_inference_statistics(headers=reader)["model_stats"]
    assert {(e["name"], e["version"]) for e in everything} >= {("clf", "1"), ("reg", "1")}
    per_model = client.get_inference_statistics("clf", headers=reader)["model_stats"]
    assert {e["name"] for e in per_model} == {"clf"}
    with pytest.raises(InferenceServerException, match="'nope' not found"):
        client.get_inference_statistics("nope", headers=reader)
    with pytest.raises(InferenceServerException, match="no version 9"):
        client.get_inference_statistics("clf", "9", headers=reader)


def test_tritonclient_repository_index_load_and_unload(triton, models):
    from tritonclient.utils import InferenceServerException

    client, admin, reader = triton
    index = client.get_model_repository_index(headers=reader)
    assert {(e["name"], e.get("version"), e["state"]) for e in index} == {
        ("clf", "1", "READY"), ("clf", "2", "READY"), ("reg", "1", "READY"),
    }  # fmt: skip
    with pytest.raises(InferenceServerException, match="forbidden"):
        client.unload_model("reg", headers=reader)  # admin scope needed
    client.unload_model("reg", headers=admin)
    try:
        assert not client.is_model_ready("reg", headers=reader)
        with pytest.raises(InferenceServerException, match="unloaded"):
            _infer(client, "reg", X, reader)
        index = client.get_model_repository_index(headers=reader)
        assert [e["state"] for e in index if e["name"] == "reg"] == ["UNAVAILABLE"]
        assert "unloaded" in next(e["reason"] for e in index if e["name"] == "reg")
        assert _infer(client, "clf", X, reader).as_numpy("predict").shape == (6,)
    finally:
        client.load_model("reg", headers=admin)
    assert client.is_model_ready("reg", headers=reader)
    result = _infer(client, "reg", X, reader)
    np.testing.assert_allclose(result.as_numpy("predict"), models["reg"].predict(X))
    with pytest.raises(InferenceServerException, match="'nope' is not in the store"):
        client.load_model("nope", headers=admin)
    with pytest.raises(InferenceServerException, match="unknown parameter 'config'; load takes no"):
        client.load_model("reg", headers=admin, config=json.dumps({"max_batch_size": 8}))
    with pytest.raises(InferenceServerException, match="unauthorized"):
        client.load_model("reg")


# -------------------------------------------- the same, through the test client


def test_unload_survives_a_store_refresh_and_frees_the_model(store):
    client = make_client(store, MLSERVE_ADMIN_ENABLED=True)
    state = serving_state(client.application)
    assert client.post("/ml/v2/repository/models/reg/unload").status_code == 200
    state.refresh()  # the periodic reload must not bring it back
    assert "reg" not in state.loaded_versions()
    assert_error(
        client.post("/ml/predict/reg", json={"features": ROWS[0]}), 404,
        "model 'reg' was unloaded from this worker", "/v2/repository/models/reg/load",
    )  # fmt: skip
    assert "reg" not in client.get("/ml/v1/models").json["models"]
    assert_error(client.post("/ml/v2/repository/models/reg/unload"), 404, "unloaded")
    response = client.post("/ml/v2/repository/models/reg/load", data=b"")
    assert response.json == {"name": "reg", "loaded": ["1"]}
    assert client.post("/ml/predict/reg", json={"features": ROWS[0]}).status_code == 200


def test_repository_requests_are_validated(store):
    client = make_client(store, MLSERVE_ADMIN_ENABLED=True)
    assert_error(client.post("/ml/v2/repository/index", data=b"[1]"), 400, "expected a JSON object")
    assert_error(client.post("/ml/v2/repository/index", json={"x": 1}), 400, '{"ready": true|false}')
    assert_error(client.post("/ml/v2/repository/index", json={"ready": "yes"}), 400, "'ready'")
    assert [e["name"] for e in client.post("/ml/v2/repository/index", json={"ready": True}).json] == [
        "clf", "reg",
    ]  # fmt: skip
    unload = "/ml/v2/repository/models/reg/unload"
    assert_error(
        client.post(unload, json={"parameters": {"unload_dependents": "yes"}}), 400,
        "parameter 'unload_dependents' must be bool, got str",
    )  # fmt: skip
    assert_error(
        client.post(unload, json={"parameters": {"force": True}}), 400,
        "unknown parameter 'force'; unload takes 'unload_dependents'",
    )  # fmt: skip
    assert_error(client.post(unload, json={"model": "x"}), 400, "the keys 'model'")
    assert_error(client.post("/ml/v2/repository/models/nope/unload"), 404, "'nope' not found")
    assert client.post(unload, json={"parameters": {"unload_dependents": False}}).status_code == 200


def test_batched_executions_are_counted_once_per_core_call(store):
    client = make_client(store)
    state = serving_state(client.application)
    loaded = state.select("reg")
    assert loaded.batcher is not None  # batching is on by default
    for rows in (X[:2], X[:2], X[:5]):
        loaded.batcher.predict(rows, ("predict",))
    (entry,) = client.get("/ml/v2/models/reg/versions/1/stats").json["model_stats"]
    assert entry["execution_count"] == 3
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in entry["batch_stats"]] == [
        (2, 2), (5, 1),
    ]  # fmt: skip
    assert entry["inference_stats"]["success"]["count"] == 0  # no request came over HTTP


def test_stats_of_every_predict_route(store):
    client = make_client(store)
    client.post("/ml/predict/reg", json={"instances": ROWS})
    client.post("/ml/v1/models/reg:predict", json={"instances": ROWS[:2]})
    client.post("/ml/invocations", json={"instances": ROWS[:1]})  # 404: two models, no default
    client.post(
        "/ml/v2/models/reg/infer",
        json={"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP64", "data": ROWS[:3]}]},
    )
    client.post("/ml/predict/reg", json={"instances": [[1.0]]})  # 400: counted as a failure
    client.post("/ml/predict/nope", json={"instances": ROWS})  # no model: not counted
    (entry,) = client.get("/ml/v2/models/reg/stats").json["model_stats"]
    assert entry["inference_stats"]["success"]["count"] == 3
    assert entry["inference_stats"]["fail"]["count"] == 1
    assert entry["inference_count"] == 6 + 2 + 3
    assert entry["execution_count"] == 3


# ------------------------------------------------------------------ KServe V1


def test_kserve_v1_liveness_at_the_mount_point(store):
    assert make_client(store).get("/ml/").json == {"status": "alive"}
    assert make_client(store, prefix=None).get("/").json == {"status": "alive"}


def test_liveness_at_the_root_never_shadows_the_host_apps_page(store):
    app = Flask("host")
    app.add_url_rule("/", "index", lambda: "<h1>home</h1>")
    app.register_blueprint(blueprint(store, reload_interval=0))
    client = app.test_client()
    assert client.get("/").get_data(as_text=True) == "<h1>home</h1>"
    assert client.post("/").status_code == 405 and not client.post("/").is_json  # the host's


def test_liveness_over_http_needs_no_key(tmp_path, models):
    store = ModelStore(tmp_path / "models")
    store.publish("reg", models["reg"], alias="production")
    keys = str(tmp_path / "keys.json")
    create_key(keys, ["read"], name="reader")
    server = Server(tmp_path / "models", "--workers", "1", "--api-keys", keys, "--no-access-log")
    try:
        response = requests.get(f"{server.url}/", timeout=10)
        assert response.status_code == 200
        assert response.json() == {"status": "alive"}
        assert requests.get(f"{server.url}/models", timeout=10).status_code == 401
    finally:
        server.stop()


def test_signature_name_selects_the_outputs(store, models):
    client = make_client(store)
    url = "/ml/v1/models/clf:predict"
    labels = models["clf"].predict(X).tolist()
    proba = models["clf"].predict_proba(X)
    assert client.post(url, json={"instances": ROWS}).json["predictions"] == labels
    default = client.post(url, json={"instances": ROWS, "signature_name": "serving_default"})
    assert default.json["predictions"] == labels
    both = {"instances": ROWS, "signature_name": "serving_default", "return": "all"}
    assert client.post(url, json=both).json["predictions"][0]["predict"] == labels[0]
    response = client.post(url, json={"instances": ROWS, "signature_name": "predict_proba"})
    np.testing.assert_allclose(response.json["predictions"], proba, rtol=1e-12)
    response = client.post(url, json={"inputs": ROWS, "signature_name": "predict"})
    assert response.json["outputs"] == labels
    assert_error(
        client.post(url, json={"instances": ROWS, "signature_name": "classify"}), 400,
        "unknown signature_name 'classify'",
        "model 'clf' has the signatures serving_default, predict, predict_proba",
    )  # fmt: skip
    assert_error(
        client.post(url, json={"instances": ROWS, "signature_name": 3}), 400, "signature_name 3"
    )
    assert_error(
        client.post(url, json={"instances": ROWS, "signature_name": "predict", "return": "proba"}),
        400, "drop 'return'",
    )  # fmt: skip
    assert_error(
        client.post("/ml/v1/models/reg:predict", json={"instances": ROWS, "signature_name": "predict_proba"}),
        400, "model 'reg' has the signatures serving_default, predict",
    )  # fmt: skip


def test_v1_metadata_lists_the_signatures(store):
    client = make_client(store)
    defs = client.get("/ml/v1/models/clf/metadata").json["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "predict", "predict_proba"}
    assert defs["predict_proba"]["outputs"] == {"predict_proba": {"dtype": "FP64", "shape": [-1, 2]}}
    assert defs["serving_default"]["inputs"]["input"]["shape"] == [-1, 4]
    reg = client.get("/ml/v1/models/reg/metadata").json["metadata"]["signature_def"]["signature_def"]
    assert set(reg) == {"serving_default", "predict"}


# ---------------------------------------------------------------------- MLflow


def test_mlflow_params_select_probabilities(store, models):
    client = make_client(store, MLSERVE_DEFAULT_MODEL="clf")
    proba = models["clf"].predict_proba(X)
    response = client.post("/ml/invocations", json={"instances": ROWS, "params": {"output": "proba"}})
    np.testing.assert_allclose(response.json["predictions"], proba, rtol=1e-12)
    split = {"dataframe_split": {"data": ROWS}, "params": {"output": "all"}}
    both = client.post("/ml/invocations", json=split).json["predictions"]
    assert both["predict"] == models["clf"].predict(X).tolist()
    np.testing.assert_allclose(both["predict_proba"], proba, rtol=1e-12)
    labels = client.post("/ml/invocations", json={"instances": ROWS, "params": {}}).json
    assert labels["predictions"] == models["clf"].predict(X).tolist()


def test_mlflow_unknown_params_are_refused(store):
    client = make_client(store, MLSERVE_DEFAULT_MODEL="clf")
    for params, fragments in [
        ({"temperature": 0.5}, ["unknown params 'temperature'", "known params: 'output'"]),
        ({"output": "logits"}, ["params 'output' must be one of 'predict', 'proba', 'all'", "'logits'"]),
        ([1, 2], ["'params' must be an object", "'output'"]),
    ]:
        response = client.post("/ml/invocations", json={"instances": ROWS, "params": params})
        assert_error(response, 400, *fragments)
    reg = make_client(store, MLSERVE_DEFAULT_MODEL="reg")
    assert_error(
        reg.post("/ml/invocations", json={"instances": ROWS, "params": {"output": "proba"}}),
        400, "model 'reg' is not a classifier",
    )  # fmt: skip


# ----------------------------------------------------- JSON without Content-Type


@pytest.fixture(scope="module")
def open_server(tmp_path_factory, models):
    root = tmp_path_factory.mktemp("open")
    store = ModelStore(root / "models")
    store.publish("clf", models["clf"], alias="production")
    server = Server(root / "models", "--workers", "1", "--threads", "2", "--no-access-log")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/models/clf:predict", {"instances": ROWS}),
        ("/v2/models/clf/infer", {"inputs": [{"name": "input", "shape": [6, 4], "datatype": "FP64", "data": ROWS}]}),
        ("/invocations", {"dataframe_split": {"columns": ["x0", "x1", "x2", "x3"], "data": ROWS}}),
        ("/predict/clf", {"instances": ROWS}),
    ],
)  # fmt: skip
def test_json_body_without_content_type(open_server, models, path, body):
    request = requests.Request("POST", f"{open_server.url}{path}", data=json.dumps(body).encode())
    prepared = request.prepare()
    assert "Content-Type" not in prepared.headers
    with requests.Session() as session:
        response = session.send(prepared, timeout=10)
    assert response.status_code == 200, response.text
    text = response.text
    assert all(label in text for label in set(models["clf"].predict(X).tolist()))


# ------------------------------------------------------------ JSON errors


def test_browser_gets_json_errors_under_the_blueprint(store):
    app = Flask("host")
    app.add_url_rule("/hello", "hello", lambda: "hi")
    app.register_blueprint(blueprint(store, reload_interval=0), url_prefix="/ml")
    client = app.test_client()
    response = client.get("/ml/predict/clf", headers=BROWSER)  # a browser opening a POST route
    assert_error(response, 405, "method GET is not allowed for /ml/predict/clf; use POST")
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    response = client.delete("/ml/models", headers=BROWSER)
    assert_error(response, 405, "use GET")
    assert "HEAD" in response.headers["Allow"]
    assert_error(client.put("/ml/v2/models/clf/infer", headers=BROWSER), 405, "use POST")
    assert_error(client.post("/ml/", headers=BROWSER), 405, "use GET")
    assert_error(
        client.get("/ml/nowhere", headers=BROWSER), 404,
        "no endpoint /ml/nowhere; the endpoints are listed at /ml/openapi.json",
    )  # fmt: skip
    assert_error(client.get("/ml/v2/models/clf/nothing", headers=BROWSER), 404, "no endpoint")
    # the routes themselves still answer
    assert client.post("/ml/predict/clf", json={"features": ROWS[0]}).status_code == 200
    assert client.options("/ml/predict/clf").status_code == 200
    # the host app's own errors are unchanged: HTML, as Flask makes them
    for response in (client.post("/hello", headers=BROWSER), client.get("/nope", headers=BROWSER)):
        assert response.status_code in (404, 405)
        assert response.mimetype == "text/html"


def test_mounted_at_the_root_only_its_own_paths_get_json(store):
    app = Flask("host")
    app.add_url_rule("/hello", "hello", lambda: "hi")
    app.register_blueprint(blueprint(store, reload_interval=0))
    client = app.test_client()
    assert_error(client.get("/invocations", headers=BROWSER), 405, "use POST")
    assert_error(client.get("/v2/nothing", headers=BROWSER), 404, "the endpoints are listed at /openapi.json")
    assert client.get("/nope", headers=BROWSER).mimetype == "text/html"
    assert client.post("/hello", headers=BROWSER).mimetype == "text/html"


def test_routing_errors_need_no_key_and_are_counted(store, tmp_path):
    keys = str(tmp_path / "keys.json")
    create_key(keys, ["read"], name="reader")
    client = make_client(store, MLSERVE_API_KEYS=keys)
    assert_error(client.get("/ml/predict/clf"), 405, "use POST")
    assert_error(client.get("/ml/nowhere"), 404, "no endpoint")
    assert_error(client.post("/ml/predict/clf", json={"features": ROWS[0]}), 401, "unauthorized")


def test_every_route_is_in_the_openapi_document(store):
    client = make_client(store)
    documented = set(client.get("/ml/openapi.json").json["paths"])
    routes = set()
    for rule in client.application.url_map.iter_rules():
        if rule.endpoint.startswith("mlserve.") and rule.endpoint not in (
            "mlserve.wrong_method", "mlserve.no_route",
        ):  # fmt: skip
            path = rule.rule[len("/ml"):].replace("<path:target>", "{name}")
            routes.add(path.replace("<", "{").replace(">", "}"))
    routes.discard("/v1/models/{name}")  # one rule for V1's name[:verb] targets, documented apart
    assert routes - documented == set()
    for path in ("/v2/models/stats", "/v2/repository/index", "/v2/repository/models/{name}/unload", "/"):
        assert path in documented
