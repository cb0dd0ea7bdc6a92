"""The prediction cache (MLSERVE_CACHE): memory LRU and a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import numpy as np
import pytest
import requests
from flask import Flask

from mlserve.serving import ConfigError, blueprint
from mlserve.store import ModelStore
from serving_support import Server, fit_classifier, fit_regressor

ROWS = [[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, -0.5, 0.0]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A real redis-server on a free loopback port (no persistence)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server():
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server; .ci/run does)")
    server = Redis()
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path):
    store = ModelStore(tmp_path / "store")
    store.publish("reg", fit_regressor(0), alias="production")
    store.publish("clf", fit_classifier(0), alias="production")
    return store


def make_client(store, **config):
    app = Flask("host")
    app.config.update(config)
    app.register_blueprint(blueprint(store, reload_interval=0), url_prefix="/ml")
    return app.test_client()


def metric(client, name, model):
    text = client.get("/ml/metrics").get_data(as_text=True)
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="{model}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_off_by_default_no_header(store):
    client = make_client(store)
    response = client.post("/ml/predict/reg", json={"instances": ROWS})
    assert response.status_code == 200
    assert "X-Cache" not in response.headers


def test_memory_hit_miss_and_equivalent_bodies(store):
    client = make_client(store, MLSERVE_CACHE="memory")
    hits0 = metric(client, "mlserve_cache_hits_total", "reg")
    first = client.post("/ml/predict/reg", json={"instances": ROWS})
    assert first.headers["X-Cache"] == "miss"
    # the same rows written differently (ints vs floats, V1 protocol) decode to one entry
    again = client.post("/ml/v1/models/reg:predict",
                        json={"instances": [[0.50, -1, 2, 0.25], [1, 2, -0.5, 0]]})  # fmt: skip
    assert again.status_code == 200
    assert again.headers["X-Cache"] == "hit"
    expected = fit_regressor(0).predict(np.array(ROWS))
    np.testing.assert_allclose(again.get_json()["predictions"], expected, rtol=1e-6)
    np.testing.assert_allclose(first.get_json()["predictions"], expected, rtol=1e-6)
    assert metric(client, "mlserve_cache_hits_total", "reg") == hits0 + 1


def test_output_kind_is_in_key(store):
    client = make_client(store, MLSERVE_CACHE="memory")
    labels = client.post("/ml/predict/clf", json={"instances": ROWS})
    proba = client.post("/ml/predict/clf", json={"instances": ROWS, "return": "proba"})
    assert labels.headers["X-Cache"] == "miss" and proba.headers["X-Cache"] == "miss"
    assert labels.get_json() != proba.get_json()
    assert client.post("/ml/predict/clf", json={"instances": ROWS, "return": "proba"}
                       ).get_json() == proba.get_json()  # fmt: skip


def test_new_version_and_alias_move_miss(store):
    client = make_client(store, MLSERVE_CACHE="memory")
    assert client.post("/ml/predict/reg", json={"instances": ROWS}).headers["X-Cache"] == "miss"
    assert client.post("/ml/predict/reg", json={"instances": ROWS}).headers["X-Cache"] == "hit"
    store.publish("reg", fit_regressor(7), alias="production")
    from mlserve.serving import serving_state

    serving_state(client.application).refresh()
    moved = client.post("/ml/predict/reg", json={"instances": ROWS})
    assert moved.headers["X-Cache"] == "miss"
    assert moved.headers["X-Model-Version"] == "2"
    np.testing.assert_allclose(
        moved.get_json()["predictions"], fit_regressor(7).predict(np.array(ROWS)), rtol=1e-6
    )


def test_ttl_expiry_and_per_model_off(store):
    client = make_client(
        store, MLSERVE_CACHE="memory", MLSERVE_CACHE_TTL_S=0.3,
        MLSERVE_CACHE_MODELS={"clf": False},
    )  # fmt: skip
    assert client.post("/ml/predict/reg", json={"instances": ROWS}).headers["X-Cache"] == "miss"
    assert client.post("/ml/predict/reg", json={"instances": ROWS}).headers["X-Cache"] == "hit"
    time.sleep(0.4)
    assert client.post("/ml/predict/reg", json={"instances": ROWS}).headers["X-Cache"] == "miss"
    assert "X-Cache" not in client.post("/ml/predict/clf", json={"instances": ROWS}).headers


def test_lru_bound(store):
    client = make_client(store, MLSERVE_CACHE="memory", MLSERVE_CACHE_MAX_ENTRIES=1)
    a, b = {"instances": ROWS[:1]}, {"instances": ROWS[1:]}
    assert client.post("/ml/predict/reg", json=a).headers["X-Cache"] == "miss"
    assert client.post("/ml/predict/reg", json=b).headers["X-Cache"] == "miss"
    assert client.post("/ml/predict/reg", json=a).headers["X-Cache"] == "miss"


@pytest.mark.parametrize(
    "config",
    [{"MLSERVE_CACHE": "disk"}, {"MLSERVE_CACHE": "memory", "MLSERVE_CACHE_MODELS": {"a": 3}},
     {"MLSERVE_CACHE": "memory", "MLSERVE_CACHE_TTL_S": -1}],
)  # fmt: skip
def test_bad_config(store, config):
    with pytest.raises(ConfigError, match="MLSERVE_CACHE"):
        make_client(store, **config)


def test_redis_hit_garbage_and_killed(store, redis_server):
    import redis

    client = make_client(store, MLSERVE_CACHE=redis_server.url)
    expected = fit_regressor(0).predict(np.array(ROWS))
    assert client.post("/ml/predict/reg", json={"instances": ROWS}).headers["X-Cache"] == "miss"
    hit = client.post("/ml/predict/reg", json={"instances": ROWS})
    assert hit.headers["X-Cache"] == "hit"
    np.testing.assert_allclose(hit.get_json()["predictions"], expected, rtol=1e-6)
    # garbage in every entry: computed, right answer, counted as an error
    r = redis.Redis.from_url(redis_server.url)
    for key in r.keys("mlserve:cache:*"):
        r.set(key, b"MLSC1\xff\xff\xff\xffgarbage")
    errors0 = metric(client, "mlserve_cache_errors_total", "reg")
    bad = client.post("/ml/predict/reg", json={"instances": ROWS})
    assert bad.status_code == 200 and bad.headers["X-Cache"] == "miss"
    np.testing.assert_allclose(bad.get_json()["predictions"], expected, rtol=1e-6)
    assert metric(client, "mlserve_cache_errors_total", "reg") == errors0 + 1
    # redis killed mid-test: still answered, fast (50 ms timeout), errors counted
    redis_server.stop()
    start = time.perf_counter()
    down = client.post("/ml/predict/reg", json={"instances": ROWS})
    assert time.perf_counter() - start < 2.0
    assert down.status_code == 200
    np.testing.assert_allclose(down.get_json()["predictions"], expected, rtol=1e-6)
    assert metric(client, "mlserve_cache_errors_total", "reg") >= errors0 + 3


def test_two_gunicorn_workers_share_redis(store, redis_server, monkeypatch):
    monkeypatch.setenv("MLSERVE_CACHE", redis_server.url)
    server = Server(store.root, "--workers", "2")
    try:
        url = f"{server.url}/predict/reg"
        seen = set()
        first = requests.post(url, json={"instances": ROWS}, timeout=10)
        assert first.headers["X-Cache"] == "miss"
        for _ in range(20):  # new connections: both workers answer some of them
            with requests.Session() as session:
                response = session.post(url, json={"instances": ROWS}, timeout=10)
            assert response.headers["X-Cache"] == "hit"
            assert response.json() == first.json()
            seen.add(response.headers.get("X-Request-ID"))
        assert len(seen) == 20
    finally:
        server.stop()


def test_v2_infer_shares_entry_with_simple(store):
    client = make_client(store, MLSERVE_CACHE="memory")
    assert client.post("/ml/predict/reg", json={"instances": ROWS}).headers["X-Cache"] == "miss"
    body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64",
                        "data": [v for row in ROWS for v in row]}]}  # fmt: skip
    response = client.post("/ml/v2/models/reg/infer", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Cache"] == "hit"
    np.testing.assert_allclose(
        response.get_json()["outputs"][0]["data"], fit_regressor(0).predict(np.array(ROWS)),
        rtol=1e-6,
    )
