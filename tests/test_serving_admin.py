"""Closed by default (issue 12 part 3): the admin endpoints and what is open without keys.

Without API keys nobody can be told apart from an admin, so the admin endpoints
(POST /admin/reload, /v2/repository/models/<name>/load|unload) answer 404 unless
MLSERVE_ADMIN_ENABLED=True opens them; with keys they need the admin scope.
docs/SECURITY.md lists what is open by default; the table below pins it.
"""

from __future__ import annotations

import pytest
import requests
from flask import Flask

from mlserve.serving import ConfigError, blueprint
from mlserve.serving.security import create_key
from mlserve.store import ModelStore
from serving_support import Server, fit_regressor, training_data

X, _ = training_data(seed=5, n=2)
ROW = X[0].tolist()
ADMIN_REQUESTS = [
    ("/ml/admin/reload", None),
    ("/ml/v2/repository/models/reg/load", None),
    ("/ml/v2/repository/models/reg/unload", {"parameters": {"unload_dependents": False}}),
]


@pytest.fixture(scope="module")
def model():
    return fit_regressor()


@pytest.fixture
def store(tmp_path, model):
    store = ModelStore(tmp_path / "models")
    store.publish("reg", model, alias="production")
    return store


@pytest.fixture
def keys(tmp_path):
    path = str(tmp_path / "keys.json")
    made = {}
    for name, scopes in {"ops": ["admin"], "app": ["predict", "read"]}.items():
        made[name], _ = create_key(path, scopes, name=name)
    return path, made


def make_client(store, **config):
    app = Flask("host")
    app.config.update({"MLSERVE_RELOAD_INTERVAL": 0, **config})
    app.register_blueprint(blueprint(store), url_prefix="/ml")
    return app.test_client()


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def post_each(client, headers=None):
    return [client.post(path, json=body, headers=headers or {}) for path, body in ADMIN_REQUESTS]


def test_admin_is_off_without_keys(store):
    for response in post_each(make_client(store)):
        assert response.status_code == 404, response.get_data(as_text=True)
        message = response.json["error"]
        assert message.startswith("the admin endpoints are disabled: no API keys are configured")
        assert "MLSERVE_API_KEYS" in message and "MLSERVE_ADMIN_ENABLED=True" in message
    assert make_client(store).post("/ml/predict/reg", json={"features": ROW}).status_code == 200


def test_admin_opened_explicitly_without_keys(store):
    responses = post_each(make_client(store, MLSERVE_ADMIN_ENABLED=True))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[0].json == {"reloaded": True, "loaded": {"reg": [1]}}
    # the blueprint's argument works the same way
    app = Flask("arg")
    app.register_blueprint(blueprint(store, admin_enabled=True, reload_interval=0))
    assert app.test_client().post("/admin/reload").status_code == 200


def test_admin_with_keys_needs_the_admin_scope(store, keys):
    path, made = keys
    client = make_client(store, MLSERVE_API_KEYS=path)
    assert [r.status_code for r in post_each(client)] == [401, 401, 401]
    forbidden = post_each(client, bearer(made["app"]))
    assert [r.status_code for r in forbidden] == [403, 403, 403]
    assert all(r.json["error"].endswith("; it needs 'admin'") for r in forbidden)
    assert [r.status_code for r in post_each(client, bearer(made["ops"]))] == [200, 200, 200]


def test_admin_turned_off_with_keys(store, keys):
    path, made = keys
    client = make_client(store, MLSERVE_API_KEYS=path, MLSERVE_ADMIN_ENABLED=False)
    for response in post_each(client, bearer(made["ops"])):
        assert response.status_code == 404
        assert "MLSERVE_ADMIN_ENABLED is False" in response.json["error"]


def test_admin_setting_is_validated(store):
    app = Flask("bad")
    app.config["MLSERVE_ADMIN_ENABLED"] = "yes"
    with pytest.raises(ConfigError, match=r"MLSERVE_ADMIN_ENABLED must be True, False or None"):
        app.register_blueprint(blueprint(store))


# what answers without a key once keys are configured, and without keys at all
READ_PATHS = [
    "/ml/v1/models", "/ml/v1/models/reg", "/ml/v1/models/reg/metadata", "/ml/v2",
    "/ml/v2/models/reg", "/ml/v2/models/reg/ready", "/ml/v2/models/reg/config",
    "/ml/v2/models/stats", "/ml/v2/models/reg/stats", "/ml/models", "/ml/models/reg",
    "/ml/openapi.json", "/ml/metrics", "/ml/version",
]  # fmt: skip
HEALTH_PATHS = ["/ml/", "/ml/v2/health/live", "/ml/v2/health/ready", "/ml/ping", "/ml/health"]
PREDICT_REQUESTS = [
    ("/ml/predict/reg", {"features": ROW}),
    ("/ml/v1/models/reg:predict", {"instances": [ROW]}),
    ("/ml/invocations", {"instances": [ROW]}),
    ("/ml/v2/models/reg/infer", {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}),
]  # fmt: skip


def test_open_by_default_without_keys(store):
    client = make_client(store)
    for path in HEALTH_PATHS + READ_PATHS:
        assert client.get(path).status_code == 200, path
    for path, body in PREDICT_REQUESTS:
        assert client.post(path, json=body).status_code == 200, path
    assert client.post("/ml/v2/repository/index").status_code == 200


def test_with_keys_only_health_is_open(store, keys):
    path, made = keys
    client = make_client(store, MLSERVE_API_KEYS=path)
    for url in HEALTH_PATHS:
        assert client.get(url).status_code == 200, url
    for url in READ_PATHS:
        assert client.get(url).status_code == 401, url
        assert client.get(url, headers=bearer(made["app"])).status_code == 200, url
        assert client.get(url, headers=bearer(made["ops"])).status_code == 403, url
    for url, body in PREDICT_REQUESTS:
        assert client.post(url, json=body).status_code == 401, url
        assert client.post(url, json=body, headers=bearer(made["app"])).status_code == 200, url
    opened = make_client(store, MLSERVE_API_KEYS=path, MLSERVE_OPEN_ENDPOINTS=["health", "metrics", "docs"])
    assert opened.get("/ml/metrics").status_code == 200
    assert opened.get("/ml/openapi.json").status_code == 200
    assert opened.get("/ml/models").status_code == 401


# ------------------------------------------------------------- mlserve serve


def test_mlserve_serve_is_closed_by_default_and_opens_by_flag_or_environment(
    tmp_path, model, monkeypatch
):
    store = ModelStore(tmp_path / "models")
    store.publish("reg", model, alias="production")
    server = Server(tmp_path / "models", "--workers", "1", "--no-access-log")
    try:
        response = requests.post(f"{server.url}/admin/reload", timeout=10)
        assert response.status_code == 404
        assert "disabled" in response.json()["error"]
    finally:
        server.stop()
    monkeypatch.setenv("MLSERVE_ADMIN_ENABLED", "true")
    server = Server(tmp_path / "models", "--workers", "1", "--no-access-log")
    try:
        assert requests.post(f"{server.url}/admin/reload", timeout=10).status_code == 200
        response = requests.post(f"{server.url}/v2/repository/models/reg/unload", timeout=10)
        assert response.status_code == 200
    finally:
        server.stop()
