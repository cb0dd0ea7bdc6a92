"""mlserve.Client against a real `mlserve serve` (gunicorn on 127.0.0.1, API keys on)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from serving_support import Server, fit_classifier, fit_regressor, training_data

import mlserve
from mlserve.serving.security import create_key
from mlserve.store import ModelStore

N_USERS, N_ITEMS, D = 20, 50, 4


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("client")
    store = ModelStore(base / "models")
    models = {
        "clf1": fit_classifier(0),
        "clf2": fit_classifier(7),
        "reg": fit_regressor(0),
    }
    rng = np.random.default_rng(3)
    models["rec"] = mlserve.Recommender(rng.normal(size=(N_USERS, D)), rng.normal(size=(N_ITEMS, D)))
    models["km"] = mlserve.KMeans(n_clusters=3, random_state=0).fit(training_data(1)[0])
    store.publish("km", models["km"])
    store.publish("clf", models["clf1"], alias="production")
    store.publish("clf", models["clf2"], alias="canary")
    store.publish("reg", models["reg"], alias="production")
    store.publish("rec", models["rec"], alias="production")
    keys_path = str(base / "keys.json")
    key, _ = create_key(keys_path, ["predict", "read"], name="all")
    server = Server(
        base / "models", "--workers", "1", "--threads", "4", "--no-access-log",
        "--api-keys", keys_path,
    )  # fmt: skip
    try:
        yield server, key, models
    finally:
        server.stop()


@pytest.fixture
def client(served):
    server, key, _ = served
    with mlserve.Client(server.url, api_key=key, timeout=30) as c:
        yield c


def _rows(seed=5, n=17):
    return training_data(seed, n)[0]


def test_predict_labels_and_proba_match_the_model(served, client):
    model = served[2]["clf1"]
    X = _rows()
    labels = client.predict("clf", X)
    assert isinstance(labels, np.ndarray) and labels.shape == (17,)
    np.testing.assert_array_equal(labels, model.predict(X))  # string labels (BYTES tensor)
    proba = client.predict("clf", X, output="proba")
    assert proba.dtype == np.float64 and proba.shape == (17, 2)
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-12, atol=0)


def test_version_and_alias_pick_the_model(served, client):
    models = served[2]
    X = _rows(9)
    canary = models["clf2"].predict_proba(X)
    np.testing.assert_allclose(client.predict("clf", X, version=2, output="proba"), canary, rtol=1e-12)
    np.testing.assert_allclose(
        client.predict("clf", X, alias="canary", output="proba"), canary, rtol=1e-12
    )
    np.testing.assert_allclose(
        client.predict("clf", X, alias="production", output="proba"),
        models["clf1"].predict_proba(X),
        rtol=1e-12,
    )
    assert not np.allclose(canary, models["clf1"].predict_proba(X))


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_regressor_with_other_input_dtypes(served, client, dtype):
    model = served[2]["reg"]
    X = (_rows() * 10).astype(dtype)
    got = client.predict("reg", X)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, model.predict(X.astype(np.float64)), rtol=1e-9)


def test_kmeans_labels_and_distances(served, client):
    model = served[2]["km"]
    X = _rows()
    np.testing.assert_array_equal(client.predict("km", X), model.predict(X))
    np.testing.assert_allclose(
        client.predict("km", X, output="distances"), model.transform(X), rtol=1e-12
    )


def test_models_metadata_health(client):
    names = {m["name"] for m in client.models()}
    assert names == {"clf", "reg", "rec", "km"}
    meta = client.metadata("clf")
    assert meta["name"] == "clf"
    assert meta["inputs"][0]["shape"] == [-1, 4]
    proba = next(o for o in meta["outputs"] if o["name"] == "predict_proba")
    assert proba["parameters"]["classes"] == ["high", "low"]
    assert client.metadata("clf", version=2)["versions"]
    assert client.health() is True


def test_recommend_matches_the_model(served, client):
    model = served[2]["rec"]
    answer = client.recommend("rec", users=[0, 3], k=5)
    items, scores = model.recommend([0, 3], k=5)
    np.testing.assert_array_equal(np.asarray(answer["items"]), items)
    np.testing.assert_allclose(np.asarray(answer["scores"]), scores, rtol=1e-12)


def test_server_errors_are_client_errors_with_status_and_message(served, client):
    with pytest.raises(mlserve.ClientError) as info:
        client.predict("nope", _rows())
    assert info.value.status == 404 and "nope" in info.value.message
    with pytest.raises(mlserve.ClientError) as info:
        client.predict("clf", np.ones((3, 7)))
    assert info.value.status == 400 and "7" in info.value.message
    with pytest.raises(mlserve.ClientError) as info:
        client.predict("reg", _rows(), output="proba")
    assert info.value.status == 400 and "predict_proba" in info.value.message
    with pytest.raises(mlserve.ClientError) as info:
        client.predict("clf", _rows(), version=99)
    assert info.value.status == 404
    assert isinstance(info.value, mlserve.MLServeError)


def test_missing_or_wrong_api_key_is_401(served):
    server = served[0]
    for key in (None, "wrong-key"):
        with mlserve.Client(server.url, api_key=key) as c:
            with pytest.raises(mlserve.ClientError) as info:
                c.predict("clf", _rows())
            assert info.value.status == 401 and "API key" in info.value.message


def test_bad_arguments_are_value_errors(client):
    for X in (np.ones(4), np.ones((2, 2, 2)), np.array([["a", "b"]]), [[1, "x"]]):
        with pytest.raises(ValueError, match="X must"):
            client.predict("clf", X)
    with pytest.raises(ValueError, match="version or alias"):
        client.predict("clf", _rows(), version=1, alias="canary")
    with pytest.raises(ValueError, match="name"):
        client.predict("", _rows())
    with pytest.raises(TypeError, match="output"):
        client.predict("clf", _rows(), output=1)
    for kwargs in ({"timeout": 0}, {"retries": -1}, {"backoff": float("nan")}, {"pool_size": 0}):
        with pytest.raises(ValueError):
            mlserve.Client("http://127.0.0.1:1", **kwargs)
    with pytest.raises(ValueError, match="base_url"):
        mlserve.Client("127.0.0.1:8000")


def test_concurrent_threads_share_one_client(served, client):
    model = served[2]["clf1"]
    inputs = [_rows(seed, 1 + seed % 5) for seed in range(40)]

    def one(X):
        return client.predict("clf", X, output="proba")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, inputs))
    for X, got in zip(inputs, results):
        np.testing.assert_allclose(got, model.predict_proba(X), rtol=1e-12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_retried_then_raised():
    port = _free_port()  # nothing listens there
    client = mlserve.Client(f"http://127.0.0.1:{port}", retries=3, backoff=0.05)
    start = time.monotonic()
    with pytest.raises(mlserve.ClientError) as info:
        client.health()
    elapsed = time.monotonic() - start
    assert info.value.status is None and "refused" in info.value.message.lower()
    assert 0.05 + 0.1 + 0.2 <= elapsed < 10  # three waits between four attempts


def test_connection_refused_until_the_server_starts(tmp_path):
    """A predict sent before the server listens succeeds once it comes up."""
    store = ModelStore(tmp_path / "models")
    model = fit_regressor(2)
    store.publish("reg", model)
    port = _free_port()
    client = mlserve.Client(f"http://127.0.0.1:{port}", retries=40, backoff=0.2, timeout=30)
    X = _rows()
    outcome = {}

    def call():
        try:
            outcome["y"] = client.predict("reg", X)
        except mlserve.ClientError as exc:  # reported below
            outcome["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.3)  # the first attempts are refused
    server = Server(tmp_path / "models", "--workers", "1", "--no-access-log", "--port", str(port))
    try:
        caller.join(60)
        assert not caller.is_alive()
    finally:
        server.stop()
    assert "error" not in outcome, outcome.get("error")
    np.testing.assert_allclose(outcome["y"], model.predict(X), rtol=1e-12)


class _Unavailable(http.server.BaseHTTPRequestHandler):
    """Answers 503 (Retry-After: 0) to the first `failures` requests, then V2 ready."""

    failures = 2
    seen: list[float]

    def do_GET(self):
        self.seen.append(time.monotonic())
        if len(self.seen) <= self.failures:
            body, status = b'{"error": "overloaded"}', 503
        else:
            body, status = b'{"ready": true}', 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 503:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve_unavailable(failures):
    handler = type("Handler", (_Unavailable,), {"failures": failures, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


def test_503_is_retried_with_backoff():
    server, handler = _serve_unavailable(failures=2)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with mlserve.Client(url, retries=3, backoff=0.05) as c:
            assert c._json("GET", "/v2/health/ready") == {"ready": True}
        assert len(handler.seen) == 3
        gaps = np.diff(handler.seen)
        assert gaps[0] >= 0.04 and gaps[1] >= 0.09  # 0.05 s, then doubled
    finally:
        server.shutdown()
        server.server_close()


def test_503_past_the_retries_is_a_client_error():
    server, handler = _serve_unavailable(failures=10)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with mlserve.Client(url, retries=2, backoff=0.01) as c:
            with pytest.raises(mlserve.ClientError) as info:
                c.models()
            assert info.value.status == 503 and info.value.message == "overloaded"
            assert len(handler.seen) == 3
            assert c.health() is False  # readiness: a 503 is an answer, not retried
            assert len(handler.seen) == 4
    finally:
        server.shutdown()
        server.server_close()


def test_closed_client_refuses_calls(served):
    c = mlserve.Client(served[0].url)
    c.close()
    with pytest.raises(mlserve.ClientError, match="closed"):
        c.health()


class _Canned(http.server.BaseHTTPRequestHandler):
    """Answers every POST with one canned (status, headers, body); sleeps `delay` s first."""

    answer: tuple[int, dict, bytes]
    delay = 0.0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(self.delay)
        status, headers, body = self.answer
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _canned(status, headers, body, delay=0.0):
    handler = type("Handler", (_Canned,), {"answer": (status, headers, body), "delay": delay})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


V2 = {"Content-Type": "application/octet-stream"}


def _v2_answer(datatype, shape, size, raw):
    tensor = {"name": "predict", "shape": shape, "datatype": datatype}
    tensor["parameters"] = {"binary_data_size": size}
    header = json.dumps({"outputs": [tensor]}).encode()
    return {**V2, "Inference-Header-Content-Length": str(len(header))}, header + raw


@pytest.mark.parametrize(
    ("status", "headers", "body", "message"),
    [
        (200, {}, b"not json", "malformed V2 answer"),
        (200, {**V2, "Inference-Header-Content-Length": "999"}, b"{}", "malformed V2 answer"),
        (200, {}, b'{"outputs": [{"name": "other", "shape": [1], "data": [1]}]}', "no output"),
        # a tensor that declares more bytes than the body holds
        (200, *_v2_answer("FP64", [4], 32, b"\0" * 8), "past the end"),
        # a BYTES element whose length runs past its tensor
        (200, *_v2_answer("BYTES", [1], 4, b"\xff\xff\xff\x7f"), "past the end"),
        (500, {}, b"<html>oops</html>", "oops"),
    ],
)
def test_malformed_answers_are_client_errors(status, headers, body, message):
    server = _canned(status, headers, body)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with mlserve.Client(url, retries=0) as c:
            with pytest.raises(mlserve.ClientError, match=message) as info:
                c.predict("m", np.ones((1, 4)))
            assert info.value.status == status
    finally:
        server.shutdown()
        server.server_close()


def test_a_slow_server_is_a_timeout_client_error():
    server = _canned(200, {}, b"{}", delay=2.0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with mlserve.Client(url, timeout=0.3, retries=2) as c:
            start = time.monotonic()
            with pytest.raises(mlserve.ClientError, match="no answer within 0.3 s") as info:
                c.predict("m", np.ones((1, 4)))
            assert info.value.status is None
            assert time.monotonic() - start < 1.5  # a read timeout is not retried
    finally:
        server.shutdown()
        server.server_close()
