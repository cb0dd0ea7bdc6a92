"""Operations under real gunicorn: keys, limits, metrics across workers, access logs, graceful stop."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
import requests

from mlserve.serving.security import create_key
from mlserve.store import ModelStore
from serving_support import Server, fit_regressor, training_data

X, _ = training_data(seed=1, n=3)
ROW = X[0].tolist()


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ops") / "models"
    ModelStore(path).publish("reg", fit_regressor(), alias="production")
    return path


def test_keys_limits_metrics_and_logs_across_two_workers(store_dir, tmp_path):
    keys_path = str(tmp_path / "keys.json")
    key, _ = create_key(keys_path, ["predict", "read"], name="client1")
    server = Server(
        store_dir, "--workers", "2", "--threads", "2", "--api-keys", keys_path,
        "--rate-limit", "1000/minute",
    )  # fmt: skip
    try:
        url = server.url
        auth = {"Authorization": f"Bearer {key}"}
        with requests.Session() as session:
            assert session.post(f"{url}/predict/reg", json={"features": ROW}).status_code == 401
            n = 40
            for i in range(n):
                response = session.post(
                    f"{url}/predict/reg", json={"instances": [ROW] * 2},
                    headers={**auth, "X-Request-ID": f"req-{i}"},
                )  # fmt: skip
                assert response.status_code == 200
                assert response.headers["X-Request-ID"] == f"req-{i}"
        # several connections, so both workers answer some requests
        for _ in range(20):
            assert requests.post(f"{url}/predict/reg", json={"features": ROW}, headers=auth).ok
        text = requests.get(f"{url}/metrics", headers=auth).text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("mlserve_requests_total{") and 'endpoint="predict"' in line
            and 'status="200"' in line
        )
        assert counted == n + 20, text  # summed over both workers, whichever answered the scrape
        assert 'status="401"' in text
        assert "mlserve_requests_in_flight" in text
        assert requests.get(f"{url}/v2/health/ready").status_code == 200  # open
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log if line.startswith('{"time"')]
    logged = {line["request_id"]: line for line in lines}
    assert logged["req-7"]["rows"] == 2 and logged["req-7"]["status"] == 200
    assert logged["req-7"]["key"] == "client1" and logged["req-7"]["model"] == "reg"
    assert key not in "".join(server.log)


def test_rate_limit_429_under_gunicorn(store_dir):
    server = Server(store_dir, "--workers", "1", "--rate-limit", "5/minute", "--no-access-log")
    try:
        codes = [
            requests.post(f"{server.url}/predict/reg", json={"features": ROW}).status_code
            for _ in range(7)
        ]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
        response = requests.get(f"{server.url}/models")
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
    finally:
        server.stop()


def test_in_flight_request_finishes_on_sigterm(store_dir):
    """gunicorn's graceful stop: a request whose body is still arriving completes."""
    server = Server(store_dir, "--workers", "1", "--no-access-log")
    try:
        body = json.dumps({"instances": [ROW] * 50}).encode()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        sock.sendall(
            b"POST /predict/reg HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nX-Request-ID: graceful-1\r\n\r\n".encode()
            + body[:100]
        )
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(body[100:])
        response = b""
        while b"\r\n\r\n" not in response or len(response) < 200:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
        sock.close()
        head = response.split(b"\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 200"), response[:500]
        assert b"X-Request-ID: graceful-1" in response
        server.process.wait(timeout=15)
        assert server.process.returncode == 0
    finally:
        server.stop()
