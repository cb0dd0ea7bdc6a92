"""ALS fit: mlserve.ALS vs the `implicit` library's CPU solver, one run, same data.

    python benchmarks/bench_als.py             # 20k users x 10k items, ~1M interactions
    python benchmarks/bench_als.py --quick     # 4k x 2k, ~100k interactions (smoke run)
    python benchmarks/bench_als.py --rounds 5 --threads 1 2

What is measured:

* data: tests/als_support.make_interactions (a seeded low-rank popularity
  model: log-normal activity per user, items drawn by taste + Zipf-like
  popularity, geometric counts), split 80/20 per user into train/held-out;
* both fit the same objective: factors 64, regularization 0.01, alpha 1,
  15 iterations, 3 CG steps per solve, float32. mlserve's confidence is
  1 + alpha * r; implicit reads stored values as confidences, so it is given
  the matrix with values 1 + alpha * r (and alpha=1, which it leaves alone);
* at equal threads: mlserve ``num_threads=T``, implicit ``num_threads=T``
  (its OpenMP threads); OpenBLAS at 1 thread for both (threadpoolctl), as
  implicit asks (only the Gram matrix Y^T Y uses BLAS, in both);
* rounds alternate the contenders (A B, then B A, ...); each fit is timed
  by CPU time of the process (time.process_time: what the target is about,
  and less sensitive than wall time to other sessions on a shared machine)
  and wall time; medians over rounds, ratio mlserve/implicit (< 1: mlserve
  faster);
* quality: precision@10 on the held-out interactions (train items excluded,
  denominator min(10, held-out count), as implicit.evaluation), computed with
  NumPy from each library's factors of the round's fit, and its ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from _common import (
    blas_lines,
    load_average,
    machine_lines,
    markdown_table,
    print_section,
)
from als_support import (
    as_implicit_confidence,
    make_interactions,
    precision_at_k,
    split_held_out,
)
from implicit.cpu.als import (
    AlternatingLeastSquares,  # before threadpool_limits: it loads scipy's BLAS
)
from threadpoolctl import threadpool_limits

import mlserve
from mlserve import _core

PARAMS = {"factors": 64, "regularization": 0.01, "alpha": 1.0, "iterations": 15}


def fit_mlserve(train, threads: int, seed: int):
    model = mlserve.ALS(**PARAMS, random_state=seed, num_threads=threads)
    return model.fit_factors(train)


def fit_implicit(train_conf, threads: int, seed: int):
    model = AlternatingLeastSquares(
        factors=PARAMS["factors"],
        regularization=PARAMS["regularization"],
        alpha=1.0,
        iterations=PARAMS["iterations"],
        num_threads=threads,
        random_state=seed,
    )
    model.fit(train_conf, show_progress=False)
    return model.user_factors, model.item_factors


def timed(fn, *args):
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn(*args)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    n_users, n_items, nnz = (
        (4000, 2000, 100_000) if args.quick else (20_000, 10_000, 1_000_000)
    )

    print("# bench_als.py: ALS fit, mlserve vs implicit")
    print()
    for line in machine_lines(["numpy", "scipy", "implicit", "threadpoolctl"]):
        print("    " + line)
    print(f"    als kernel    {_core.als_info()}")
    print(f"    load average  {load_average()} (start)")
    start = time.perf_counter()
    matrix = make_interactions(n_users, n_items, nnz, seed=0)
    train, test = split_held_out(matrix, seed=1)
    train_conf = as_implicit_confidence(train, PARAMS["alpha"])
    print(
        f"    data          {n_users} users x {n_items} items, {matrix.nnz} interactions "
        f"({train.nnz} train, {test.nnz} held out), generated in "
        f"{time.perf_counter() - start:.1f} s"
    )
    print(f"    params        {PARAMS}, 3 CG steps")

    rows = []
    with threadpool_limits(1, user_api="blas"):
        for line in blas_lines():
            print("    blas          " + line)
        for threads in args.threads:
            results = {"mlserve": [], "implicit": []}
            contenders = [
                ("mlserve", lambda s, t=threads: fit_mlserve(train, t, s)),
                ("implicit", lambda s, t=threads: fit_implicit(train_conf, t, s)),
            ]
            for name, fn in contenders:  # warm-up: imports, first-touch allocations
                fn(0)
            for r in range(args.rounds):
                order = contenders if r % 2 == 0 else contenders[::-1]
                for name, fn in order:
                    (users, items), cpu, wall = timed(fn, 100 + r)
                    p10 = precision_at_k(users, items, train, test)
                    results[name].append((cpu, wall, p10))
            med = {
                name: [statistics.median(x[i] for x in vals) for i in range(3)]
                for name, vals in results.items()
            }
            m, i = med["mlserve"], med["implicit"]
            rows.append(
                [
                    threads,
                    f"{m[0]:.2f} s",
                    f"{i[0]:.2f} s",
                    f"{m[0] / i[0]:.2f}x",
                    f"{m[1]:.2f} s",
                    f"{i[1]:.2f} s",
                    f"{m[1] / i[1]:.2f}x",
                    f"{m[2]:.4f}",
                    f"{i[2]:.4f}",
                    f"{m[2] / i[2]:.3f}x",
                ]
            )
            per_round = ", ".join(
                f"{a[0] / b[0]:.2f}"
                for a, b in zip(results["mlserve"], results["implicit"])
            )
            print(
                f"    threads={threads}: CPU-time ratio per round mlserve/implicit: {per_round}"
            )
            sys.stdout.flush()

    print_section(
        f"ALS fit, {n_users} x {n_items}, {train.nnz} train interactions, {args.rounds} rounds"
    )
    print(
        markdown_table(
            [
                "threads",
                "mlserve CPU",
                "implicit CPU",
                "CPU mlserve/implicit",
                "mlserve wall",
                "implicit wall",
                "wall mlserve/implicit",
                "mlserve p@10",
                "implicit p@10",
                "p@10 mlserve/implicit",
            ],
            rows,
        )
    )
    print()
    print(f"load average {load_average()} (end)")


if __name__ == "__main__":
    main()
