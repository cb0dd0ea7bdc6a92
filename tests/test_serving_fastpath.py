"""The request path's bookkeeping done off the request: buffered access log, gathered
metrics, request ids, the batcher's cheap-model test (mlserve.serving.deferred, metrics)."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time

import numpy as np
import pytest
import requests
from flask import Flask
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from mlserve.serving import blueprint
from mlserve.serving.batching import BatchConfig, Batcher
from mlserve.serving.deferred import (
    FLUSH_INTERVAL_SECONDS,
    BufferedLineHandler,
    Flusher,
    flush_all,
)
from mlserve.serving.metrics import (
    IN_FLIGHT,
    REQUESTS,
    RequestMetrics,
    RequestRecord,
    observe_many,
    request_id_from,
)
from mlserve.store import ModelStore
from serving_support import Server, fit_regressor, training_data

X, _ = training_data(seed=1, n=3)
ROW = X[0].tolist()
VISIBLE_WITHIN = 2 * FLUSH_INTERVAL_SECONDS  # the documented bound
SLACK = 2.0  # a loaded CI machine may delay a thread; the bound is checked without it too


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fastpath") / "models"
    ModelStore(path).publish("reg", fit_regressor(), alias="production")
    return path


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.005)
    return None


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


# ------------------------------------------------------------ buffered log


def test_buffered_handler_writes_every_line_in_order_in_few_writes():
    stream = CountingStream()
    handler = BufferedLineHandler(stream)
    lines = [f"line {i}" for i in range(2000)]
    start = time.monotonic()
    for line in lines:
        handler.write_line(line)
    arrived = wait_for(lambda: stream.getvalue().count("\n") == len(lines), 5)
    assert arrived is not None, stream.getvalue()[-200:]
    assert arrived - start < VISIBLE_WITHIN + SLACK
    assert stream.getvalue() == "\n".join(lines) + "\n"
    assert stream.writes < len(lines) / 10  # batched, not one write per line
    handler.close()


def test_buffered_handler_lines_appear_within_the_flush_interval():
    stream = CountingStream()
    handler = BufferedLineHandler(stream)
    delays = []
    for i in range(5):
        start = time.monotonic()
        handler.write_line(f"alone {i}")  # an idle handler: the flusher must wake
        arrived = wait_for(lambda i=i: f"alone {i}\n" in stream.getvalue(), 5)
        assert arrived is not None
        delays.append(arrived - start)
    assert min(delays) < VISIBLE_WITHIN  # the bound holds, at least when not preempted
    assert max(delays) < VISIBLE_WITHIN + SLACK
    handler.close()


def test_buffered_handler_flushes_what_is_pending_at_close_and_flush_all():
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, interval=60.0)  # the thread would wait a minute
    handler.write_line("one")
    handler.write_line("two")
    handler.close()
    assert stream.getvalue() == "one\ntwo\n"
    other = io.StringIO()
    handler = BufferedLineHandler(other, interval=60.0)
    handler.write_line("three")
    flush_all()  # what gunicorn's worker exit and the interpreter's exit call
    assert other.getvalue() == "three\n"


def test_buffered_handler_as_a_logging_handler():
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, interval=60.0)
    logger = logging.getLogger("mlserve.test.fastpath")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("hello %s", "world")
        handler.flush()
        assert stream.getvalue() == "hello world\n"
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_a_flusher_goes_idle_and_wakes_again():
    done = []
    pending = []

    class Owner:
        def flush(self) -> bool:
            if not pending:
                return False
            done.extend(pending)
            pending.clear()
            return True

    owner = Owner()
    owner.flusher = Flusher(owner.flush, 0.01, "test-flusher")  # as owners hold theirs
    pending.append(1)
    owner.flusher.wake()
    assert wait_for(lambda: done == [1] and owner.flusher.idle, 5) is not None
    pending.append(2)
    owner.flusher.wake()
    assert wait_for(lambda: done == [1, 2] and owner.flusher.idle, 5) is not None
    thread = owner.flusher._thread
    assert thread is not None and thread.daemon and thread.is_alive()
    owner = None
    import gc

    gc.collect()
    thread.join(5)  # the owner is gone: its thread ends
    assert not thread.is_alive()


# -------------------------------------------------------------- log lines


class FakeRequest:
    method = "POST"
    remote_addr = "10.0.0.1"

    def __init__(self, path: str) -> None:
        self.path = path


@pytest.mark.parametrize(
    "path", ["/v1/models/a:predict", '/x/"quoted"\\back', "/caf\u00e9/\u2603", "/ctl\x01\x1f\t"]
)
def test_access_line_is_exactly_json_dumps(path):
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, interval=60.0)
    access = logging.getLogger("mlserve.access")
    saved = access.handlers[:], access.level, access.propagate
    access.handlers[:] = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    try:
        metrics = RequestMetrics()
        record = RequestRecord("rid-1", "predict")
        record.model, record.version, record.rows, record.key_id = "m\u00e9", "3", 7, 'k"1'
        record.finish(metrics, 200, FakeRequest(path), log=True)
        handler.flush()
    finally:
        access.handlers[:], level, access.propagate = saved[0], saved[1], saved[2]
        access.setLevel(level)
    line = stream.getvalue().rstrip("\n")
    data = json.loads(line)
    assert line == json.dumps(data, separators=(",", ":"))  # same bytes as json.dumps
    assert list(data) == [
        "time", "request_id", "method", "path", "endpoint", "model", "version", "rows",
        "status", "latency_ms", "key", "remote",
    ]  # fmt: skip
    assert data["path"] == path and data["model"] == "m\u00e9" and data["version"] == 3
    assert data["rows"] == 7 and data["key"] == 'k"1' and data["remote"] == "10.0.0.1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["time"])


def test_access_line_nulls():
    metrics = RequestMetrics()
    record = RequestRecord("rid-2", "no_route")
    stream = io.StringIO()
    handler = BufferedLineHandler(stream, interval=60.0)
    access = logging.getLogger("mlserve.access")
    saved = access.handlers[:], access.level, access.propagate
    access.handlers[:] = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    try:
        request = FakeRequest("/nope")
        request.remote_addr = None
        record.finish(metrics, 404, request, log=True)
        handler.flush()
    finally:
        access.handlers[:], level, access.propagate = saved[0], saved[1], saved[2]
        access.setLevel(level)
    data = json.loads(stream.getvalue())
    assert data["model"] is None and data["version"] is None and data["rows"] is None
    assert data["key"] is None and data["remote"] is None and data["status"] == 404


# ---------------------------------------------------------------- metrics


def test_observe_many_gives_the_exposition_of_one_observe_per_value():
    buckets = (0.001, 0.01, 0.1, 1.0)
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "doc", ["m"], buckets=buckets, registry=one)
    h2 = Histogram("h", "doc", ["m"], buckets=buckets, registry=many)
    values = [0.0, 0.001, 0.0010001, 0.5, 1.0, 7.0, 0.01, 0.02] * 3
    for v in values:
        h1.labels("a").observe(v)
    observe_many(h2.labels("a"), values)

    def samples(registry):
        return [line for line in generate_latest(registry).decode().splitlines()
                if not line.startswith("h_created")]  # fmt: skip

    assert samples(one) == samples(many)


def counted(model: str, status: str = "200") -> float:
    value = REQUESTS.labels(model, "1", "predict", status)._value.get()
    return float(value)


def test_every_request_is_counted_and_visible_within_the_flush_interval():
    metrics = RequestMetrics()
    model = "fastpath-visible"
    threads = [
        threading.Thread(
            target=lambda: [
                metrics.observe(model, "1", "predict", 200, 0.001, 1) for _ in range(500)
            ]
        )
        for _ in range(4)
    ]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    arrived = wait_for(lambda: counted(model) == 2000, 5)
    assert arrived is not None, counted(model)
    assert arrived - start < VISIBLE_WITHIN + SLACK


def test_flush_applies_at_once_and_the_test_client_scrape_sees_every_request(store_dir):
    app = Flask("host")
    app.config.update(MLSERVE_RELOAD_INTERVAL=0)
    app.register_blueprint(blueprint(str(store_dir)), url_prefix="/ml")
    client = app.test_client()

    def answered_predicts() -> float:
        """mlserve_requests_total of 200s on /predict/reg, summed over versions.

        The registry is the process's: other tests' series are in it too, so the
        test counts what its own 25 requests add.
        """
        text = client.get("/ml/metrics").get_data(as_text=True)  # no wait: the scrape flushes
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("mlserve_requests_total{")
            and 'model="reg"' in line
            and 'endpoint="predict"' in line
            and 'status="200"' in line
        )

    before = answered_predicts()
    for _ in range(25):
        assert client.post("/ml/predict/reg", json={"features": ROW}).status_code == 200
    assert answered_predicts() - before == 25
    stats = client.get("/ml/v2/models/reg/stats").get_json()["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == 25  # V2 statistics flushed too
    assert stats["inference_count"] == 25 and stats["execution_count"] == 25


def test_in_flight_gauge_follows_requests():
    metrics = RequestMetrics()
    base = IN_FLIGHT._value.get()
    records = [RequestRecord(str(i), "predict") for i in range(3)]
    for record in records:
        metrics.started(record)
    metrics.flush()
    assert IN_FLIGHT._value.get() == base + 3
    for record in records:
        record.finish(metrics, 200, None, log=False)
    metrics.flush()
    assert IN_FLIGHT._value.get() == base


# ------------------------------------------------------------- request ids


def test_request_ids_are_unique_and_well_formed():
    ids = [request_id_from(None) for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert request_id_from("client-id_1.2:3") == "client-id_1.2:3"
    assert re.fullmatch(r"[0-9a-f]{32}", request_id_from("not ok"))


# ----------------------------------------------------------------- batcher


class TimedModel:
    """compute(rows, outputs) taking ``delays`` seconds in turn; raises on a NaN row."""

    def __init__(self, delays):
        self.delays = list(delays)

    def __call__(self, rows, outputs):
        if np.isnan(rows).any():
            raise ValueError("NaN in input")
        time.sleep(self.delays.pop(0) if self.delays else 0.0)
        return {name: rows[:, 0].copy() for name in outputs}


def test_the_cheap_test_uses_the_fastest_direct_call():
    # a slow first call (a GIL wait under load) must not hide that the model is cheap
    batcher = Batcher(TimedModel([0.05, 0.0]), BatchConfig(min_compute_ms=5))
    rows = np.ones((1, 3))
    batcher.predict(rows, ("predict",))
    assert not batcher._cheap and batcher.direct_ms >= 5
    batcher.predict(rows, ("predict",))
    assert batcher._cheap and batcher.direct_ms < 5
    batcher.predict(rows, ("predict",))  # slower again (a sleep of 0 now): still cheap
    assert batcher._cheap
    batcher.close()


def test_a_refused_call_does_not_make_a_model_cheap():
    batcher = Batcher(TimedModel([0.02, 0.02]), BatchConfig(min_compute_ms=5))
    with pytest.raises(ValueError, match="NaN in input"):
        batcher.predict(np.full((1, 3), np.nan), ("predict",))  # refused at once
    assert batcher.direct_ms is None and not batcher._cheap
    batcher.predict(np.ones((1, 3)), ("predict",))
    assert not batcher._cheap and batcher.direct_ms >= 5
    batcher.close()


# ------------------------------------------------------ under real gunicorn


def test_serve_logs_every_request_counts_it_and_flushes_at_shutdown(store_dir):
    server = Server(store_dir, "--workers", "1", "--threads", "4")
    n = 60
    try:
        with requests.Session() as session:
            for i in range(n):
                response = session.post(
                    f"{server.url}/predict/reg", json={"features": ROW},
                    headers={"X-Request-ID": f"fast-{i}"},
                )  # fmt: skip
                assert response.status_code == 200
                timing = response.headers["Server-Timing"]
                assert re.fullmatch(
                    r"decode;dur=[\d.]+, queue;dur=[\d.]+, compute;dur=[\d.]+, "
                    r"encode;dur=[\d.]+, batch;desc=1",
                    timing,
                ), timing
            text = session.get(f"{server.url}/metrics").text
            total = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("mlserve_requests_total{") and 'endpoint="predict"' in line
            )
            assert total == n, text  # every request, with no wait by the client
            for i in range(n, n + 20):
                response = session.post(
                    f"{server.url}/predict/reg", json={"features": ROW},
                    headers={"X-Request-ID": f"fast-{i}"},
                )  # fmt: skip
                assert response.status_code == 200
    finally:
        server.stop()  # right after the last request: the pending lines are written at exit
    logged = [json.loads(line) for line in server.log if line.startswith('{"time"')]
    ids = [line["request_id"] for line in logged if line["endpoint"] == "predict"]
    assert ids == [f"fast-{i}" for i in range(n + 20)]


def test_pending_lines_are_written_when_the_process_exits():
    import subprocess
    import sys

    code = (
        "import sys, logging\n"
        "from mlserve.serving.deferred import BufferedLineHandler\n"
        "handler = BufferedLineHandler(sys.stderr, interval=60.0)\n"  # only the exit can write
        "logger = logging.getLogger('mlserve.access')\n"
        "logger.addHandler(handler); logger.setLevel(logging.INFO); logger.propagate = False\n"
        "for i in range(100): handler.write_line(f'exit-line {i}')\n"
        "sys.exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stderr.splitlines() == [f"exit-line {i}" for i in range(100)]


def test_gunicorn_worker_exit_hook_flushes():
    from mlserve._serve_cli import _worker_exit

    stream = io.StringIO()
    handler = BufferedLineHandler(stream, interval=60.0)
    handler.write_line("at worker exit")
    _worker_exit(None, None)
    assert stream.getvalue() == "at worker exit\n"
    handler.close()


def test_v2_statistics_summed_per_flush_equal_one_update_per_request():
    from mlserve.serving.metrics import InferenceStats
    from mlserve.serving.runtime import Timings

    one = InferenceStats()
    metrics = RequestMetrics(("predict",))
    requests_ = [
        (200, 0.002, 3, Timings(0.1, 0.2, 0.3, 0.4, 3)),
        (200, 0.001, 1, None),
        (400, 0.0005, None, None),
        (200, 0.004, 2, Timings(0.5, 0.0, 0.7, 0.1, 8)),
    ]
    for status, seconds, rows, timings in requests_:
        one.observe_request("m", 2, status < 400, seconds * 1000.0, rows, timings)
        metrics.observe("m", "2", "predict", status, seconds, rows, None, timings)
    metrics.flush()
    expected, got = one.report([("m", 2)])[0], metrics.inference.report([("m", 2)])[0]
    expected.pop("last_inference"), got.pop("last_inference")
    assert got == expected
    assert got["inference_stats"]["fail"]["count"] == 1 and got["inference_count"] == 6


# -------------------------------------------------- the GIL around predict


def gil_released_during(call) -> bool:
    """Whether the main thread ran while ``call`` ran in another thread (a 5 s
    switch interval: a thread holding the GIL keeps it unless it lets go)."""
    import sys

    started, done, seen = threading.Event(), [], []

    def work():
        started.set()
        call()
        done.append(True)

    old = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        t = threading.Thread(target=work)
        t.start()
        started.wait()
        seen.append(bool(done))
        t.join()
    finally:
        sys.setswitchinterval(old)
    return seen == [False]


def test_a_large_linear_predict_releases_the_gil_and_a_small_one_is_exact():
    import mlserve

    rng = np.random.default_rng(7)
    # 2048 features x 1024 outputs: 2M multiply-adds per row, far above the threshold
    X = rng.normal(size=(64, 2048))
    W = rng.normal(size=(2048, 1024))
    from sklearn.linear_model import LinearRegression, LogisticRegression

    heavy = LinearRegression().fit(X[:, :2048], X @ W / 100.0)
    model = mlserve.convert(heavy)
    rows = rng.normal(size=(256, 2048))
    assert gil_released_during(lambda: model.predict(rows))
    # a 1-row logistic predict (20 multiply-adds) keeps the GIL: still the same numbers
    Xs = rng.normal(size=(300, 20))
    small = LogisticRegression().fit(Xs, (Xs[:, 0] > 0).astype(int))
    fast = mlserve.convert(small)
    np.testing.assert_allclose(fast.predict_proba(Xs[:1]), small.predict_proba(Xs[:1]), rtol=1e-12)
    assert fast.predict(Xs[:1])[0] == small.predict(Xs[:1])[0]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="the test forks a child: os.fork exists on POSIX only (not on Windows)")
def test_a_forked_child_gets_its_own_flusher(tmp_path):
    import os

    path = tmp_path / "lines.txt"
    stream = open(path, "a", buffering=1)  # noqa: SIM115 - closed below
    handler = BufferedLineHandler(stream)
    handler.write_line("parent before fork")
    handler.write_line("parent pending at fork")  # the child must not write the parent's lines
    pid = os.fork()
    if pid == 0:  # the child: its flusher thread must start again and write within the bound
        code = 1
        try:
            handler.write_line("child")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if "child\n" in path.read_text():
                    code = 0
                    break
                time.sleep(0.01)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    handler.close()
    stream.close()
    assert os.WEXITSTATUS(status) == 0
    lines = path.read_text().splitlines()
    assert lines.count("parent pending at fork") == 1 and lines.count("child") == 1
