"""API keys, scopes, rate limits, CORS, row and size limits, metrics and access logs (test client)."""

from __future__ import annotations

import io
import json
import logging
import os
import stat

import numpy as np
import pytest
from click.testing import CliRunner
from flask import Flask
from serving_support import training_data

from mlserve.cli import main as cli_main
from mlserve.serving import ConfigError, blueprint
from mlserve.serving.security import (
    FORBIDDEN_MESSAGE,
    UNAUTHORIZED_MESSAGE,
    KeyFile,
    create_key,
    hash_key,
    list_keys,
    revoke_key,
)

X, _ = training_data(seed=1, n=3)
ROW = X[0].tolist()


@pytest.fixture
def keyfile(tmp_path):
    path = str(tmp_path / "keys.json")
    keys = {}
    for name, scopes in {
        "all": ["predict", "read"],
        "reg_only": ["predict:reg"],
        "reader": ["read"],
        "ops": ["admin"],
    }.items():
        keys[name], _ = create_key(path, scopes, name=name)
    return path, keys


def make_app(store, **config):
    app = Flask("host")
    app.config.update({"MLSERVE_RELOAD_INTERVAL": 0, **config})
    app.register_blueprint(blueprint(store), url_prefix="/ml")
    return app.test_client()


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


# ------------------------------------------------------------------ keys file


def test_key_file_stores_only_the_hash_and_is_private(keyfile):
    path, keys = keyfile
    with open(path) as f:
        text = f.read()
    for key in keys.values():
        assert key.startswith("mls_") and len(key) > 40
        assert key not in text
        assert hash_key(key) in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert {k.id for k in list_keys(path)} == set(keys)


def test_scopes_are_validated(tmp_path):
    path = str(tmp_path / "k.json")
    for scope in ["write", "predict:", "predict:a/b", "PREDICT"]:
        with pytest.raises(ValueError, match="scope"):
            create_key(path, [scope])
    with pytest.raises(ValueError, match="at least one scope"):
        create_key(path, [])


def test_authenticate_compares_every_key(keyfile):
    path, keys = keyfile
    keyfile_obj = KeyFile(path)
    assert keyfile_obj.authenticate(keys["all"]).id == "all"
    assert keyfile_obj.authenticate(keys["all"] + "x") is None
    assert keyfile_obj.authenticate("") is None
    assert keyfile_obj.authenticate("x" * 10_000) is None


# ---------------------------------------------------------------- 401 / 403


def test_auth_off_by_default(store):
    client = make_app(store)
    assert client.post("/ml/predict/reg", json={"features": ROW}).status_code == 200


def test_missing_invalid_and_malformed_keys_get_the_same_401(store, keyfile):
    path, keys = keyfile
    client = make_app(store, MLSERVE_API_KEYS=path)
    bodies = set()
    for headers in [
        {},
        bearer("mls_wrong"),
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"X-API-Key": "nope"},
        {"Authorization": "Bearer " + keys["all"][:-1]},
    ]:
        response = client.post("/ml/predict/reg", json={"features": ROW}, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        bodies.add(response.get_data())
    assert bodies == {json.dumps({"error": UNAUTHORIZED_MESSAGE}).encode() + b"\n"} or len(bodies) == 1
    assert json.loads(bodies.pop()) == {"error": UNAUTHORIZED_MESSAGE}
    # an unknown model is a 401 too: names are not revealed to a client without a key
    assert client.post("/ml/predict/nosuch", json={"features": ROW}).status_code == 401


def test_scopes(store, keyfile):
    path, keys = keyfile
    client = make_app(store, MLSERVE_API_KEYS=path)
    body = {"features": ROW}
    assert client.post("/ml/predict/reg", json=body, headers=bearer(keys["all"])).status_code == 200
    assert client.post("/ml/predict/clf", json=body, headers={"X-API-Key": keys["all"]}).status_code == 200
    assert client.post("/ml/predict/reg", json=body, headers=bearer(keys["reg_only"])).status_code == 200
    v1 = {"instances": [ROW]}
    assert client.post("/ml/v1/models/reg:predict", json=v1, headers=bearer(keys["reg_only"])).status_code == 200
    for path_, key in [
        ("/ml/predict/clf", "reg_only"),
        ("/ml/v1/models/clf:predict", "reg_only"),
        ("/ml/predict/reg", "reader"),
        ("/ml/predict/reg", "ops"),
    ]:
        response = client.post(path_, json=v1 if "v1" in path_ else body, headers=bearer(keys[key]))
        assert response.status_code == 403, (path_, key)
        assert response.json["error"].startswith(FORBIDDEN_MESSAGE + "; it needs 'predict' or 'predict:")
    assert client.get("/ml/models", headers=bearer(keys["reader"])).status_code == 200
    assert client.get("/ml/models", headers=bearer(keys["reg_only"])).status_code == 403
    assert client.get("/ml/openapi.json").status_code == 401
    assert client.get("/ml/metrics", headers=bearer(keys["reader"])).status_code == 200
    # admin is its own scope
    assert client.post("/ml/admin/reload", headers=bearer(keys["all"])).status_code == 403
    assert client.post("/ml/admin/reload", headers=bearer(keys["ops"])).status_code == 200
    # health stays open
    for path_ in ["/ml/v2/health/live", "/ml/v2/health/ready", "/ml/ping", "/ml/health"]:
        assert client.get(path_).status_code == 200


def test_health_can_be_closed_and_docs_opened(store, keyfile):
    path, keys = keyfile
    client = make_app(store, MLSERVE_API_KEYS=path, MLSERVE_OPEN_ENDPOINTS=["docs", "metrics"])
    assert client.get("/ml/v2/health/live").status_code == 401
    assert client.get("/ml/openapi.json").status_code == 200
    assert client.get("/ml/metrics").status_code == 200


def test_admin_can_be_disabled(store, keyfile):
    path, keys = keyfile
    client = make_app(store, MLSERVE_API_KEYS=path, MLSERVE_ADMIN_ENABLED=False)
    assert client.post("/ml/admin/reload", headers=bearer(keys["ops"])).status_code == 404


def test_revoked_key_stops_working(store, keyfile, monkeypatch):
    import mlserve.serving.security as security

    monkeypatch.setattr(security, "RECHECK_SECONDS", 0.0)
    path, keys = keyfile
    client = make_app(store, MLSERVE_API_KEYS=path)
    body = {"features": ROW}
    assert client.post("/ml/predict/reg", json=body, headers=bearer(keys["all"])).status_code == 200
    revoke_key(path, "all")
    assert client.post("/ml/predict/reg", json=body, headers=bearer(keys["all"])).status_code == 401
    assert client.post("/ml/predict/reg", json=body, headers=bearer(keys["reg_only"])).status_code == 200


def test_keys_are_never_logged(store, keyfile, caplog):
    path, keys = keyfile
    client = make_app(store, MLSERVE_API_KEYS=path)
    with caplog.at_level(logging.DEBUG):
        client.post("/ml/predict/reg", json={"features": ROW}, headers=bearer(keys["all"]))
        client.post("/ml/predict/reg", json={"features": ROW}, headers=bearer(keys["all"] + "x"))
    assert caplog.records
    assert keys["all"] not in caplog.text
    assert '"key":"all"' in caplog.text


def test_keys_cli(tmp_path):
    path = str(tmp_path / "keys.json")
    runner = CliRunner()
    result = runner.invoke(cli_main, ["keys", "create", "--file", path, "--scope", "predict:reg", "--scope", "read", "--name", "ci"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("mls_")
    assert KeyFile(path).authenticate(key).scopes == {"predict:reg", "read"}
    listing = runner.invoke(cli_main, ["keys", "list", "--file", path])
    assert "ci" in listing.output and key not in listing.output
    bad = runner.invoke(cli_main, ["keys", "create", "--file", path, "--scope", "root"])
    assert bad.exit_code != 0 and "invalid scope" in bad.output
    assert runner.invoke(cli_main, ["keys", "revoke", "--file", path, "ci"]).exit_code == 0
    assert KeyFile(path).authenticate(key) is None
    again = runner.invoke(cli_main, ["keys", "revoke", "--file", path, "ci"])
    assert again.exit_code != 0 and "no key" in again.output


def test_bad_keys_file_is_a_startup_error(store, tmp_path):
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="keys file"):
        make_app(store, MLSERVE_API_KEYS=str(path))
    with pytest.raises(ValueError, match="does not exist"):
        make_app(store, MLSERVE_API_KEYS=str(tmp_path / "missing.json"))


# ---------------------------------------------------------------- rate limits


def test_rate_limit_per_client_with_retry_after(store):
    client = make_app(store, MLSERVE_RATE_LIMIT="3/minute")
    codes = [client.post("/ml/predict/reg", json={"features": ROW}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = client.get("/ml/models")
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "rate limit exceeded: 3 per 1 minute" in response.json["error"]
    assert client.get("/ml/v2/health/live").status_code == 200  # open endpoints are not counted
    other = client.post("/ml/predict/reg", json={"features": ROW}, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200


def test_rate_limit_per_key_and_model(store, keyfile):
    path, keys = keyfile
    client = make_app(store, MLSERVE_API_KEYS=path, MLSERVE_MODEL_RATE_LIMITS={"reg": "2/minute"})
    body = {"features": ROW}
    codes = [client.post("/ml/predict/reg", json=body, headers=bearer(keys["all"])).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert client.post("/ml/predict/clf", json=body, headers=bearer(keys["all"])).status_code == 200
    assert client.post("/ml/predict/reg", json=body, headers=bearer(keys["reg_only"])).status_code == 200


def test_rate_limit_config_is_validated(store):
    with pytest.raises(ConfigError, match="MLSERVE_RATE_LIMIT"):
        make_app(store, MLSERVE_RATE_LIMIT="lots")
    with pytest.raises(ConfigError, match="MLSERVE_RATE_LIMIT_STORAGE"):
        make_app(store, MLSERVE_RATE_LIMIT_STORAGE="redis")


# ----------------------------------------------------------------------- CORS


def test_cors_off_by_default_and_configurable(store):
    plain = make_app(store)
    assert "Access-Control-Allow-Origin" not in plain.get("/ml/models", headers={"Origin": "https://a.example"}).headers
    client = make_app(store, MLSERVE_CORS_ORIGINS=["https://a.example"])
    ok = client.get("/ml/models", headers={"Origin": "https://a.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert "X-Request-ID" in ok.headers["Access-Control-Expose-Headers"]
    other = client.get("/ml/models", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options(
        "/ml/predict/reg",
        headers={
            "Origin": "https://a.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


def test_cors_preflight_needs_no_key(store, keyfile):
    path, _ = keyfile
    client = make_app(store, MLSERVE_API_KEYS=path, MLSERVE_CORS_ORIGINS="*")
    preflight = client.options(
        "/ml/predict/reg", headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"


# ------------------------------------------------------------- size limits


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_claiming(shape, payload=b"\0" * 64):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': %r, }" % (shape,)
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + payload


def test_max_rows(store):
    client = make_app(store, MLSERVE_MAX_ROWS=5)
    ok = client.post("/ml/predict/reg", json={"instances": [ROW] * 5})
    assert ok.status_code == 200
    for response in [
        client.post("/ml/predict/reg", json={"instances": [ROW] * 6}),
        client.post("/ml/v1/models/reg:predict", json={"instances": [ROW] * 6}),
        client.post("/ml/invocations?version=1", json={"dataframe_split": {"data": [ROW] * 6}}),
        client.post("/ml/predict/reg", data=npy(np.zeros((6, 4))), content_type="application/x-npy"),
        client.post(
            "/ml/v2/models/reg/infer",
            json={"inputs": [{"name": "x", "shape": [6, 4], "datatype": "FP64", "data": [0.0] * 24}]},
        ),
    ]:
        assert response.status_code in (413, 404), response.json
        if response.status_code == 413:
            assert "MLSERVE_MAX_ROWS" in response.json["error"]


def test_npy_claimed_shape_is_checked_before_allocating(store):
    client = make_app(store)
    for shape in [(10**9, 4), (10**12, 4), (2**62, 4), (5, 4)]:
        response = client.post("/ml/predict/reg", data=npy_claiming(shape), content_type="application/x-npy")
        assert response.status_code in (400, 413), response.json
    response = client.post("/ml/predict/reg", data=npy_claiming((5, 4)), content_type="application/x-npy")
    assert "declares shape (5, 4)" in response.json["error"]
    # still decodes real arrays of every numeric dtype, both orders, both header versions
    for array in [np.arange(8.0).reshape(2, 4), np.asfortranarray(np.ones((3, 4), np.float32)),
                  np.arange(4, dtype=">i2"), np.ones((2, 4), bool)]:
        response = client.post("/ml/predict/reg", data=npy(array), content_type="application/x-npy")
        assert response.status_code == 200, response.json
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ones((2, 4)), version=(2, 0))
    assert client.post("/ml/predict/reg", data=buffer.getvalue(), content_type="application/x-npy").status_code == 200


def test_v2_binary_claimed_sizes_are_400(store):
    client = make_app(store)
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [10**15, 4], "datatype": "FP64",
                     "parameters": {"binary_data_size": 8 * 4 * 10**15}}]}
    ).encode()
    response = client.post(
        "/ml/v2/models/reg/infer", data=header + b"\0" * 32, content_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "runs past the end of the body" in response.json["error"]


def test_body_limit_is_413(store):
    client = make_app(store, MLSERVE_MAX_BODY_BYTES=1000)
    response = client.post("/ml/predict/reg", json={"instances": [ROW] * 100})
    assert response.status_code == 413
    assert "MLSERVE_MAX_BODY_BYTES" in response.json["error"]


# ------------------------------------------------------- metrics, request ids, logs


def test_request_id_is_echoed_or_made(store):
    client = make_app(store)
    response = client.post("/ml/predict/reg", json={"features": ROW}, headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    made = client.post("/ml/predict/reg", json={"features": ROW}, headers={"X-Request-ID": "bad id\u00e9" * 50})
    assert len(made.headers["X-Request-ID"]) == 32
    error = client.post("/ml/predict/reg", json={"oops": 1}, headers={"X-Request-ID": "e1"})
    assert error.status_code == 400 and error.headers["X-Request-ID"] == "e1"


def test_access_log_is_json_lines(store, caplog):
    client = make_app(store)
    with caplog.at_level(logging.INFO, logger="mlserve.access"):
        client.post("/ml/predict/reg", json={"instances": [ROW, ROW]}, headers={"X-Request-ID": "r1"})
        client.post("/ml/predict/nosuch", json={"instances": [ROW]}, headers={"X-Request-ID": "r2"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "mlserve.access"]
    first, second = lines
    assert first["request_id"] == "r1" and first["model"] == "reg" and first["version"] == 1
    assert first["rows"] == 2 and first["status"] == 200 and first["latency_ms"] > 0
    assert first["endpoint"] == "predict" and first["path"] == "/ml/predict/reg"
    assert second["request_id"] == "r2" and second["status"] == 404 and second["model"] is None


def test_metrics(store):
    client = make_app(store)
    client.post("/ml/predict/reg", json={"instances": [ROW] * 3})
    client.post("/ml/predict/nosuch-model-xyz", json={"instances": [ROW]})
    text = client.get("/ml/metrics").get_data(as_text=True)
    assert 'mlserve_requests_total{endpoint="predict",model="reg",status="200",version="1"}' in text
    assert 'mlserve_request_rows_bucket{endpoint="predict",le="5.0",model="reg"}' in text
    assert "mlserve_request_duration_seconds_bucket" in text
    assert "mlserve_requests_in_flight" in text
    assert 'mlserve_model_load_seconds_count{model="reg"}' in text
    assert "nosuch-model-xyz" not in text  # unknown names never become label values
    assert 'mlserve_batch_size_bucket{le="5.0",model="reg"}' in text  # from the micro-batcher
    assert 'mlserve_batch_queue_delay_seconds_count{model="reg"}' in text
    disabled = make_app(store, MLSERVE_METRICS_ENABLED=False)
    assert disabled.get("/ml/metrics").status_code == 404


def test_many_publishes_keep_a_bounded_set_of_versions_loaded(store, models):
    from mlserve.serving import serving_state
    from mlserve.serving.runtime import MAX_EXTRA_VERSIONS

    app = Flask("host")
    app.register_blueprint(blueprint(store, reload_interval=0, admin_enabled=True), url_prefix="/ml")
    client = app.test_client()
    state = serving_state(app)
    for _ in range(12):
        version = store.publish("reg", models["reg"], alias="production")
        assert client.post("/ml/admin/reload").status_code == 200
        assert client.post("/ml/predict/reg", json={"features": ROW}).headers["X-Model-Version"] == str(version)
    for old in range(1, 8):  # named explicitly: the most recently used few stay loaded
        assert client.post(f"/ml/predict/reg?version={old}", json={"features": ROW}).status_code == 200
    client.post("/ml/admin/reload")
    loaded = state.refresh()["reg"]
    assert loaded[-1] == version
    assert len(loaded) <= 1 + MAX_EXTRA_VERSIONS, loaded
    assert set(range(8 - MAX_EXTRA_VERSIONS, 8)) <= set(loaded)
