"""Prediction cache (MLSERVE_CACHE): hit vs miss, and the hit path vs no cache.

    python benchmarks/bench_cache.py            # ~20 s
    python benchmarks/bench_cache.py --quick    # smoke run

Requests go through the blueprint in-process (Flask's test client: the whole
request path, routing, decode, cache, predict, encode, without sockets),
request, POST /predict/<name>:

* heavy: a scikit-learn RandomForestRegressor (100 trees, max_depth 10, 20
  features) converted with mlserve.convert, 500 rows per request; "miss" alternates two bodies with
  MLSERVE_CACHE_MAX_ENTRIES=1, so every request misses and stores;
  "hit" repeats one body;
* cheap: mlserve.LinearRegression on 4 features, 1 row; "no cache" (the default,
  cache off) vs the memory cache's hit path.

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    budget = 0.2 if args.quick else 1.5
    repeats = 5 if args.quick else 15

    from sklearn.ensemble import RandomForestRegressor

    import mlserve

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 20))
    y = X[:, 0] * 2 - X[:, 1] + np.sin(X[:, 2]) + rng.normal(scale=0.1, size=2000)
    forest = RandomForestRegressor(n_estimators=100, max_depth=10, random_state=0).fit(X, y)
    Xc = rng.normal(size=(200, 4))
    cheap = mlserve.LinearRegression().fit(Xc, Xc @ np.array([1.0, -2.0, 0.5, 3.0]))

    with tempfile.TemporaryDirectory() as tmp:
        store = mlserve.ModelStore(os.path.join(tmp, "store"))
        store.publish("rf", mlserve.convert(forest), alias="production")
        store.publish("lin", cheap, alias="production")
        bodies = [json.dumps({"instances": X[i * 500 : (i + 1) * 500].tolist()}) for i in range(2)]
        cheap_body = json.dumps({"instances": Xc[:1].tolist()})
        ns = {
            "plain": client(store),
            "memory": client(store, MLSERVE_CACHE="memory"),
            "evicting": client(store, MLSERVE_CACHE="memory", MLSERVE_CACHE_MAX_ENTRIES=1),
            "bodies": bodies, "cheap_body": cheap_body, "i": [0], "J": "application/json",
        }  # fmt: skip
        # check: the hit answers what the model answers
        expected = forest.predict(X[:500])
        for _ in range(2):
            r = ns["memory"].post("/predict/rf", data=bodies[0], content_type="application/json")
        assert r.headers["X-Cache"] == "hit", r.headers
        np.testing.assert_allclose(r.get_json()["predictions"], expected, rtol=1e-5)
        r = ns["evicting"].post("/predict/rf", data=bodies[1], content_type="application/json")
        assert r.headers["X-Cache"] == "miss"

        heavy = measure_interleaved(
            {
                "miss": "i[0] ^= 1; evicting.post('/predict/rf', data=bodies[i[0]], content_type=J)",
                "hit": "memory.post('/predict/rf', data=bodies[0], content_type=J)",
            },
            ns, budget_s=budget, repeats=repeats,
        )  # fmt: skip
        light = measure_interleaved(
            {
                "plain": "plain.post('/predict/lin', data=cheap_body, content_type=J)",
                "hit": "memory.post('/predict/lin', data=cheap_body, content_type=J)",
            },
            ns, budget_s=budget, repeats=repeats,
        )  # fmt: skip

    rows = [
        ["RandomForest 100 x depth 10, 500 rows: miss vs hit", fmt_time(heavy["miss"].median_ns),
         fmt_time(heavy["hit"].median_ns),
         fmt_ratio(heavy["hit"].median_ns / heavy["miss"].median_ns)],
        ["LinearRegression 4 features, 1 row: no cache vs memory hit",
         fmt_time(light["plain"].median_ns), fmt_time(light["hit"].median_ns),
         fmt_ratio(light["hit"].median_ns / light["plain"].median_ns)],
    ]  # fmt: skip
    print("\n".join(machine_lines(["numpy", "scikit-learn", "flask"])))
    print(f"load average: {load_average()}")
    print(markdown_table(["case", "first", "second (hit)", "hit / first"], rows))


if __name__ == "__main__":
    main()
