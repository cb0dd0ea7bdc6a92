"""Payload logging (mlserve/serving/payload_log.py): JSON lines, sampling, rotation, a full queue,
the line cap, stderr and one file shared by two real gunicorn workers."""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from flask import Flask
from prometheus_client import REGISTRY
from serving_support import Server, training_data

from mlserve.serving import ConfigError, blueprint
from mlserve.serving.config import ServingConfig
from mlserve.serving.payload_log import format_line
from mlserve.store import ModelStore

X, _ = training_data(seed=1, n=200)
ROW = X[0].tolist()


def make_app(store, **config):
    app = Flask("host")
    app.config.update({"MLSERVE_RELOAD_INTERVAL": 0, **config})
    app.register_blueprint(blueprint(store), url_prefix="/ml")
    return app, app.test_client()


def payload_log(app):
    return app.extensions["mlserve"]["mlserve"].config.payload_log


def read_lines(*paths):
    lines = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            lines += [json.loads(line) for line in f]
    return lines


def counter(name):
    return REGISTRY.get_sample_value(name) or 0.0


def test_off_by_default(store):
    app, client = make_app(store)
    assert payload_log(app) is None
    assert client.post("/ml/predict/reg", json={"features": ROW}).status_code == 200


def test_lines_are_json_with_inputs_outputs_and_ids(store, models, tmp_path):
    path = tmp_path / "payload.jsonl"
    app, client = make_app(store, MLSERVE_PAYLOAD_LOG=str(path))
    one = client.post("/ml/predict/reg", json={"features": ROW}, headers={"X-Request-ID": "req-1"})
    many = client.post("/ml/predict/clf", json={"instances": X[:3].tolist(), "return": "all"})
    v2 = client.post("/ml/v2/models/reg/infer", json={"inputs": [
        {"name": "input", "shape": [2, 4], "datatype": "FP64", "data": X[:2].ravel().tolist()}]})
    assert one.status_code == many.status_code == v2.status_code == 200
    payload_log(app).flush()
    lines = read_lines(path)
    assert len(lines) == 3
    first, second, third = lines
    assert set(first) == {"time", "request_id", "endpoint", "model", "version", "status",
                          "latency_ms", "rows", "inputs", "outputs"}  # fmt: skip
    assert first["request_id"] == "req-1" and first["endpoint"] == "predict"
    assert first["model"] == "reg" and first["version"] == 1 and first["status"] == 200
    assert first["rows"] == 1 and first["inputs"] == [ROW]
    assert first["outputs"]["predict"] == pytest.approx([one.json["prediction"]])
    assert first["outputs"]["predict"] == pytest.approx(models["reg"].predict(np.array([ROW])).tolist())
    assert first["time"].endswith("Z") and 0 < first["latency_ms"] < 10_000
    assert second["request_id"] == many.headers["X-Request-ID"]
    assert second["inputs"] == X[:3].tolist()
    np.testing.assert_allclose(second["outputs"]["predict_proba"], models["clf"].predict_proba(X[:3]))
    assert second["outputs"]["predict"] == models["clf"].predict(X[:3]).tolist()
    assert third["endpoint"] == "v2_infer" and third["inputs"] == X[:2].tolist()
    # a refused request is not a payload
    assert client.post("/ml/predict/reg", json={"features": [1.0]}).status_code == 400
    payload_log(app).flush()
    assert len(read_lines(path)) == 3


def test_cache_hits_are_logged_too(store, models, tmp_path):
    path = tmp_path / "payload.jsonl"
    app, client = make_app(store, MLSERVE_PAYLOAD_LOG=str(path), MLSERVE_CACHE="memory")
    answers = [client.post("/ml/predict/reg", json={"features": ROW}) for _ in range(2)]
    assert [r.headers["X-Cache"] for r in answers] == ["miss", "hit"]
    payload_log(app).flush()
    lines = read_lines(path)
    assert [line["request_id"] for line in lines] == [r.headers["X-Request-ID"] for r in answers]
    assert lines[0]["outputs"] == lines[1]["outputs"]
    assert lines[1]["outputs"]["predict"] == pytest.approx(models["reg"].predict(np.array([ROW])).tolist())


def test_sampling_rate_within_bounds(store, tmp_path):
    path = tmp_path / "payload.jsonl"
    app, client = make_app(store, MLSERVE_PAYLOAD_LOG=str(path), MLSERVE_PAYLOAD_LOG_SAMPLE=0.3)
    n = 600
    for _ in range(n):
        assert client.post("/ml/predict/reg", json={"features": ROW}).status_code == 200
    payload_log(app).flush()
    logged = len(read_lines(path))
    sd = math.sqrt(n * 0.3 * 0.7)
    assert abs(logged - n * 0.3) < 5 * sd, logged  # 5 standard deviations: fails ~1 in 10^6
    # SAMPLE 0 turns the log off
    app, _ = make_app(store, MLSERVE_PAYLOAD_LOG=str(path), MLSERVE_PAYLOAD_LOG_SAMPLE=0)
    assert payload_log(app) is None


def test_rotation_by_size_keeps_the_backups(store, tmp_path):
    path = tmp_path / "payload.jsonl"
    app, client = make_app(
        store, MLSERVE_PAYLOAD_LOG=str(path), MLSERVE_PAYLOAD_LOG_MAX_BYTES=3000,
        MLSERVE_PAYLOAD_LOG_BACKUPS=2,
    )  # fmt: skip
    ids = [f"r{i}" for i in range(60)]
    for rid in ids:
        client.post("/ml/predict/reg", json={"features": ROW}, headers={"X-Request-ID": rid})
        if rid.endswith("0"):
            payload_log(app).flush()  # several batches, as the writer thread would
    payload_log(app).flush()
    files = [str(path), f"{path}.1", f"{path}.2"]
    assert all(os.path.exists(f) for f in files) and not os.path.exists(f"{path}.3")
    for f in files:
        assert 0 < os.path.getsize(f) <= 3000
    lines = read_lines(*reversed(files))  # oldest first
    got = [line["request_id"] for line in lines]
    assert got == ids[-len(got):]  # the newest lines, in order, none torn
    assert len(got) < len(ids)  # the oldest file was removed


def test_full_queue_drops_and_counts_never_blocks(store, tmp_path):
    path = tmp_path / "payload.jsonl"
    app, client = make_app(store, MLSERVE_PAYLOAD_LOG=str(path), MLSERVE_PAYLOAD_LOG_QUEUE=5)
    log = payload_log(app)
    before = counter("mlserve_payload_log_dropped_total")
    written_before = counter("mlserve_payload_log_lines_total")
    with log._write_lock:  # the writer is stuck (a slow disk): requests go on
        start = time.perf_counter()
        for _ in range(12):
            assert client.post("/ml/predict/reg", json={"features": ROW}).status_code == 200
        assert time.perf_counter() - start < 5.0
        assert counter("mlserve_payload_log_dropped_total") == before + 7
    log.flush()
    assert len(read_lines(path)) == 5
    assert counter("mlserve_payload_log_lines_total") == written_before + 5
    text = client.get("/ml/metrics").get_data(as_text=True)
    assert "mlserve_payload_log_dropped_total" in text


def test_a_line_is_capped_and_the_rest_summarised(store, models, tmp_path):
    path = tmp_path / "payload.jsonl"
    app, client = make_app(store, MLSERVE_PAYLOAD_LOG=str(path), MLSERVE_PAYLOAD_LOG_MAX_LINE_BYTES=1024)
    response = client.post("/ml/predict/clf", json={"instances": X.tolist(), "return": "all"})
    assert response.status_code == 200
    payload_log(app).flush()
    with open(path, "rb") as f:
        raw = f.read()
    assert raw.count(b"\n") == 1 and len(raw) <= 1024
    line = json.loads(raw)
    written = len(line["inputs"])
    assert 0 < written < 200 and line["rows"] == 200
    assert line["omitted"] == {"rows": 200 - written, "inputs_shape": [200, 4],
                               "outputs_shape": {"predict": [200], "predict_proba": [200, 2]}}  # fmt: skip
    assert line["inputs"] == X[:written].tolist()
    assert line["outputs"]["predict"] == models["clf"].predict(X[:written]).tolist()
    assert len(line["outputs"]["predict_proba"]) == written


def test_a_large_request_is_not_kept_whole_in_the_queue(store, tmp_path):
    path = tmp_path / "payload.jsonl"
    app, client = make_app(store, MLSERVE_PAYLOAD_LOG=str(path))
    log = payload_log(app)
    big = np.random.default_rng(0).normal(size=(5000, 4))
    with log._write_lock:
        assert client.post("/ml/predict/reg", json={"instances": big.tolist()}).status_code == 200
        (entry,) = log._pending
        rows, results = entry[7], entry[8]
        assert rows.shape == (4096 // 10 + 1, 4) and rows.base is None  # a copy of the first rows
        assert results["predict"].shape == (rows.shape[0],) and results["predict"].base is None
    log.flush()
    line = read_lines(path)[0]
    assert line["rows"] == 5000 and line["inputs"] == big[: len(line["inputs"])].tolist()
    assert line["omitted"] == {"rows": 5000 - len(line["inputs"]), "inputs_shape": [5000, 4],
                               "outputs_shape": {"predict": [5000]}}  # fmt: skip


def test_format_line_writes_non_finite_as_null_and_always_fits():
    rows = np.array([[1.0, np.nan], [np.inf, 2.0]])
    entry = (0.0, "id", "predict", "m", 1, 200, 1.0, rows, {"predict": np.array([0.5, -np.inf])})
    line = json.loads(format_line(entry, 4096))
    assert line["inputs"] == [[1.0, None], [None, 2.0]]
    assert line["outputs"] == {"predict": [0.5, None]}
    wide = np.zeros((3, 2000))
    line = format_line((0.0, "id", "predict", "m", 1, 200, 1.0, wide, {"predict": np.zeros(3)}), 512)
    assert len(line) <= 512 and json.loads(line)["omitted"]["rows"] == 3


def test_config_is_validated(store, tmp_path):
    for config, match in [
        ({"MLSERVE_PAYLOAD_LOG_SAMPLE": 1.5}, "MLSERVE_PAYLOAD_LOG_SAMPLE must be a number in"),
        ({"MLSERVE_PAYLOAD_LOG_MAX_BYTES": -1}, "MLSERVE_PAYLOAD_LOG_MAX_BYTES must be"),
        ({"MLSERVE_PAYLOAD_LOG_BACKUPS": -1}, "MLSERVE_PAYLOAD_LOG_BACKUPS must be"),
        ({"MLSERVE_PAYLOAD_LOG_MAX_LINE_BYTES": 100}, "at least 512"),
        ({"MLSERVE_PAYLOAD_LOG_QUEUE": 0}, "MLSERVE_PAYLOAD_LOG_QUEUE must be"),
    ]:
        with pytest.raises(ConfigError, match=match):
            make_app(store, MLSERVE_PAYLOAD_LOG=str(tmp_path / "p.jsonl"), **config)
    with pytest.raises(ConfigError, match="does not exist"):
        make_app(store, MLSERVE_PAYLOAD_LOG=str(tmp_path / "nope" / "p.jsonl"))
    with pytest.raises(ConfigError, match="is a folder"):
        make_app(store, MLSERVE_PAYLOAD_LOG=str(tmp_path))
    config = ServingConfig.from_environ({
        "MLSERVE_PAYLOAD_LOG": "stderr", "MLSERVE_PAYLOAD_LOG_SAMPLE": "0.25",
        "MLSERVE_PAYLOAD_LOG_MAX_BYTES": "1000000", "MLSERVE_PAYLOAD_LOG_BACKUPS": "3",
    })  # fmt: skip
    log = config.payload_log
    assert (log.target, log.sample, log.max_bytes, log.backups) == ("stderr", 0.25, 1_000_000, 3)


def _send(url, ids):
    with requests.Session() as session:
        for rid in ids:
            response = session.post(url, json={"features": ROW}, headers={"X-Request-ID": rid}, timeout=10)
            assert response.status_code == 200


def _wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_two_gunicorn_workers_share_one_file(tmp_path, models):
    store = ModelStore(tmp_path / "store")
    store.publish("reg", models["reg"], alias="production")
    path = tmp_path / "payload.jsonl"
    server = Server(tmp_path / "store", "--workers", "2", "--threads", "4", "--payload-log", str(path))
    try:
        ids = [f"w{t}-{i}" for t in range(4) for i in range(30)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda t: _send(f"{server.url}/predict/reg", ids[t * 30:(t + 1) * 30]), range(4)))

        def all_written():
            return path.exists() and path.read_bytes().count(b"\n") >= len(ids)

        assert _wait_for(all_written), path.read_bytes().count(b"\n") if path.exists() else None
        lines = read_lines(path)  # every line parses: none torn or interleaved
        assert sorted(line["request_id"] for line in lines) == sorted(ids)
        assert all(line["inputs"] == [ROW] and line["model"] == "reg" for line in lines)
    finally:
        server.stop()


def test_two_gunicorn_workers_rotate_one_file_without_losing_lines(tmp_path, models, monkeypatch):
    store = ModelStore(tmp_path / "store")
    store.publish("reg", models["reg"], alias="production")
    path = tmp_path / "payload.jsonl"
    monkeypatch.setenv("MLSERVE_PAYLOAD_LOG_MAX_BYTES", "4000")
    monkeypatch.setenv("MLSERVE_PAYLOAD_LOG_BACKUPS", "100")  # enough to keep every line
    server = Server(tmp_path / "store", "--workers", "2", "--payload-log", str(path))
    try:
        ids = [f"x{t}-{i}" for t in range(4) for i in range(40)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda t: _send(f"{server.url}/predict/reg", ids[t * 40:(t + 1) * 40]), range(4)))

        def files():
            return [p for p in tmp_path.iterdir() if p.name.startswith("payload.jsonl")
                    and not p.name.endswith(".lock")]  # fmt: skip

        def count():
            return sum(p.read_bytes().count(b"\n") for p in files())

        assert _wait_for(lambda: count() >= len(ids)), count()
        assert len(files()) >= 5  # rotated several times
        lines = read_lines(*files())  # every line parses in every file
        assert sorted(line["request_id"] for line in lines) == sorted(ids)
        assert all(p.stat().st_size <= 3 * 4000 for p in files())
    finally:
        server.stop()


def test_stderr_over_gunicorn_set_by_the_environment(tmp_path, models, monkeypatch):
    store = ModelStore(tmp_path / "store")
    store.publish("reg", models["reg"], alias="production")
    monkeypatch.setenv("MLSERVE_PAYLOAD_LOG", "stderr")
    monkeypatch.setenv("MLSERVE_PAYLOAD_LOG_SAMPLE", "1")
    server = Server(tmp_path / "store", "--workers", "2", "--no-access-log")
    try:
        ids = [f"s{i}" for i in range(20)]
        _send(f"{server.url}/predict/reg", ids)

        def logged():
            return [json.loads(line) for line in list(server.log) if line.startswith('{"time"')]

        assert _wait_for(lambda: len(logged()) >= len(ids))
        assert sorted(line["request_id"] for line in logged()) == sorted(ids)
    finally:
        server.stop()
