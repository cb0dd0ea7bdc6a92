"""``mlserve serve`` reads every MLSERVE_* key from the environment (a Kubernetes
ConfigMap); flags win over the environment, the environment over the defaults."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from mlserve.serving.config import DEFAULTS, JSON_ENV_KEYS, ConfigError, ServingConfig, parse_environ
from mlserve.store import ModelStore
from serving_support import Server, fit_regressor

ROW = [0.5, -1.2, 3.3, 0.1]
BIG_BODY = json.dumps({"features": ROW, "padding": "x" * 400})  # ~450 bytes

#: Environment texts for the keys whose default (None) does not tell their type.
SAMPLE_TEXTS = {
    "MLSERVE_STORE": ("models", "models"),
    "MLSERVE_URL_PREFIX": ("/ml", "/ml"),  # its default, "", reads as unset
    "MLSERVE_DEFAULT_MODEL": ("churn", "churn"),
    "MLSERVE_API_KEYS": ("/etc/mlserve/keys.json", "/etc/mlserve/keys.json"),
    "MLSERVE_RATE_LIMIT": ("100/second", "100/second"),
    "MLSERVE_CORS_ORIGINS": ("https://a.example, https://b.example", "https://a.example, https://b.example"),
    "MLSERVE_BATCHING_MODELS": ('{"churn": {"max_batch_size": 16}}', {"churn": {"max_batch_size": 16}}),
    "MLSERVE_MODEL_RATE_LIMITS": ('{"churn": "20/second"}', {"churn": "20/second"}),
    "MLSERVE_ADMIN_ENABLED": ("true", True),  # None: on only with keys (serving/security)
    "MLSERVE_CACHE": ("memory", "memory"),
    "MLSERVE_CACHE_MODELS": ('{"churn": {"ttl_s": 60}, "tiny": false}', {"churn": {"ttl_s": 60}, "tiny": False}),
    "MLSERVE_CANARY_KEY_HEADER": ("X-User-ID", "X-User-ID"),
    "MLSERVE_GRPC_PORT": ("8001", "8001"),  # text here; ServingConfig reads the port from it
}

#: Keys that validate only beside others: a JWKS needs the tokens' issuer and audience.
COMPANIONS = {
    "MLSERVE_JWT_JWKS": {"MLSERVE_JWT_ISSUER": "https://idp.example/", "MLSERVE_JWT_AUDIENCE": "api"},
}


def environment_text(default):
    """The environment spelling of a key's default value."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, (tuple, list)):
        return ",".join(default)
    return str(default)


@pytest.mark.parametrize("key", list(DEFAULTS))
def test_every_key_parses_from_the_environment(key, tmp_path):
    default = DEFAULTS[key]
    if key in SAMPLE_TEXTS:
        text, expected = SAMPLE_TEXTS[key]
    elif default is None:
        text, expected = "some-text", "some-text"
    else:
        text, expected = environment_text(default), default
    if key == "MLSERVE_JWT_JWKS":  # a JWKS file that exists
        (tmp_path / "jwks.json").write_text('{"keys": []}')
        text = expected = str(tmp_path / "jwks.json")
    assert parse_environ({key: text}) == {key: expected}
    if key not in ("MLSERVE_STORE", "MLSERVE_URL_PREFIX"):  # used by MLServe, not validated here
        # and validates as a config value
        ServingConfig.from_environ({key: text, **COMPANIONS.get(key, {})})


@pytest.mark.parametrize(
    "text, expected", [("true", True), ("1", True), ("Yes", True), ("FALSE", False), ("0", False)]
)
def test_boolean_spellings(text, expected):
    assert parse_environ({"MLSERVE_BATCHING": text}) == {"MLSERVE_BATCHING": expected}


def test_empty_and_foreign_variables_are_left_alone():
    environ = {"MLSERVE_MAX_ROWS": "", "MLSERVE_BLAS": "system", "PATH": "/bin"}
    assert parse_environ(environ) == {}


@pytest.mark.parametrize(
    "key, text, message",
    [
        ("MLSERVE_MAX_ROWS", "lots", "MLSERVE_MAX_ROWS (from the environment) must be an integer, got 'lots'"),
        ("MLSERVE_BATCHING", "maybe", "MLSERVE_BATCHING (from the environment) must be true or false (or 1/0), got 'maybe'"),
        ("MLSERVE_CLIENT_TIMEOUT", "soon", "MLSERVE_CLIENT_TIMEOUT (from the environment) must be a number, got 'soon'"),
        ("MLSERVE_BATCHING_MODELS", "{churn", "MLSERVE_BATCHING_MODELS (from the environment) must be JSON, got '{churn'"),
    ],
)  # fmt: skip
def test_unparsable_values_name_the_variable_and_the_value(key, text, message):
    with pytest.raises(ConfigError) as info:
        parse_environ({key: text})
    assert str(info.value).startswith(message)


def test_json_keys_are_mappings():
    assert JSON_ENV_KEYS <= set(DEFAULTS)


# ---------------------------------------------------------- a real mlserve serve


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("env") / "models"
    ModelStore(root).publish("reg", fit_regressor(), alias="production")
    return root


def test_serve_takes_its_configuration_from_the_environment(store_dir, monkeypatch):
    for key, value in {
        "MLSERVE_MAX_BODY_BYTES": "200",
        "MLSERVE_ADMIN_ENABLED": "false",
        "MLSERVE_METRICS_ENABLED": "0",
        "MLSERVE_CORS_ORIGINS": "https://a.example,https://b.example",
        "MLSERVE_DEFAULT_MODEL": "reg",
        "MLSERVE_BATCHING_MODELS": '{"reg": false}',
        "MLSERVE_ACCESS_LOG": "false",
        "MLSERVE_CLIENT_TIMEOUT": "1.5",
        "MLSERVE_RELOAD_INTERVAL": "0",
    }.items():
        monkeypatch.setenv(key, value)
    server = Server(store_dir)
    try:
        url = server.url
        small = requests.post(f"{url}/predict/reg", json={"features": ROW}, timeout=10)
        assert small.status_code == 200
        big = requests.post(
            f"{url}/predict/reg", data=BIG_BODY,
            headers={"Content-Type": "application/json"}, timeout=10,
        )  # fmt: skip
        assert big.status_code == 413 and "the limit is 200" in big.json()["error"]
        assert requests.post(f"{url}/admin/reload", timeout=10).status_code == 404
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 404
        cors = requests.get(
            f"{url}/v2/health/ready", headers={"Origin": "https://b.example"}, timeout=10
        )
        assert cors.headers["Access-Control-Allow-Origin"] == "https://b.example"
        mlflow = requests.post(
            f"{url}/invocations", json={"dataframe_split": {"data": [ROW]}}, timeout=10
        )
        assert mlflow.status_code == 200  # the default model from the environment
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")  # and no more
            start = time.monotonic()
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert 1.0 <= time.monotonic() - start <= 3.5
    finally:
        server.stop()
    assert not [line for line in server.log if line.startswith('{"time"')]  # no access log


def test_url_prefix_from_the_environment_mounts_the_routes_below_it(store_dir, monkeypatch):
    monkeypatch.setenv("MLSERVE_URL_PREFIX", "/ml/")
    server = Server(store_dir, ready_path="/ml/v2/health/ready")
    try:
        response = requests.post(f"{server.url}/ml/predict/reg", json={"features": ROW}, timeout=10)
        assert response.status_code == 200
        assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 404
    finally:
        server.stop()


def test_flags_win_over_the_environment(store_dir, monkeypatch):
    monkeypatch.setenv("MLSERVE_MAX_BODY_BYTES", "200")
    monkeypatch.setenv("MLSERVE_ACCESS_LOG", "false")
    monkeypatch.setenv("MLSERVE_RELOAD_INTERVAL", "0")
    server = Server(store_dir, "--max-body-bytes", "100000", "--access-log")
    try:
        response = requests.post(
            f"{server.url}/predict/reg", data=BIG_BODY,
            headers={"Content-Type": "application/json", "X-Request-ID": "flag-wins"}, timeout=10,
        )  # fmt: skip
        assert response.status_code == 200, response.text
    finally:
        server.stop()
    assert any('"flag-wins"' in line for line in server.log)


@pytest.mark.parametrize(
    "key, text, message",
    [
        ("MLSERVE_MAX_ROWS", "lots", "MLSERVE_MAX_ROWS (from the environment) must be an integer, got 'lots'"),
        ("MLSERVE_WARMUP", "maybe", "MLSERVE_WARMUP (from the environment) must be true or false (or 1/0), got 'maybe'"),
        ("MLSERVE_CLIENT_TIMEOUT", "0", "MLSERVE_CLIENT_TIMEOUT must be a number of seconds > 0, got 0.0"),
        ("MLSERVE_RATE_LIMIT", "fast", "MLSERVE_RATE_LIMIT: 'fast' is not a rate limit like '100/second'"),
        ("MLSERVE_URL_PREFIX", "ml", "MLSERVE_URL_PREFIX must be '' or start with '/', got 'ml'"),
    ],
)  # fmt: skip
def test_bad_environment_values_are_usage_errors(store_dir, key, text, message):
    env = dict(os.environ, **{key: text})
    result = subprocess.run(
        [sys.executable, "-m", "mlserve.cli", "serve", str(store_dir), "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_a_usage_error_leaves_the_metrics_folder_alone(store_dir, tmp_path):
    """PROMETHEUS_MULTIPROC_DIR holds the files of a previous run: a mistyped flag must not
    clear them (only a server that starts does)."""
    folder = tmp_path / "metrics"
    (folder / "mlserve-drift").mkdir(parents=True)
    stale = [folder / "counter_4242.db", folder / "mlserve-drift" / "m-1-4242.win"]
    for path in stale:
        path.write_bytes(b"previous run")
    result = subprocess.run(
        [sys.executable, "-m", "mlserve.cli", "serve", str(store_dir), "--port", "0",
         "--rate-limit", "fast"],
        env=dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "MLSERVE_RATE_LIMIT" in result.stderr
    assert all(path.read_bytes() == b"previous run" for path in stale)


def test_sticky_canary_header_from_the_environment_holds_across_workers(tmp_path, monkeypatch):
    root = tmp_path / "models"
    store = ModelStore(root)
    model = fit_regressor()
    store.publish("reg", model)
    store.publish("reg", model)
    store.set_alias("reg", "production", {1: 50, 2: 50})
    monkeypatch.setenv("MLSERVE_CANARY_KEY_HEADER", "X-User-ID")
    monkeypatch.setenv("MLSERVE_RELOAD_INTERVAL", "0")
    server = Server(root, "--workers", "2")
    try:
        seen = set()
        for i in range(12):
            user = f"user-{i}"
            expected = str(store.resolve("reg", sticky_key=user))
            with requests.Session() as first, requests.Session() as second:  # two connections
                versions = {
                    session.post(
                        f"{server.url}/predict/reg", json={"features": ROW},
                        headers={"X-User-ID": user}, timeout=10,
                    ).headers["X-Model-Version"]
                    for session in (first, second, first, second)
                }  # fmt: skip
            assert versions == {expected}
            seen |= versions
        assert seen == {"1", "2"}
    finally:
        server.stop()
