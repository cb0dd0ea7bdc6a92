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
* every fit runs in a fresh child process (python bench_als.py --child ...)
  that loads the data from a temporary .npz, makes one untimed 1-iteration
  fit (code paged in, thread pools started), then the timed fit: so neither
  library's idle thread pools (libgomp's, OpenBLAS's spin-waiting workers)
  are charged to the other, as they are when both run in one process;
  OPENBLAS_NUM_THREADS=1 in the children;
* rounds alternate the contenders (A B, then B A, ...); each fit is timed
  by the CPU time of its process (time.process_time, all threads: what the
  target is about, and less sensitive than wall time to other sessions on a
  shared machine) and wall time; medians over rounds, ratio mlserve/implicit
  (< 1: mlserve faster);
* quality: precision@10 on the held-out interactions (train items excluded,
  denominator min(10, held-out count), as implicit.evaluation), computed with
  NumPy from each library's factors of the round's fit, and its ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
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


def timed(fn, *args):
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn(*args)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def run_child(name: str, threads: int, seed: int, data: str, out: str) -> None:
    """One fit in this (fresh) process; factors and times into `out`."""
    import numpy as np
    from scipy import sparse

    matrix = sparse.load_npz(data).tocsr()
    if name == "mlserve":

        def fit(s, iterations):
            params = {**PARAMS, "iterations": iterations}
            return mlserve.ALS(
                **params, random_state=s, num_threads=threads
            ).fit_factors(matrix)
    else:

        def fit(s, iterations):
            model = AlternatingLeastSquares(
                factors=PARAMS["factors"],
                regularization=PARAMS["regularization"],
                alpha=1.0,
                iterations=iterations,
                num_threads=threads,
                random_state=s,
            )
            model.fit(matrix, show_progress=False)
            return model.user_factors, model.item_factors

    with threadpool_limits(1, user_api="blas"):
        fit(seed, 1)  # untimed warm-up
        (users, items), cpu, wall = timed(fit, seed, PARAMS["iterations"])
    np.savez(out, users=users, items=items, times=np.array([cpu, wall]))


def fit_in_child(name: str, threads: int, seed: int, data: str, tmp: str):
    import numpy as np

    out = os.path.join(tmp, f"{name}-{threads}-{seed}.npz")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        name,
        str(threads),
        str(seed),
    ]
    subprocess.run([*cmd, data, out], check=True, env=env)
    with np.load(out) as result:
        return (result["users"], result["items"]), *result["times"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, threads, seed, data, out = args.child
        run_child(name, int(threads), int(seed), data, out)
        return
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
    tmp = tempfile.mkdtemp(prefix="bench-als-")
    from scipy import sparse

    data = {
        "mlserve": os.path.join(tmp, "train.npz"),
        "implicit": os.path.join(tmp, "conf.npz"),
    }
    sparse.save_npz(data["mlserve"], train)
    sparse.save_npz(data["implicit"], train_conf)
    with threadpool_limits(1, user_api="blas"):
        for line in blas_lines():
            print("    blas          " + line)
    for threads in args.threads:
        results = {"mlserve": [], "implicit": []}
        names = ["mlserve", "implicit"]
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                (users, items), cpu, wall = fit_in_child(
                    name, threads, 100 + r, data[name], tmp
                )
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
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)

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
