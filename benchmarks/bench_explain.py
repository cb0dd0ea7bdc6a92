"""TreeSHAP: mlserve's explain vs XGBoost's own pred_contribs, same model, same threads.

An XGBoost regressor and a 3-class classifier (200 rounds, max_depth 6, 20
features) are converted with mlserve.convert; each case times
``model.explain(X)`` against ``booster.predict(DMatrix(X), pred_contribs=True)``
at 1 and 1000 rows, with 1 thread on both sides and then with
every core. The two outputs are checked to agree before anything is timed.

Medians of interleaved samples (benchmarks/_common.py); ratios > 1 mean mlserve
is faster.
"""

from __future__ import annotations

import argparse
import os
import sys

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


def fitted_models(n_features: int, rounds: int, depth: int):
    import xgboost

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, n_features)).astype(np.float32)
    y_reg = X[:, 0] * 3 + np.sin(X[:, 1]) * 2 + X[:, 2] * X[:, 3] + rng.normal(scale=0.1, size=len(X))
    y_cls = np.digitize(X[:, 0] + X[:, 1] * X[:, 2], [-0.5, 0.5])
    params = {"n_estimators": rounds, "max_depth": depth, "tree_method": "hist", "n_jobs": 1}
    reg = xgboost.XGBRegressor(**params).fit(X, y_reg)
    cls = xgboost.XGBClassifier(**params).fit(X, y_cls)
    return rng, {"regressor": reg, "3-class classifier": cls}


def main() -> None:
    import xgboost

    import mlserve

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    budget = 0.2 if args.quick else 1.0
    rng, models = fitted_models(n_features=20, rounds=200, depth=6)
    cores = os.cpu_count() or 1
    default_threads = mlserve.get_num_threads()

    rows = []
    for label, estimator in models.items():
        model = mlserve.convert(estimator)
        booster = estimator.get_booster()
        for n_rows in (1, 1000):
            X = rng.normal(size=(n_rows, 20)).astype(np.float32)
            ours = np.asarray(model.explain(X))
            theirs = booster.predict(xgboost.DMatrix(X), pred_contribs=True)
            scale = max(1.0, float(np.abs(theirs).max()))
            assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
            assert np.allclose(ours, theirs, rtol=0, atol=1e-4 * scale), float(np.abs(ours - theirs).max())
            for threads in sorted({1, cores}):
                mlserve.set_num_threads(threads)
                booster.set_param({"nthread": threads})
                namespace = {"model": model, "booster": booster, "X": X, "DMatrix": xgboost.DMatrix}
                times = measure_interleaved(
                    {
                        "mlserve": "model.explain(X)",
                        "xgboost": "booster.predict(DMatrix(X), pred_contribs=True)",
                    },
                    namespace,
                    budget_s=budget,
                )
                ours_ns, theirs_ns = times["mlserve"].median_ns, times["xgboost"].median_ns
                rows.append([label, n_rows, threads, fmt_time(ours_ns), fmt_time(theirs_ns),
                             fmt_ratio(theirs_ns / ours_ns)])  # fmt: skip
    mlserve.set_num_threads(default_threads)

    print(markdown_table(["model", "rows", "threads", "mlserve explain", "xgboost pred_contribs",
                          "xgboost / mlserve"], rows))  # fmt: skip
    print()
    print("load average  " + load_average())
    print("\n".join(machine_lines(["numpy", "xgboost", "xgboost-cpu"])))


if __name__ == "__main__":
    main()
