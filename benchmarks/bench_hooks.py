"""Custom hooks (@bp.preprocessor / @bp.postprocessor): their cost on /predict.

    python benchmarks/bench_hooks.py            # ~10 s
    python benchmarks/bench_hooks.py --quick    # smoke run

In-process through Flask's test client (the whole blueprint path without
sockets), mlserve.LinearRegression on 4 features, 1 row, POST /predict/lin:

* plain: a blueprint without hooks;
* other model hooked: hooks registered for another model (what a hooked
  blueprint costs the models that have none);
* identity hooks: a preprocessor and a postprocessor that return their input
  (the cost of the hook machinery itself, not of any user code).

Medians of interleaved samples (benchmarks/_common.py).
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


def client(store, hooked=None):
    from flask import Flask

    import mlserve

    app = Flask("bench")
    app.config.update(MLSERVE_ACCESS_LOG=False)
    bp = mlserve.blueprint(store, reload_interval=0)
    if hooked is not None:
        bp.preprocessor(hooked)(lambda payload: payload)
        bp.postprocessor(hooked)(lambda prediction: prediction)
    app.register_blueprint(bp)
    return app.test_client()


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
        body = json.dumps({"instances": X[:1].tolist()})
        ns = {
            "plain": client(store), "other": client(store, "churn"),
            "identity": client(store, "lin"), "body": body, "J": "application/json",
        }  # fmt: skip
        answers = [
            ns[c].post("/predict/lin", data=body, content_type="application/json").get_json()
            for c in ("plain", "other", "identity")
        ]
        assert answers[0] == answers[1] == answers[2], answers
        np.testing.assert_allclose(answers[0]["predictions"], model.predict(X[:1]))
        times = measure_interleaved(
            {c: f"{c}.post('/predict/lin', data=body, content_type=J)"
             for c in ("plain", "other", "identity")},
            ns, budget_s=budget, repeats=repeats,
        )  # fmt: skip

    plain = times["plain"].median_ns
    rows = [
        [case, fmt_time(times[key].median_ns), fmt_ratio(times[key].median_ns / plain)]
        for case, key in (("no hooks", "plain"), ("hooks on another model", "other"),
                          ("identity pre + post hooks", "identity"))
    ]  # fmt: skip
    print("\n".join(machine_lines(["numpy", "flask"])))
    print(f"load average: {load_average()}")
    print(markdown_table(["LinearRegression 4 features, 1 row", "median", "vs no hooks"], rows))


if __name__ == "__main__":
    main()
