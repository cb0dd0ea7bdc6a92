"""Dynamic micro-batching: the Batcher contract, its config, and batches under a real gunicorn."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from flask import Flask

import mlserve
from mlserve.serving.batching import (
    BatchConfig,
    Batcher,
    BatchingError,
    BatchTimeout,
    parse_batching,
)
from mlserve.serving.blueprint import serving_state
from mlserve.serving.config import ConfigError, ServingConfig
from mlserve.store import ModelStore
from serving_support import Server

N_FEATURES = 3


class Model:
    """compute(rows, outputs): doubles the rows; records every call; can be held or made to fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()
        self.fail_batches: BaseException | None = None
        self.lock = threading.Lock()

    def __call__(self, rows: np.ndarray, outputs) -> dict[str, np.ndarray]:
        with self.lock:
            self.calls.append(rows.shape[0])
        self.started.set()
        self.hold.wait(10)
        if self.delay:
            time.sleep(self.delay)
        if np.isnan(rows).any():
            raise ValueError("input contains NaN")
        if self.fail_batches is not None and rows.shape[0] > 1:
            raise self.fail_batches
        out = {"predict": rows.sum(axis=1) * 2.0}
        if "proba" in outputs:
            out["proba"] = rows * 10.0
        return out


def rows_for(i: int, n: int = 1) -> np.ndarray:
    return np.arange(n * N_FEATURES, dtype=np.float64).reshape(n, N_FEATURES) + 1000.0 * i


def start_blocked(batcher: Batcher, model: Model) -> threading.Thread:
    """A direct call that holds the model busy until model.hold is set."""
    model.hold.clear()
    model.started.clear()
    thread = threading.Thread(target=batcher.predict, args=(rows_for(999), ("predict",)))
    thread.start()
    assert model.started.wait(5)
    return thread


def submit(pool, batcher, i, n=1, outputs=("predict",), timeout=None):
    return pool.submit(batcher.predict, rows_for(i, n), outputs, timeout)


# ------------------------------------------------------------------ contract


def test_rows_come_back_to_their_own_request():
    model = Model(delay=0.002)
    batcher = Batcher(model, BatchConfig(max_batch_size=16, max_delay_ms=5))
    sizes = [1 + (i % 4) for i in range(200)]
    with ThreadPoolExecutor(32) as pool:
        futures = [submit(pool, batcher, i, n) for i, n in enumerate(sizes)]
        results = [f.result(10) for f in futures]
    for i, (n, (out, queue_ms, compute_ms, batch_rows)) in enumerate(zip(sizes, results)):
        np.testing.assert_array_equal(out["predict"], rows_for(i, n).sum(axis=1) * 2.0)
        assert set(out) == {"predict"} and batch_rows >= n and queue_ms >= 0 and compute_ms > 0
    assert max(model.calls) > 1, model.calls  # batches formed
    assert sum(model.calls) == sum(sizes)
    stats = batcher.stats.snapshot()
    assert stats["requests"] == 200 and stats["rows"] == sum(sizes)
    assert stats["batched_calls"] + stats["direct_calls"] == stats["calls"] == len(model.calls)
    batcher.close()


def test_each_request_gets_only_the_outputs_it_asked_for():
    model = Model()
    batcher = Batcher(model, BatchConfig(max_batch_size=8, max_delay_ms=50))
    blocker = start_blocked(batcher, model)
    with ThreadPoolExecutor(4) as pool:
        plain = submit(pool, batcher, 1)
        both = submit(pool, batcher, 2, outputs=("predict", "proba"))
        time.sleep(0.05)
        model.hold.set()
        out1, out2 = plain.result(5)[0], both.result(5)[0]
    blocker.join(5)
    assert set(out1) == {"predict"} and set(out2) == {"predict", "proba"}
    np.testing.assert_array_equal(out2["proba"], rows_for(2) * 10.0)
    assert model.calls[1] == 2  # one batch for both
    batcher.close()


def test_a_bad_request_does_not_fail_the_others():
    model = Model()
    batcher = Batcher(model, BatchConfig(max_batch_size=8, max_delay_ms=50))
    blocker = start_blocked(batcher, model)
    bad = rows_for(5)
    bad[0, 1] = np.nan
    with ThreadPoolExecutor(8) as pool:
        good = [submit(pool, batcher, i) for i in range(3)]
        wrong = pool.submit(batcher.predict, bad, ("predict",))
        time.sleep(0.05)
        model.hold.set()
        for i, future in enumerate(good):
            np.testing.assert_array_equal(future.result(5)[0]["predict"], rows_for(i).sum(1) * 2)
        with pytest.raises(ValueError, match="NaN"):
            wrong.result(5)
    blocker.join(5)
    assert batcher.stats.split_retries == 1
    batcher.close()


def test_an_exception_of_the_batch_call_reaches_every_caller():
    model = Model()
    model.fail_batches = RuntimeError("BLAS fell over")
    batcher = Batcher(model, BatchConfig(max_batch_size=8, max_delay_ms=50))
    blocker = start_blocked(batcher, model)
    with ThreadPoolExecutor(8) as pool:
        futures = [submit(pool, batcher, i) for i in range(4)]
        time.sleep(0.05)
        model.hold.set()
        for future in futures:
            with pytest.raises(RuntimeError, match="BLAS fell over"):
                future.result(5)
    blocker.join(5)
    assert model.calls[1] == 4
    batcher.close()


def test_max_batch_size_is_respected():
    model = Model(delay=0.003)
    batcher = Batcher(model, BatchConfig(max_batch_size=5, max_delay_ms=20))
    with ThreadPoolExecutor(40) as pool:
        futures = [submit(pool, batcher, i, n=1 + i % 2) for i in range(120)]
        for future in futures:
            future.result(10)
    assert max(model.calls) <= 5 and max(model.calls) >= 3, model.calls
    batcher.close()


def test_a_request_of_max_batch_size_rows_or_more_runs_alone_and_directly():
    model = Model()
    batcher = Batcher(model, BatchConfig(max_batch_size=4, max_delay_ms=50))
    blocker = start_blocked(batcher, model)
    out, queue_ms, _, batch_rows = batcher.predict(rows_for(1, 6), ("predict",))
    assert queue_ms == 0.0 and batch_rows == 6  # did not wait for the busy model's batch
    model.hold.set()
    blocker.join(5)
    batcher.close()


def test_max_delay_bounds_the_wait_while_the_model_is_busy():
    model = Model()
    batcher = Batcher(model, BatchConfig(max_batch_size=64, max_delay_ms=30))
    blocker = start_blocked(batcher, model)
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        future = submit(pool, batcher, 1)
        time.sleep(0.005)
        assert model.calls == [1]  # queued, not dispatched: the model is busy
        model.calls.clear()
        # the batch leaves after max_delay_ms although the direct call still runs
        deadline = time.monotonic() + 5
        while not model.calls and time.monotonic() < deadline:
            time.sleep(0.001)
        waited = (time.perf_counter() - start) * 1000
        assert model.calls == [1]
        assert 25 <= waited < 1000, waited
        model.hold.set()
        _, queue_ms, _, _ = future.result(5)
    assert 25 <= queue_ms < 1000, queue_ms
    blocker.join(5)
    batcher.close()


def test_a_cheap_model_is_never_queued():
    model = Model()
    batcher = Batcher(model, BatchConfig(max_batch_size=64, max_delay_ms=50, min_compute_ms=5))
    batcher.predict(rows_for(0), ("predict",))  # a direct call measures the model: ~0 ms
    assert batcher.direct_ms is not None and batcher.direct_ms < 5
    blocker = start_blocked(batcher, model)  # busy, but the model is cheap: no queue
    out, queue_ms, _, batch_rows = batcher.predict(rows_for(1), ("predict",))
    assert queue_ms == 0.0 and batch_rows == 1 and batcher._thread is None
    model.hold.set()
    blocker.join(5)
    batcher.close()


def test_an_idle_batcher_is_bypassed():
    model = Model()
    batcher = Batcher(model, BatchConfig(max_batch_size=64, max_delay_ms=5))
    for i in range(50):
        out, queue_ms, _, batch_rows = batcher.predict(rows_for(i, 2), ("predict",))
        assert queue_ms == 0.0 and batch_rows == 2
    assert batcher._thread is None  # no worker thread was ever needed
    stats = batcher.stats.snapshot()
    assert stats["direct_calls"] == stats["calls"] == 50 and stats["batched_calls"] == 0
    batcher.close()


def test_a_caller_that_gives_up_does_not_stall_the_batch():
    model = Model()
    batcher = Batcher(model, BatchConfig(max_batch_size=8, max_delay_ms=5000))
    blocker = start_blocked(batcher, model)
    with ThreadPoolExecutor(4) as pool:
        impatient = submit(pool, batcher, 1, timeout=0.05)
        patient = submit(pool, batcher, 2)
        with pytest.raises(BatchTimeout, match="waited more than 0.05 s"):
            impatient.result(5)
        model.hold.set()  # the model frees up: the remaining request goes at once
        out = patient.result(5)[0]
    np.testing.assert_array_equal(out["predict"], rows_for(2).sum(1) * 2)
    assert batcher.stats.timeouts == 1
    assert sorted(model.calls) == [1, 1]  # the timed-out row was never computed
    blocker.join(5)
    batcher.close()


def test_close_drains_the_queue():
    model = Model()
    batcher = Batcher(model, BatchConfig(max_batch_size=64, max_delay_ms=60_000))
    blocker = start_blocked(batcher, model)
    with ThreadPoolExecutor(8) as pool:
        futures = [submit(pool, batcher, i) for i in range(5)]
        time.sleep(0.05)
        closer = threading.Thread(target=batcher.close)
        closer.start()  # does not wait the 60 s delay
        time.sleep(0.02)
        model.hold.set()
        closer.join(5)
        assert not closer.is_alive()
        for i, future in enumerate(futures):
            np.testing.assert_array_equal(future.result(1)[0]["predict"], rows_for(i).sum(1) * 2)
    blocker.join(5)
    assert not batcher._thread.is_alive()
    out, queue_ms, _, _ = batcher.predict(rows_for(7), ("predict",))  # after close: direct
    assert queue_ms == 0.0


def test_adaptive_batch_size_backs_off_when_over_the_objective():
    model = Model(delay=0.02)
    config = BatchConfig(max_batch_size=32, max_delay_ms=5, adaptive=True,
                         latency_objective_ms=5, adaptive_step=4)  # fmt: skip
    batcher = Batcher(model, config)
    assert batcher.current_max == 4
    with ThreadPoolExecutor(16) as pool:
        for future in [submit(pool, batcher, i) for i in range(64)]:
            future.result(10)
    assert batcher.current_max < 4  # every batch took 20 ms > 5 ms
    fast = Batcher(Model(), BatchConfig(max_batch_size=32, adaptive=True, adaptive_step=4))
    fast._adapt(4, 0.1)
    assert fast.current_max == 8  # a full batch under the objective: grow
    batcher.close()


def test_stats_listeners_see_every_call():
    model = Model(delay=0.002)
    batcher = Batcher(model, BatchConfig(max_batch_size=8, max_delay_ms=5))
    seen = []
    batcher.stats.listeners.append(seen.append)
    batcher.stats.listeners.append(lambda record: 1 / 0)  # a broken hook is ignored
    with ThreadPoolExecutor(8) as pool:
        for future in [submit(pool, batcher, i) for i in range(40)]:
            future.result(10)
    assert sum(r.requests for r in seen) == 40 and sum(r.rows for r in seen) == 40
    assert all(len(r.queue_ms) == r.requests for r in seen)
    batcher.close()


# -------------------------------------------------------------------- config


def test_batching_config_keys_and_per_model_entries():
    config = ServingConfig.from_mapping(
        {
            "MLSERVE_BATCH_MAX_SIZE": 16,
            "MLSERVE_BATCH_MAX_DELAY_MS": 1.5,
            "MLSERVE_BATCHING_MODELS": {"heavy": {"max_batch_size": 128}, "cheap": False},
        }
    )
    assert config.batching_for("other") == BatchConfig(max_batch_size=16, max_delay_ms=1.5)
    assert config.batching_for("heavy").max_batch_size == 128
    assert config.batching_for("heavy").max_delay_ms == 1.5
    assert config.batching_for("cheap").enabled is False
    off = ServingConfig.from_mapping({"MLSERVE_BATCHING": False})
    assert off.batching_for("any").enabled is False


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"MLSERVE_BATCH_MAX_SIZE": 0}, "max_batch_size must be an integer >= 1, got 0"),
        ({"MLSERVE_BATCH_MAX_DELAY_MS": -1}, "max_delay_ms must be a number >= 0"),
        ({"MLSERVE_BATCHING": "yes"}, "enabled must be True or False"),
        ({"MLSERVE_BATCHING_MODELS": [1]}, "MLSERVE_BATCHING_MODELS must map model names"),
        (
            {"MLSERVE_BATCHING_MODELS": {"m": {"max_size": 3}}},
            "MLSERVE_BATCHING_MODELS['m']: unknown batching option 'max_size'",
        ),
        (
            {"MLSERVE_BATCHING_MODELS": {"m": {"timeout_s": 0}}},
            "MLSERVE_BATCHING_MODELS['m']: timeout_s must be a number > 0",
        ),
    ],
)
def test_batching_config_errors_name_the_key(config, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ServingConfig.from_mapping(config)
    assert issubclass(BatchingError, ValueError)


def test_parse_batching_defaults():
    base, models = parse_batching(True, 64, 2.0, None)
    assert base == BatchConfig() and dict(models) == {}


# ------------------------------------------------------------ through Flask


# 32 MB of float64 weights, more than the L3 cache: 1-2 ms per row, well above the
# batcher's min_compute_ms (0.5). With 16 MB a call sometimes ran from L3 in under
# 0.5 ms, and the fastest direct call then marked the model cheap (never batched).
WIDTH, OUTPUTS = 2048, 2048


@pytest.fixture()
def heavy_store(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, WIDTH))
    Y = rng.normal(size=(64, OUTPUTS))
    model = mlserve.Ridge(alpha=1.0).fit(X, Y)
    store = ModelStore(tmp_path / "models")
    store.publish("heavy", model, alias="production")
    return store, model


def test_blueprint_predicts_through_the_batcher(heavy_store):
    store, model = heavy_store
    app = Flask("host")
    app.config["MLSERVE_BATCHING_MODELS"] = {"heavy": {"max_delay_ms": 20, "min_compute_ms": 0}}
    app.register_blueprint(mlserve.blueprint(store), url_prefix="/ml")
    state = serving_state(app)
    loaded = state.select("heavy")
    assert loaded.batcher is not None and loaded.batcher.config.max_delay_ms == 20
    rng = np.random.default_rng(1)
    X = rng.normal(size=(24, WIDTH))

    def call(i):
        client = app.test_client()
        response = client.post("/ml/v1/models/heavy:predict", json={"instances": X[i : i + 1].tolist()})
        assert response.status_code == 200, response.json
        return i, response

    with ThreadPoolExecutor(8) as pool:
        for i, response in pool.map(call, range(24)):
            np.testing.assert_allclose(response.json["predictions"], model.predict(X[i : i + 1]))
            assert re.search(r"batch;desc=\d+$", response.headers["Server-Timing"])
    bad = client_post_nan(app)
    assert bad.status_code == 400 and "NaN" in bad.json["error"]
    app_off = Flask("off")
    app_off.config["MLSERVE_BATCHING"] = False
    app_off.register_blueprint(mlserve.blueprint(store))
    assert serving_state(app_off).select("heavy").batcher is None


def client_post_nan(app):
    row = [0.0] * WIDTH
    row[3] = None
    return app.test_client().post("/ml/v1/models/heavy:predict", json={"instances": [row]})


# --------------------------------------------------------- under gunicorn


def test_gunicorn_gthread_forms_batches_under_concurrent_load(heavy_store, tmp_path):
    store, model = heavy_store
    # the CLI's batching flags reach the batcher: no batch above --max-batch-size
    server = Server(
        store.root, "--workers", "1", "--threads", "8", "--max-batch-size", "3",
        "--max-delay-ms", "5",
    )  # fmt: skip
    try:
        rng = np.random.default_rng(2)
        X = rng.normal(size=(96, WIDTH))
        url = f"{server.url}/v1/models/heavy:predict"

        def call(i):
            with requests.Session() as session:
                response = session.post(url, json={"instances": X[i : i + 1].tolist()}, timeout=30)
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(
                response.json()["predictions"], model.predict(X[i : i + 1]), rtol=1e-9, atol=1e-9
            )
            match = re.search(r"batch;desc=(\d+)", response.headers["Server-Timing"])
            return int(match.group(1))

        sizes = []
        for _ in range(3):  # a loaded test machine may serialise one round; try a few
            with ThreadPoolExecutor(16) as pool:
                sizes += list(pool.map(call, range(96)))
            if max(sizes) > 1:
                break
        assert max(sizes) > 1, sizes
        assert max(sizes) <= 3, sizes
    finally:
        server.stop()


def test_serve_without_batching_makes_one_call_per_request(heavy_store):
    store, _ = heavy_store
    server = Server(store.root, "--workers", "1", "--threads", "8", "--no-batching")
    try:
        X = np.random.default_rng(4).normal(size=(32, WIDTH))
        url = f"{server.url}/v1/models/heavy:predict"

        def call(i):
            with requests.Session() as session:
                response = session.post(url, json={"instances": X[i : i + 1].tolist()}, timeout=30)
            assert response.status_code == 200, response.text
            return int(re.search(r"batch;desc=(\d+)", response.headers["Server-Timing"]).group(1))

        with ThreadPoolExecutor(16) as pool:
            sizes = list(pool.map(call, range(32)))
        assert sizes == [1] * 32
    finally:
        server.stop()
