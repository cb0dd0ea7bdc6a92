"""Exact top-k recommendation: mlserve.Recommender vs NumPy and faiss, one run, same data.

    python benchmarks/bench_recommend.py            # full run, ~2 min
    python benchmarks/bench_recommend.py --quick    # smoke run, smaller catalogue
    python benchmarks/bench_recommend.py --json results.json

Data: U (n_users, 64) and V (100000, 64) float32, standard normal (seeded).
Cases: top-10 for a batch of 1000 users, and for 1 user (the HTTP case),
at 1 and 2 threads.

Contenders (each checked against an exact float64 reference first):

* mlserve: ``model.recommend(users, k=10)`` (blocked GEMM + bounded heap in C;
  ``mlserve.set_num_threads``);
* numpy: ``S = U[users] @ V.T``, ``np.argpartition(-S, k)``, then the k
  sorted (the same ordered output); threads via threadpoolctl;
* faiss: ``faiss.IndexFlatIP`` over V, ``index.search(U[users], 10)``
  (exact inner-product search); ``faiss.omp_set_num_threads``.

Times are medians of ``repeats`` samples, the contenders of one case sampled
in rotation (_common.measure_interleaved). Ratios: other/mlserve time, so
5x means mlserve is 5 times faster.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

import mlserve

K = 10
D = 64


def numpy_topk(U, V, users, k):
    S = U[users] @ V.T
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(S, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(
        top, order, axis=1
    )


def check(name, scores, ref_scores):
    """Scores equal to the float64 reference within float32 rounding."""
    if not np.allclose(scores, ref_scores, rtol=1e-4, atol=1e-4):
        raise SystemExit(f"{name} disagrees with the exact reference top-{K}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--users",
        default="1000,1",
        help="batch sizes to run, comma-separated (default 1000,1)",
    )
    args = parser.parse_args()
    n_items = 20_000 if args.quick else 100_000
    repeats = args.repeats or (5 if args.quick else 11)
    budget = 0.5 if args.quick else 2.0

    import threadpoolctl

    try:
        import faiss
    except ImportError:
        faiss = None

    rng = np.random.default_rng(0)
    U = rng.standard_normal((1000, D)).astype(np.float32)
    V = rng.standard_normal((n_items, D)).astype(np.float32)
    model = mlserve.Recommender(U, V)
    index = None
    if faiss is not None:
        index = faiss.IndexFlatIP(D)
        index.add(V)

    print("# bench_recommend.py: exact top-10, mlserve vs NumPy vs faiss")
    print()
    for line in C.machine_lines(["numpy", "faiss-cpu", "threadpoolctl"]):
        print(line)
    print(f"load average  {C.load_average()} (start)")
    print("blas:")
    for line in C.blas_lines():
        print("  " + line)

    results = []
    batches = [int(n) for n in args.users.split(",")]
    for n_users in batches:
        users = np.arange(n_users) if n_users > 1 else np.array([7])
        S = U[users].astype(np.float64) @ V.astype(np.float64).T
        ref = -np.sort(-S, axis=1)[:, :K]
        check("mlserve", model.recommend(users, k=K)[1], ref)
        check("numpy", numpy_topk(U, V, users, K)[1], ref)
        if index is not None:
            check("faiss", index.search(U[users], K)[0], ref)
        for threads in (1, 2):
            mlserve.set_num_threads(threads)
            if faiss is not None:
                faiss.omp_set_num_threads(threads)
            namespace = {"model": model, "users": users, "U": U, "V": V, "K": K, "np": np,
                         "numpy_topk": numpy_topk, "index": index}  # fmt: skip
            stmts = {
                "mlserve": "model.recommend(users, k=K)",
                "numpy": "numpy_topk(U, V, users, K)",
            }
            if index is not None:
                stmts["faiss"] = "index.search(U[users], K)"
            with threadpoolctl.threadpool_limits(threads):
                measured = C.measure_interleaved(stmts, namespace, budget_s=budget,
                                                 repeats=repeats)  # fmt: skip
            base = measured["mlserve"].median_ns
            row = {"users": n_users, "threads": threads,
                   **{name: m.median_ns for name, m in measured.items()}}  # fmt: skip
            row["spread"] = max(m.spread for m in measured.values())
            results.append(row)
            print(
                f"users={n_users} threads={threads}: "
                + ", ".join(
                    f"{n} {C.fmt_time(m.median_ns)}" for n, m in measured.items()
                )
                + f" (numpy/mlserve {measured['numpy'].median_ns / base:.2f}x"
                + (
                    f", faiss/mlserve {measured['faiss'].median_ns / base:.2f}x"
                    if index
                    else ""
                )
                + ")",
                flush=True,
            )
    mlserve.set_num_threads(1)

    # 1 thread, CPU time of the calling thread: on a loaded machine wall time
    # also counts the time the process waited for a core; thread_time does not
    cpu_rows = []
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    with threadpoolctl.threadpool_limits(1):
        for n_users in batches:
            users = np.arange(n_users) if n_users > 1 else np.array([7])
            calls = {"mlserve": lambda u=users: model.recommend(u, k=K),
                     "numpy": lambda u=users: numpy_topk(U, V, u, K)}  # fmt: skip
            if index is not None:
                calls["faiss"] = lambda u=users: index.search(U[u], K)
            samples = {name: [] for name in calls}
            rounds = 15 if n_users > 1 else 300
            for _ in range(rounds):
                for name, call in calls.items():
                    start = time.thread_time_ns()
                    call()
                    samples[name].append(time.thread_time_ns() - start)
            med = {name: float(np.median(v)) for name, v in samples.items()}
            cpu_rows.append({"users": n_users, **med})
            results.append(
                {"users": n_users, "threads": 1, "clock": "thread_time", **med}
            )

    C.print_section(f"top-{K} over {n_items} items x {D} factors, float32")
    headers = ["users", "threads", "mlserve", "numpy", "faiss", "numpy/mlserve",
               "faiss/mlserve", "max spread"]  # fmt: skip
    rows = []
    for r in results:
        if r.get("clock"):
            continue
        rows.append([
            r["users"], r["threads"], C.fmt_time(r["mlserve"]), C.fmt_time(r["numpy"]),
            C.fmt_time(r.get("faiss")), C.fmt_ratio(r["numpy"] / r["mlserve"]),
            C.fmt_ratio(r["faiss"] / r["mlserve"] if "faiss" in r else None),
            f"{r['spread']:.2f}",
        ])  # fmt: skip
    print(C.markdown_table(headers, rows))
    print()
    print("1 thread, median CPU time of the calling thread (time.thread_time_ns):")
    print()
    print(C.markdown_table(
        ["users", "mlserve", "numpy", "faiss", "numpy/mlserve", "faiss/mlserve"],
        [[r["users"], C.fmt_time(r["mlserve"]), C.fmt_time(r["numpy"]), C.fmt_time(r.get("faiss")),
          C.fmt_ratio(r["numpy"] / r["mlserve"]),
          C.fmt_ratio(r["faiss"] / r["mlserve"] if "faiss" in r else None)] for r in cpu_rows],
    ))  # fmt: skip
    print()
    print(f"load average  {C.load_average()} (end)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"n_items": n_items, "dim": D, "k": K, "results": results}, f, indent=2
            )


if __name__ == "__main__":
    main()
