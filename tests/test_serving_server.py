"""A real ``mlserve serve`` (gunicorn, gthread) on an ephemeral port: requests, tritonclient, hot reload."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests

from mlserve.store import ModelStore
from serving_support import Server, fit_classifier, fit_regressor, training_data

X, _ = training_data(seed=3, n=6)
ROWS = X.tolist()
MAX_BODY = 100_000


@pytest.fixture(scope="module")
def models():
    return {"reg": fit_regressor(), "clf": fit_classifier(), "clf2": fit_classifier(seed=2)}


@pytest.fixture(scope="module")
def server(tmp_path_factory, models):
    root = tmp_path_factory.mktemp("served") / "models"
    store = ModelStore(root)
    store.publish("reg", models["reg"], alias="production")
    store.publish("clf", models["clf"], alias="production")
    store.publish("clf", models["clf2"])
    server = Server(
        root,
        "--workers",
        "1",
        "--threads",
        "4",
        "--reload-interval",
        "0",
        "--default-model",
        "reg",
        "--max-body-bytes",
        str(MAX_BODY),
    )
    yield server
    server.stop()


def test_every_protocol_over_http(server, models):
    url = server.url
    response = requests.post(f"{url}/v1/models/reg:predict", json={"instances": ROWS}, timeout=10)
    np.testing.assert_allclose(response.json()["predictions"], models["reg"].predict(X))
    assert response.headers["X-Model-Version"] == "1"
    assert "compute;dur=" in response.headers["Server-Timing"]

    body = {
        "inputs": [
            {"name": "input", "shape": [6, 4], "datatype": "FP64", "data": X.ravel().tolist()}
        ]
    }
    response = requests.post(f"{url}/v2/models/clf/versions/2/infer", json=body, timeout=10)
    assert response.json()["outputs"][0]["data"] == models["clf2"].predict(X).tolist()

    response = requests.post(
        f"{url}/invocations", json={"dataframe_split": {"data": ROWS}}, timeout=10
    )
    np.testing.assert_allclose(response.json()["predictions"], models["reg"].predict(X))

    buffer = io.BytesIO()
    np.save(buffer, X)
    response = requests.post(
        f"{url}/predict/clf",
        data=buffer.getvalue(),
        headers={"Content-Type": "application/x-npy"},
        timeout=10,
    )
    assert response.json()["predictions"] == models["clf"].predict(X).tolist()

    assert [m["name"] for m in requests.get(f"{url}/models", timeout=10).json()["models"]] == [
        "clf",
        "reg",
    ]
    assert (
        "/v2/models/{name}/infer" in requests.get(f"{url}/openapi.json", timeout=10).json()["paths"]
    )
    assert requests.get(f"{url}/ping", timeout=10).status_code == 200


def test_client_errors_over_http_and_the_server_keeps_serving(server):
    url = server.url
    cases = [
        (
            requests.post(
                f"{url}/v1/models/reg:predict",
                data="{",
                headers={"Content-Type": "application/json"},
            ),
            400,
        ),
        (requests.post(f"{url}/v1/models/reg:predict", json={"instances": [[1, 2]]}), 400),
        (
            requests.post(
                f"{url}/v1/models/reg:predict", data="x", headers={"Content-Type": "text/plain"}
            ),
            415,
        ),
        (
            requests.post(
                f"{url}/v1/models/reg:predict", json={"instances": [[1.0, 2.0, 3.0, 4.0]] * 5000}
            ),
            413,
        ),
        (requests.post(f"{url}/v1/models/nope:predict", json={"instances": ROWS}), 404),
        (requests.get(f"{url}/no/such/path"), 404),
        (requests.delete(f"{url}/models"), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert "error" in response.json()

    def chunks(payload: bytes):
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    good = json.dumps({"instances": ROWS}).encode()
    response = requests.post(
        f"{url}/v1/models/reg:predict",
        data=chunks(good),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    too_big = json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]] * 5000}).encode()
    response = requests.post(
        f"{url}/v1/models/reg:predict",
        data=chunks(too_big),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert (
        requests.post(f"{url}/v1/models/reg:predict", json={"instances": ROWS}).status_code == 200
    )

    # a keep-alive client's connection survives its refused requests
    with requests.Session() as session:
        for body, content_type, status in (
            (too_big, "application/json", 413),
            (too_big, "text/plain", 415),
            (b"{", "application/json", 400),
            (good, "application/json", 200),
        ):
            response = session.post(
                f"{url}/v1/models/reg:predict", data=body, headers={"Content-Type": content_type}
            )
            assert response.status_code == status
            assert session.get(f"{url}/v2/health/live", timeout=5).status_code == 200


def test_tritonclient(server, models):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("clf")
        assert client.is_model_ready("clf", model_version="2")
        assert not client.is_model_ready("nope")
        metadata = client.get_model_metadata("clf")
        assert metadata["versions"] == ["1", "2"]
        assert metadata["inputs"][0]["shape"] == [-1, 4]
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]

        for binary in (True, False):
            for dtype, datatype in ((np.float64, "FP64"), (np.float32, "FP32")):
                rows = X.astype(dtype)
                tensor = triton.InferInput("input", list(rows.shape), datatype)
                tensor.set_data_from_numpy(rows, binary_data=binary)
                outputs = [
                    triton.InferRequestedOutput("predict", binary_data=binary),
                    triton.InferRequestedOutput("predict_proba", binary_data=binary),
                ]
                result = client.infer("clf", [tensor], outputs=outputs)
                labels = [
                    v.decode() if isinstance(v, bytes) else v
                    for v in result.as_numpy("predict").tolist()
                ]
                assert labels == models["clf"].predict(rows).tolist()
                np.testing.assert_allclose(
                    result.as_numpy("predict_proba"), models["clf"].predict_proba(rows), rtol=1e-6
                )
        tensor = triton.InferInput("input", [6, 4], "FP64")
        tensor.set_data_from_numpy(X)
        result = client.infer("reg", [tensor], model_version="1")  # no outputs: all, in binary
        np.testing.assert_allclose(result.as_numpy("predict"), models["reg"].predict(X))
        assert result.get_response()["model_version"] == "1"

        tensor = triton.InferInput("input", [6, 3], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(X[:, :3]))
        with pytest.raises(InferenceServerException, match="expected 4 features, got 3"):
            client.infer("reg", [tensor])
        with pytest.raises(InferenceServerException, match="not found"):
            client.get_model_metadata("nope")
    finally:
        client.close()


def test_hot_reload_under_load_has_no_failed_request(tmp_path, models):
    root = tmp_path / "models"
    store = ModelStore(root)
    store.publish("reg", models["reg"], alias="production")
    server = Server(
        root, "--workers", "1", "--threads", "4", "--reload-interval", "0.2", "--admin"
    )  # --admin: the end of the test reloads without keys
    try:
        stop = threading.Event()
        lock = threading.Lock()
        versions: list[str] = []
        failures: list[str] = []
        body = {"instances": ROWS}

        def client_loop() -> None:
            session = requests.Session()
            for _ in range(5000):  # bounded
                if stop.is_set():
                    break
                try:
                    response = session.post(
                        f"{server.url}/v1/models/reg:predict", json=body, timeout=10
                    )
                except requests.RequestException as exc:
                    with lock:
                        failures.append(repr(exc))
                    continue
                with lock:
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                    versions.append(response.headers.get("X-Model-Version", "?"))
            session.close()

        threads = [threading.Thread(target=client_loop) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        store.publish("reg", models["reg"], alias="production")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if versions and versions[-1] == "2":
                    break
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert not failures, failures[:5]
        assert set(versions) == {"1", "2"}
        first_two = versions.index("2")
        assert (
            versions[first_two:].count("1") <= 3 * 2
        )  # in-flight requests of the old version only

        # an admin reload makes a move visible at once (one worker)
        store.set_alias("reg", "production", 1)
        assert requests.post(f"{server.url}/admin/reload", timeout=10).json()["reloaded"] is True
        response = requests.post(
            f"{server.url}/predict/reg", json={"features": ROWS[0]}, timeout=10
        )
        assert response.json()["version"] == 1
    finally:
        server.stop()


def test_demo_check(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlserve.cli",
            "demo",
            "--port",
            "0",
            "--check",
            "--dir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "curl -s -H 'Content-Type: application/json'" in result.stdout
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["model"] == "demo" and answer["version"] == 1
    assert answer["prediction"] in ("churn", "stay")


def test_workers_share_the_model_file_by_mmap(tmp_path, models):
    psutil = pytest.importorskip("psutil")
    root = tmp_path / "models"
    store = ModelStore(root)
    store.publish("reg", models["reg"], alias="production")
    server = Server(root, "--workers", "2", "--threads", "1", "--reload-interval", "0")
    try:
        model_file = str(store.path("reg", 1))
        deadline = time.monotonic() + 20
        while True:
            workers = psutil.Process(server.process.pid).children()
            mapped = [
                w.pid
                for w in workers
                if any(m.path == model_file for m in w.memory_maps(grouped=True))
            ]
            if len(mapped) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(mapped) == 2, (
            f"workers mapping {model_file}: {mapped} of {[w.pid for w in workers]}"
        )
    finally:
        server.stop()
