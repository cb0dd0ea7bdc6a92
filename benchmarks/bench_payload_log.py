"""Payload logging (MLSERVE_PAYLOAD_LOG) on the single-row fast path: off vs on.

    python benchmarks/bench_payload_log.py            # ~15 s
    python benchmarks/bench_payload_log.py --quick    # smoke run

Requests go through the blueprint in-process (Flask's test client: the whole
request path without sockets), POST /predict/lin (mlserve.LinearRegression,
4 features, 1 row): payload log off (the default), on with every request
logged to a file (the writer thread formats and writes while the requests
run: its CPU and GIL time is part of what is measured), and on with
MLSERVE_PAYLOAD_LOG_SAMPLE=0.1. The file's lines are counted and checked
after the run. Medians of interleaved samples (benchmarks/_common.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

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
    return app, app.test_client()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    budget = 0.2 if args.quick else 1.5
    repeats = 5 if args.quick else 15

    import mlserve

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    model = mlserve.LinearRegression().fit(X, X @ np.array([1.0, -2.0, 0.5, 3.0]))
    with tempfile.TemporaryDirectory() as tmp:
        store = mlserve.ModelStore(os.path.join(tmp, "store"))
        store.publish("lin", model, alias="production")
        every = os.path.join(tmp, "every.jsonl")
        sampled = os.path.join(tmp, "sampled.jsonl")
        _, off = client(store)
        app_on, on = client(store, MLSERVE_PAYLOAD_LOG=every)
        app_tenth, tenth = client(store, MLSERVE_PAYLOAD_LOG=sampled, MLSERVE_PAYLOAD_LOG_SAMPLE=0.1)
        body = json.dumps({"features": X[0].tolist()})
        ns = {"off": off, "on": on, "tenth": tenth, "body": body, "J": "application/json"}
        post = "{}.post('/predict/lin', data=body, content_type=J)"
        results = measure_interleaved(
            {name: post.format(name) for name in ("off", "on", "tenth")},
            ns, budget_s=budget, repeats=repeats,
        )  # fmt: skip
        for app in (app_on, app_tenth):
            app.extensions["mlserve"]["mlserve"].config.payload_log.flush()
        with open(every) as f:
            lines = f.readlines()
        first = json.loads(lines[0])
        assert first["inputs"] == [X[0].tolist()], first
        with open(sampled) as f:
            n_sampled = sum(1 for _ in f)
        # the request path's own share (sampled + submit) and the writer's per-line work
        from mlserve.serving.payload_log import format_line

        log = app_on.extensions["mlserve"]["mlserve"].config.payload_log
        row = X[:1].copy()
        result = {"predict": model.predict(row)}
        ns.update(log=log, row=row, result=result, format_line=format_line,
                  entry=(0.0, "id", "predict", "lin", 1, 200, 0.5, row, result))  # fmt: skip
        parts = measure_interleaved(
            {
                "submit": "log.sampled() and log.submit('id', 'predict', 'lin', 1, 200, 0.5, row, result)",
                "format": "format_line(entry, 4096)",
            },
            ns, budget_s=budget, repeats=repeats,
        )  # fmt: skip
        log.flush()  # before the folder goes

    base = results["off"].median_ns
    rows = [
        ["off (default)", fmt_time(base), fmt_ratio(1.0)],
        ["on, every request", fmt_time(results["on"].median_ns),
         fmt_ratio(results["on"].median_ns / base)],
        ["on, MLSERVE_PAYLOAD_LOG_SAMPLE=0.1", fmt_time(results["tenth"].median_ns),
         fmt_ratio(results["tenth"].median_ns / base)],
    ]  # fmt: skip
    print("\n".join(machine_lines(["numpy", "flask"])))
    print(f"load average: {load_average()}")
    print(f"lines written: {len(lines)} (every request), {n_sampled} (sampled)")
    print(markdown_table(["POST /predict/lin, 1 row", "median", "vs off"], rows))
    print()
    print(markdown_table(
        ["part", "median"],
        [["request path: sampled() + submit()", fmt_time(parts["submit"].median_ns)],
         ["writer thread: format_line, 1 row", fmt_time(parts["format"].median_ns)]],
    ))  # fmt: skip


if __name__ == "__main__":
    main()
