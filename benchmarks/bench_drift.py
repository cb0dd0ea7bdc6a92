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

Medians of interleaved samples (benchmarks/_common.py); the answers are
checked equal before timing.
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
    fmt_ratio,
    fmt_time,
    load_average,
    machine_lines,
    markdown_table,
    measure_interleaved,
)


def client(store, **config):
    from flask import Flask

    import mlserve

    app = Flask("bench")
    app.config.update(MLSERVE_ACCESS_LOG=False, **config)
    app.register_blueprint(mlserve.blueprint(store, reload_interval=0))
    return app.test_client()


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
            base = times["plain"].median_ns
            for label, key in cases:
                rows.append([f"{n_rows} row{'s' if n_rows > 1 else ''}", label,
                             fmt_time(times[key].median_ns), fmt_ratio(times[key].median_ns / base)])  # fmt: skip
        window = ns["drift"].get("/drift/churn").get_json()["versions"][0]
        shadow = ns["shadow"].get("/models/churn").get_json()["shadows"]["production"]
        assert window["window_size"] > 0 and shadow["rows"] > 0, (window, shadow)

    print("\n".join(machine_lines(["numpy", "flask"])))
    print(f"load average: {load_average()}")
    print(markdown_table(["LogisticRegression 8 features", "case", "median", "vs off"], rows))


if __name__ == "__main__":
    main()
