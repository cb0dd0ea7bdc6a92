"""Drift monitoring (MLSERVE_DRIFT) and shadow traffic: their cost on /predict.

    python benchmarks/bench_drift.py            # ~15 s
    python benchmarks/bench_drift.py --quick    # smoke run

In-process through Flask's test client (the whole blueprint path without
sockets), mlserve.LogisticRegression on 8 features fit by mlserve (so its
file has the drift bins), POST /predict/churn with 1 row and with 100 rows:

* off: MLSERVE_DRIFT off, no shadow (the default);
* drift: MLSERVE_DRIFT on: each request is appended to the drift queue and
  the drift thread, in the same process, bins the rows (its time is in the
  measurement: it takes the GIL between requests);
* shadow: a shadow version (another LogisticRegression) on the alias: the
  shadow thread predicts every request's rows again and compares.

Two measures, both medians of interleaved rounds: the wall time per request
(benchmarks/_common.py) and the CPU time per request of the whole process
(``time.process_time``: the request thread plus the drift or shadow thread,
whose pending work is flushed inside each round). On a shared, overloaded
machine the wall time mostly measures waiting for a core; the CPU time is
what the feature costs. The answers are checked equal before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    blueprint_app,
    fmt_ratio,
    fmt_time,
    load_average,
    machine_lines,
    markdown_table,
    measure_interleaved,
)


def client(store, **config):
    app = blueprint_app(store, **config)
    return app.test_client()


def cpu_per_request(clients, body, n, rounds):
    """Median over ``rounds`` of the process CPU time per request of each client."""
    samples = {key: [] for key in clients}
    keys = list(clients)
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[: r % len(keys)]:
            client = clients[key]
            state = client.application.extensions["mlserve"]["mlserve"]
            start = time.process_time()
            for _ in range(n):
                client.post("/predict/churn", data=body, content_type="application/json")
            if state.drift is not None:
                state.drift.flush()  # the drift thread's work for these requests
            state.shadow.flush()  # and the shadow's
            samples[key].append((time.process_time() - start) / n * 1e9)
    return {key: statistics.median(v) for key, v in samples.items()}


def bookkeeping_per_request(state, loaded, body_rows, results, n, rounds, shadow_of=None):
    """CPU per request of the request thread's append and of the thread's drain, apart."""
    monitor = state.drift if shadow_of is None else state.shadow
    wake = monitor._flusher.wake
    monitor._flusher.wake = lambda: None  # drained below, in this thread, to time it apart
    appends, drains = [], []
    try:
        for _ in range(rounds):
            start = time.process_time()
            if shadow_of is None:
                for _ in range(n):
                    monitor.observe(loaded, body_rows, results)
            else:
                for _ in range(n):
                    monitor.observe(loaded, "production", shadow_of, body_rows, results)
            middle = time.process_time()
            monitor._drain()
            end = time.process_time()
            appends.append((middle - start) / n * 1e9)
            drains.append((end - middle) / n * 1e9)
    finally:
        monitor._flusher.wake = wake
    return statistics.median(appends), statistics.median(drains)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    budget = 0.3 if args.quick else 2.0
    repeats = 5 if args.quick else 15

    import mlserve

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 8))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    cases = (("off", "plain"), ("drift on", "drift"), ("shadow on", "shadow"))
    rows = []
    parts = {}
    with tempfile.TemporaryDirectory() as tmp:
        plain_store = mlserve.ModelStore(os.path.join(tmp, "plain"))
        shadow_store = mlserve.ModelStore(os.path.join(tmp, "shadow"))
        for store in (plain_store, shadow_store):
            store.publish("churn", mlserve.LogisticRegression().fit(X, y), alias="production")
            store.publish("churn", mlserve.LogisticRegression(C=0.01).fit(X, y))
        shadow_store.set_shadow("churn", "production", 2)
        ns = {
            "plain": client(plain_store), "drift": client(plain_store, MLSERVE_DRIFT=True),
            "shadow": client(shadow_store), "J": "application/json",
        }  # fmt: skip
        for n_rows in (1, 100):
            ns["body"] = json.dumps({"instances": X[:n_rows].tolist()})
            answers = [
                ns[c].post("/predict/churn", data=ns["body"], content_type="application/json").get_json()
                for _, c in cases
            ]
            assert answers[0] == answers[1] == answers[2], answers
            times = measure_interleaved(
                {c: f"{c}.post('/predict/churn', data=body, content_type=J)" for _, c in cases},
                ns, budget_s=budget, repeats=repeats,
            )  # fmt: skip
            state = ns["drift"].application.extensions["mlserve"]["mlserve"]
            loaded = state.select("churn")
            rows_in = X[:n_rows].copy()
            results = {"predict": loaded.model.predict(rows_in)}
            parts[n_rows] = (
                bookkeeping_per_request(state, loaded, rows_in, results, 2000, repeats),
                bookkeeping_per_request(ns["shadow"].application.extensions["mlserve"]["mlserve"],
                                        loaded, rows_in, results, 1000, repeats, shadow_of=2),
            )  # fmt: skip
            cpu = cpu_per_request({c: ns[c] for _, c in cases}, ns["body"],
                                  50 if args.quick else 400, 5 if args.quick else 15)  # fmt: skip
            base = times["plain"].median_ns
            for label, key in cases:
                rows.append([f"{n_rows} row{'s' if n_rows > 1 else ''}", label,
                             fmt_time(times[key].median_ns), fmt_ratio(times[key].median_ns / base),
                             fmt_time(cpu[key]), fmt_ratio(cpu[key] / cpu["plain"])])  # fmt: skip
        window = ns["drift"].get("/drift/churn").get_json()["versions"][0]
        shadow = ns["shadow"].get("/models/churn").get_json()["shadows"]["production"]
        assert window["window_size"] > 0 and shadow["rows"] > 0, (window, shadow)

    print("\n".join(machine_lines(["numpy", "flask"])))
    print(f"load average: {load_average()}")
    print(markdown_table(
        ["LogisticRegression 8 features", "case", "wall median", "vs off", "CPU median", "vs off"],
        rows,
    ))
    print()
    table = []
    for n_rows, ((d_append, d_drain), (s_append, s_drain)) in parts.items():
        request = next(r for r in rows if r[0].startswith(f"{n_rows} ") and r[1] == "off")[4]
        table.append([f"{n_rows} row{'s' if n_rows > 1 else ''}", request,
                      fmt_time(d_append), fmt_time(d_drain), fmt_time(s_append), fmt_time(s_drain)])  # fmt: skip
    print(markdown_table(
        ["CPU per request", "request (off)", "drift: append", "drift: thread",
         "shadow: append", "shadow: thread (its predict too)"],
        table,
    ))


if __name__ == "__main__":
    main()
