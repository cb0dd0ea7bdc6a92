"""Linear models: mlserve vs scikit-learn vs onnxruntime vs NumPy, one run, same data.

    python benchmarks/bench_linear.py            # full run, a few minutes
    python benchmarks/bench_linear.py --quick    # smoke run, ~30 s
    python benchmarks/bench_linear.py --json results.json
    python benchmarks/bench_linear.py --small-batch   # only the micro-batch section, ~2 min

What is measured (20 features, float64 everywhere unless noted):

* LinearRegression.predict, LogisticRegression.predict_proba (binary) and
  LogisticRegression.predict_proba (5 classes, multinomial);
* contenders: ``mlserve.convert(sklearn_model)``, the same model after
  ``mlserve.save`` + ``mlserve.load`` (should be identical), scikit-learn,
  onnxruntime on the skl2onnx graph built with DoubleTensorType (float64:
  MatMul/Add/Sigmoid|Softmax; the float32 graph uses the ai.onnx.ml
  LinearRegressor/LinearClassifier ops and is shown for information in the
  single-row table), and plain NumPy ``X @ coef.T + b`` (+ expit/softmax);
* single-row latency with a NumPy row (mlserve takes the 1-D row, the others
  a (1, 20) array) and with a Python list (mlserve takes the list, sklearn
  ``[row]``, onnxruntime and NumPy ``np.asarray([row])`` inside the timed
  statement: that conversion is part of their cost);
* batch throughput at 1, 32, 1024 and 100000 rows (rows/s);
* 1 thread for everyone (``mlserve.set_num_threads``, threadpoolctl for
  NumPy/scikit-learn, ``intra_op_num_threads`` for onnxruntime), and the
  100000-row batches again at 2 threads;
* load time of a ~500 MB model file (``mlserve.load`` with and without
  checksum verification) against ``numpy.load`` (copy and mmap), joblib and
  pickle, each also with the first prediction after loading.

* ``--small-batch`` (a separate section, run alone): micro-batches of 1-64
  rows on a multi-output Ridge (2048 features x 1024 outputs, float64 and
  float32, 16 / 8 MB of weights), mlserve with its small-batch kernel
  (csrc/mls_gemm_small.c) against mlserve with the kernel switched off
  (``MLSERVE_GEMM_SMALL=off``: GEMV for 1 row, GEMM above, as before) and
  NumPy ``X @ W.T``, 1 BLAS thread. The two mlserve builds run in
  alternating subprocesses (the variable is read once per process); NumPy
  is timed in rotation with mlserve inside each of them, so the in-process
  ratios mlserve/numpy are the steadier numbers on a shared machine.

Every timed statement is checked once against scikit-learn's output before it
is timed. Times are medians of ``repeats`` samples; the contenders of one case
are sampled in rotation (see _common.measure_interleaved), so a busy spell on
a shared machine slows all of them alike.
Ratios are ratios of time per call: sklearn/mlserve = 60x means mlserve is 60
times faster; mlserve/numpy = 1.10x means mlserve takes 10% longer than NumPy.
"""
from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import pickle
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import mlserve  # noqa: E402

N_FEATURES = 20
BATCH_SIZES = (1, 32, 1024, 100_000)
BIG_BATCH = 100_000

# Targets from issue 2 ("Benchmarks").
TARGET_VS_SKLEARN = 50.0  # single row: >= 50x faster than scikit-learn
TARGET_VS_ORT = 5.0  # single row: >= 5x faster than onnxruntime
TARGET_VS_NUMPY = 1.3  # 100000 rows: mlserve time <= 1.3 x numpy time
TARGET_LOAD_MS = 50.0  # load of a 500 MB model

CONTENDERS = ("mlserve", "mlserve_load", "sklearn", "ort", "numpy")
LABELS = {
    "mlserve": "mlserve",
    "mlserve_load": "mlserve (.mls)",
    "sklearn": "sklearn",
    "ort": "onnxruntime",
    "numpy": "numpy",
    "ort_f32": "ort f32 (info)",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (~30 s): short timings, 50 MB load model")
    p.add_argument("--budget", type=float, default=None, help="seconds per measurement (default 0.4, quick 0.03)")
    p.add_argument("--repeats", type=int, default=None, help="samples per measurement (default 15, quick 5)")
    p.add_argument("--load-mb", type=float, default=None, help="size of the load-test model in MB (default 500, quick 50)")
    p.add_argument("--load-repeats", type=int, default=None, help="timed loads per method (default 9, quick 3)")
    p.add_argument("--skip-load", action="store_true", help="skip the load-time section")
    p.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    p.add_argument("--small-batch", action="store_true",
                   help="run only the micro-batch section (small-batch kernel vs GEMM/GEMV vs NumPy)")
    p.add_argument("--small-rows", default="1,2,4,8,16,32,64", help="batch sizes of --small-batch")
    p.add_argument("--small-rounds", type=int, default=3,
                   help="alternating subprocess rounds per mlserve build in --small-batch (default 3)")
    p.add_argument("--small-batch-child", choices=["new", "off"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.budget = args.budget or (0.03 if args.quick else 0.4)
    args.repeats = args.repeats or (5 if args.quick else 15)
    args.load_mb = args.load_mb or (50.0 if args.quick else 500.0)
    args.load_repeats = args.load_repeats or (3 if args.quick else 9)
    return args


# ------------------------------------------------------------------ models


def make_models(rng):
    """scikit-learn models fitted on one training set; returns dict name -> spec."""
    from sklearn.linear_model import LinearRegression, LogisticRegression

    X = rng.standard_normal((5000, N_FEATURES))
    beta = rng.standard_normal(N_FEATURES)
    y = X @ beta + 0.5 * rng.standard_normal(X.shape[0])
    lin = LinearRegression().fit(X, y)
    binary = LogisticRegression(max_iter=1000).fit(X, (y > 0).astype(np.int64))
    y5 = np.digitize(y, np.quantile(y, [0.2, 0.4, 0.6, 0.8])).astype(np.int64)
    multi = LogisticRegression(max_iter=1000).fit(X, y5)
    return {
        "LinearRegression.predict": dict(sk=lin, method="predict", numpy="linear"),
        "LogisticRegression.predict_proba (2 classes)": dict(
            sk=binary, method="predict_proba", numpy="binary"
        ),
        "LogisticRegression.predict_proba (5 classes)": dict(
            sk=multi, method="predict_proba", numpy="softmax"
        ),
    }


def onnx_graph(sk, dtype):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor = DoubleTensorType if dtype == np.float64 else FloatTensorType
    options = {id(sk): {"zipmap": False}} if hasattr(sk, "classes_") else None
    onx = convert_sklearn(
        sk,
        initial_types=[("X", tensor([None, N_FEATURES]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    ops = [node.op_type for node in onx.graph.node]
    return onx.SerializeToString(), ops


def ort_session(graph: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])


def numpy_function(kind, sk):
    """Plain NumPy reference for X (2-D): returns a callable and its inline statement."""
    if kind == "linear":
        return None, "X @ w + b"
    if kind == "binary":
        w1 = np.ascontiguousarray(sk.coef_[0])
        b1 = float(sk.intercept_[0])

        def proba_binary(X):
            z = X @ w1
            z += b1
            p = np.empty((z.shape[0], 2))
            np.negative(z, out=z)
            np.exp(z, out=z)
            z += 1.0
            np.divide(1.0, z, out=p[:, 1])
            np.subtract(1.0, p[:, 1], out=p[:, 0])
            return p

        return proba_binary, "npf(X)"
    W = np.ascontiguousarray(sk.coef_.T)
    b = sk.intercept_.copy()

    def proba_softmax(X):
        z = X @ W
        z += b
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    return proba_softmax, "npf(X)"


def statements(numpy_stmt: str) -> dict:
    """contender -> {input kind -> timed statement}; X/row2/lst live in the namespace."""
    np_list = numpy_stmt.replace("X", "asarray([lst])")
    np_row = numpy_stmt.replace("X", "row2")
    return {
        "mlserve": {"row": "f_mls(row)", "list": "f_mls(lst)", "batch": "f_mls(X)"},
        "mlserve_load": {"row": "f_load(row)", "list": "f_load(lst)", "batch": "f_load(X)"},
        "sklearn": {"row": "f_sk(row2)", "list": "f_sk([lst])", "batch": "f_sk(X)"},
        "ort": {
            "row": "run(outs, {'X': row2})",
            "list": "run(outs, {'X': asarray([lst], dtype=float64)})",
            "batch": "run(outs, {'X': X})",
        },
        "numpy": {"row": np_row, "list": np_list, "batch": numpy_stmt},
        "ort_f32": {
            "row": "run32(outs, {'X': row2.astype(float32)})",
            "list": "run32(outs, {'X': asarray([lst], dtype=float32)})",
        },
    }


def check_output(name, contender, got, ref):
    if isinstance(got, list):  # onnxruntime returns a list of outputs
        got = got[0]
    got = np.asarray(got, dtype=np.float64).reshape(ref.shape)
    rtol, atol = (1e-5, 1e-6) if contender == "ort_f32" else (1e-9, 1e-12)
    if not np.allclose(got, ref, rtol=rtol, atol=atol):
        raise AssertionError(
            f"{name} / {contender}: output differs from scikit-learn "
            f"(max abs diff {np.max(np.abs(got - ref)):.3g})"
        )
    return float(np.max(np.abs(got - ref)))


# ------------------------------------------------------------- prediction


def bench_predict(models, Xb, tmpdir, args, results):
    from threadpoolctl import threadpool_info, threadpool_limits

    row = np.ascontiguousarray(Xb[0])
    row2 = row[None, :]
    lst = row.tolist()
    ratio_rows_latency = []
    ratio_rows_batch = []

    for name, spec in models.items():
        sk = spec["sk"]
        method = spec["method"]
        mls = mlserve.convert(sk)
        path = os.path.join(tmpdir, "model.mls")
        mlserve.save(mls, path)
        loaded = mlserve.load(path)
        graph64, ops64 = onnx_graph(sk, np.float64)
        graph32, ops32 = onnx_graph(sk, np.float32)
        npf, np_stmt = numpy_function(spec["numpy"], sk)
        outs = ["variable"] if method == "predict" else ["probabilities"]
        spec["onnx_ops"] = {"float64": ops64, "float32": ops32}
        stmts = statements(np_stmt)
        namespace = {
            "f_mls": getattr(mls, method),
            "f_load": getattr(loaded, method),
            "f_sk": getattr(sk, method),
            "outs": outs,
            "npf": npf,
            "w": sk.coef_.T if sk.coef_.ndim == 2 and method == "predict" else sk.coef_,
            "b": sk.intercept_,
            "row": row,
            "row2": row2,
            "lst": lst,
            "asarray": np.asarray,
            "float64": np.float64,
            "float32": np.float32,
        }
        entry = results["predict"].setdefault(name, {"onnx_ops": spec["onnx_ops"], "cases": {}})

        for threads in (1, 2):
            with threadpool_limits(limits=threads):
                mlserve.set_num_threads(threads)
                namespace["run"] = ort_session(graph64, threads).run
                namespace["run32"] = ort_session(graph32, threads).run
                entry.setdefault("threadpool_info", {})[threads] = threadpool_info()
                assert mlserve.get_num_threads() == threads
                cases = []
                if threads == 1:
                    cases += [("1 row, NumPy row", "row", row2), ("1 row, list", "list", row2)]
                    cases += [(f"{n} rows", "batch", Xb[:n]) for n in BATCH_SIZES]
                else:
                    cases += [(f"{BIG_BATCH} rows", "batch", Xb[:BIG_BATCH])]
                    results.setdefault("loadavg_before_2_threads", []).append(os.getloadavg()[0])
                for case, kind, Xref in cases:
                    namespace["X"] = Xref
                    ref = getattr(sk, method)(Xref)
                    label = f"{case}, {threads} thread{'s' if threads > 1 else ''}"
                    todo, diffs = {}, {}
                    for contender, by_kind in stmts.items():
                        stmt = by_kind.get(kind)
                        if stmt is None:
                            continue
                        got = eval(stmt, namespace)  # noqa: S307 - our own statements
                        diffs[contender] = check_output(name, contender, got, ref)
                        todo[contender] = stmt
                    timings = C.measure_interleaved(
                        todo, namespace, budget_s=args.budget, repeats=args.repeats
                    )
                    for contender, m in timings.items():
                        entry["cases"].setdefault(label, {})[contender] = dict(
                            m.as_dict(), stmt=todo[contender], max_abs_diff=diffs[contender]
                        )
                    row_out = table_row(name, label, Xref.shape[0], kind, timings)
                    (ratio_rows_latency if kind != "batch" else ratio_rows_batch).append(row_out)
                    print(f"  measured {name} | {label}", file=sys.stderr, flush=True)
        mlserve.set_num_threads(1)
    return ratio_rows_latency, ratio_rows_batch


def table_row(model, label, n_rows, kind, t):
    def ratio(a, b):
        return t[a].median_ns / t[b].median_ns if a in t and b in t else None

    return dict(
        model=model,
        case=label,
        kind=kind,
        n_rows=n_rows,
        ns={k: v.median_ns for k, v in t.items()},
        sk_over_mls=ratio("sklearn", "mlserve"),
        ort_over_mls=ratio("ort", "mlserve"),
        mls_over_np=ratio("mlserve", "numpy"),
        load_over_mls=ratio("mlserve_load", "mlserve"),
    )


def print_predict_tables(lat_rows, batch_rows):
    short = {
        "LinearRegression.predict": "LinReg",
        "LogisticRegression.predict_proba (2 classes)": "LogReg proba 2cl",
        "LogisticRegression.predict_proba (5 classes)": "LogReg proba 5cl",
    }
    ratio_headers = ["sklearn/mlserve", "ort/mlserve", "mlserve/numpy"]

    C.print_section("Single-row latency (median time per call; lower is better)")
    headers = ["case"] + [LABELS[c] for c in CONTENDERS] + ratio_headers + [LABELS["ort_f32"]]
    rows = []
    for r in lat_rows:
        rows.append(
            [f"{short[r['model']]}, {r['case']}"]
            + [C.fmt_time(r["ns"].get(c)) for c in CONTENDERS]
            + [C.fmt_ratio(r["sk_over_mls"]), C.fmt_ratio(r["ort_over_mls"]), C.fmt_ratio(r["mls_over_np"])]
            + [C.fmt_time(r["ns"].get("ort_f32"))]
        )
    print(C.markdown_table(headers, rows))

    C.print_section("Batch throughput (rows/s from the median time per call; higher is better)")
    headers = ["case"] + [LABELS[c] for c in CONTENDERS] + ratio_headers
    rows = []
    for r in batch_rows:
        rows.append(
            [f"{short[r['model']]}, {r['case']}"]
            + [C.fmt_rate(r["n_rows"] * 1e9 / r["ns"][c], "") for c in CONTENDERS]
            + [C.fmt_ratio(r["sk_over_mls"]), C.fmt_ratio(r["ort_over_mls"]), C.fmt_ratio(r["mls_over_np"])]
        )
    print(C.markdown_table(headers, rows))
    print()
    print("Ratios are of time per call: sklearn/mlserve and ort/mlserve > 1 mean mlserve is")
    print("faster; mlserve/numpy > 1 means mlserve takes longer than plain NumPy.")


# ------------------------------------------------------------------- load


def bench_load(tmpdir, args, results):
    from sklearn.linear_model import LinearRegression

    n_features = 1000
    n_outputs = max(1, int(args.load_mb * 1e6) // (8 * n_features))
    rng = np.random.default_rng(1)
    sk = LinearRegression()
    sk.coef_ = rng.standard_normal((n_outputs, n_features))
    sk.intercept_ = rng.standard_normal(n_outputs)
    sk.n_features_in_ = n_features
    row = rng.standard_normal(n_features)
    ref = sk.predict(row[None, :])[0]
    coef_bytes = sk.coef_.nbytes + sk.intercept_.nbytes

    paths = {k: os.path.join(tmpdir, f"big.{k}") for k in ("mls", "coef.npy", "intercept.npy", "joblib", "pkl")}
    t0 = time.perf_counter()
    mlserve.save(mlserve.convert(sk), paths["mls"])
    t_save = time.perf_counter() - t0
    np.save(paths["coef.npy"], sk.coef_)
    np.save(paths["intercept.npy"], sk.intercept_)
    try:
        import joblib

        joblib.dump(sk, paths["joblib"])
    except ImportError:
        joblib = None
    with open(paths["pkl"], "wb") as f:
        pickle.dump(sk, f, protocol=5)
    file_size = os.path.getsize(paths["mls"])
    gc.collect()

    def check(pred):
        pred = np.asarray(pred).reshape(ref.shape)
        if not np.allclose(pred, ref, rtol=1e-9, atol=1e-9):
            raise AssertionError("prediction after load differs from scikit-learn")

    def np_load(mode):
        return np.load(paths["coef.npy"], mmap_mode=mode), np.load(paths["intercept.npy"], mmap_mode=mode)

    def pickle_load():
        with open(paths["pkl"], "rb") as f:
            return pickle.load(f)

    methods = {
        "mlserve.load(path)  [verify=True]": (
            lambda: mlserve.load(paths["mls"]),
            lambda m: m.predict(row),
        ),
        "mlserve.load(path, verify=False)": (
            lambda: mlserve.load(paths["mls"], verify=False),
            lambda m: m.predict(row),
        ),
        "mlserve._core.load(path) [C only, verify=True]": (
            lambda: mlserve._core.load(paths["mls"]),
            lambda m: m.predict(row),
        ),
        "mlserve._core.load(path, verify=False) [C only]": (
            lambda: mlserve._core.load(paths["mls"], verify=False),
            lambda m: m.predict(row),
        ),
        "numpy.load .npy, mmap_mode=None": (lambda: np_load(None), lambda a: row @ a[0].T + a[1]),
        "numpy.load .npy, mmap_mode='r'": (lambda: np_load("r"), lambda a: row @ a[0].T + a[1]),
        "pickle.load (protocol 5)": (pickle_load, lambda e: e.predict(row[None, :])),
    }
    if joblib is not None:
        methods["joblib.load"] = (lambda: joblib.load(paths["joblib"]), lambda e: e.predict(row[None, :]))

    out = results.setdefault("load", {})
    out.update(
        file_bytes=file_size,
        array_bytes=coef_bytes,
        coef_shape=[n_outputs, n_features],
        save_s=t_save,
        methods={},
    )
    rows = []
    for label, (load, predict) in methods.items():
        # load + first predict, checked; the first round also warms the page cache
        def load_and_predict():
            obj = load()
            return obj, predict(obj)

        both = C.measure_each(load_and_predict, args.load_repeats, after=lambda r: check(r[1]))
        alone = C.measure_each(load, args.load_repeats)
        out["methods"][label] = {"load": alone.as_dict(), "load_and_first_predict": both.as_dict()}
        rows.append(
            [label, f"{alone.median_ns / 1e6:.2f}", f"{alone.min_ns / 1e6:.2f}", f"{both.median_ns / 1e6:.2f}"]
        )
        print(f"  measured load | {label}", file=sys.stderr, flush=True)

    # Where the time of a verified load goes: page-table population, checksum.
    breakdown = []
    with open(paths["mls"], "rb") as f:
        fd = f.fileno()
        populate = getattr(mmap, "MAP_POPULATE", 0)

        def map_file(flags):
            def run():
                mm = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE | flags, prot=mmap.PROT_READ)
                return mm

            return run

        m_pop = C.measure_each(map_file(populate), args.load_repeats, after=lambda mm: mm.close())
        breakdown.append(["mmap(MAP_PRIVATE|MAP_POPULATE) of the file (Python mmap)", m_pop, file_size])
        m_lazy = C.measure_each(map_file(0), args.load_repeats, after=lambda mm: mm.close())
        breakdown.append(["mmap(MAP_PRIVATE), no populate", m_lazy, file_size])
        mm = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE | populate, prot=mmap.PROT_READ)
        view = memoryview(mm)
        m_ck_map = C.measure_each(lambda: mlserve._core.checksum64(view), args.load_repeats)
        breakdown.append(["checksum64 over the mapped file (pages populated)", m_ck_map, file_size])
        view.release()
        mm.close()
    data = sk.coef_.tobytes()
    m_ck = C.measure_each(lambda: mlserve._core.checksum64(data), args.load_repeats)
    breakdown.append(["checksum64 over an in-memory bytes object", m_ck, len(data)])
    words = np.frombuffer(data, dtype=np.uint64)
    m_sum = C.measure_each(lambda: np.bitwise_xor.reduce(words), args.load_repeats)
    breakdown.append(["reference: numpy xor-reduce over the same bytes (read bandwidth)", m_sum, len(data)])
    m_fin = C.measure_each(lambda: bool(np.isfinite(sk.coef_).all()), args.load_repeats)
    breakdown.append(["reference: numpy isfinite(coef).all()", m_fin, sk.coef_.nbytes])
    del data, words
    out["breakdown"] = {
        label: dict(m.as_dict(), bytes=n, gb_per_s=n / m.median_ns) for label, m, n in breakdown
    }

    C.print_section(
        f"Load time of a {C.fmt_bytes(file_size)} model (LinearRegression, coef {n_outputs} x "
        f"{n_features} float64; page cache warm; {args.load_repeats} timed loads each)"
    )
    print(C.markdown_table(["method", "median ms", "min ms", "load + first predict, median ms"], rows))
    print()
    print(C.markdown_table(
        ["breakdown", "median ms", "GB/s"],
        [[label, f"{m.median_ns / 1e6:.2f}", f"{n / m.median_ns:.2f}"] for label, m, n in breakdown],
    ))
    print()
    print(f"mlserve.save of the same model: {t_save:.2f} s (includes fsync)")
    return out


# ------------------------------------------------------------ small batch

SMALL_FEATURES = 2048
SMALL_OUTPUTS = 1024


def small_batch_child(args):
    """One process: mlserve (whichever MLSERVE_GEMM_SMALL says) and NumPy,
    timed in rotation at each batch size; prints JSON on stdout."""
    from sklearn.linear_model import Ridge
    from threadpoolctl import threadpool_info, threadpool_limits

    rows = [int(r) for r in args.small_rows.split(",")]
    rng = np.random.default_rng(0)
    sk = Ridge()
    sk.coef_ = rng.standard_normal((SMALL_OUTPUTS, SMALL_FEATURES))
    sk.intercept_ = rng.standard_normal(SMALL_OUTPUTS)
    sk.n_features_in_ = SMALL_FEATURES
    Xall = rng.standard_normal((max(rows), SMALL_FEATURES))
    out = {"blas_info": mlserve._core.blas_info(), "mlserve": mlserve._core.__file__, "cases": {}}
    with threadpool_limits(limits=1):
        mlserve.set_num_threads(1)
        out["threadpool_info"] = threadpool_info()
        for dtype in (np.float64, np.float32):
            model = mlserve.convert(sk, dtype=dtype)
            W = sk.coef_.astype(dtype)
            for n in rows:
                X = np.ascontiguousarray(Xall[:n].astype(dtype))
                ns = {"f_mls": model.predict, "X": X, "W": W}
                got = model.predict(X)
                ref = X.astype(np.float64) @ sk.coef_.T + sk.intercept_
                tol = 1e-9 if dtype == np.float64 else 2e-3
                if not np.allclose(got, ref, rtol=tol, atol=tol * 10):
                    raise AssertionError(f"mlserve differs from NumPy at {n} rows, {np.dtype(dtype).name}")
                t = C.measure_interleaved(
                    {"mlserve": "f_mls(X)", "numpy": "X @ W.T"}, ns,
                    budget_s=args.budget, repeats=args.repeats,
                )
                out["cases"][f"{np.dtype(dtype).name} {n}"] = {k: v.median_ns for k, v in t.items()}
    json.dump(out, sys.stdout)


def small_batch_path(n, max_rows):
    if n == 1:
        return "GEMV"
    return "kernel" if n <= max_rows else "GEMM"


def bench_small_batch(args):
    import statistics
    import subprocess

    C.print_section(
        f"Micro-batches: Ridge {SMALL_FEATURES} features x {SMALL_OUTPUTS} outputs, 1 BLAS thread "
        "(median time per call; ratios of time, < 1 means the first is faster)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(mlserve.__file__)))
    runs = {"new": [], "off": []}
    for _ in range(args.small_rounds):
        for build in ("new", "off"):
            env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
            env.pop("MLSERVE_GEMM_SMALL", None)
            if build == "off":
                env["MLSERVE_GEMM_SMALL"] = "off"
            cmd = [sys.executable, os.path.abspath(__file__), "--small-batch-child", build,
                   "--small-rows", args.small_rows, "--budget", str(args.budget),
                   "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs[build].append(json.loads(proc.stdout))
            print(f"  measured small batch, mlserve {build}", file=sys.stderr, flush=True)
    new0, off0 = runs["new"][0], runs["off"][0]
    print("```")
    for build, r in (("new", new0), ("off", off0)):
        bi = r["blas_info"]
        print(f"mlserve {build:3}: {r['mlserve']} gemm_small={bi['gemm_small']} "
              f"max_rows={bi['gemm_small_max_rows']} blas kernel={bi['corename']}")
    print("threadpoolctl (inside the 1-thread limit, same in both subprocesses):")
    for lib in new0["threadpool_info"]:
        print(f"  {lib.get('internal_api')} {lib.get('version')} [{lib.get('architecture')}, "
              f"num_threads={lib.get('num_threads')}] {lib.get('filepath')}")
    print(f"rounds: {args.small_rounds} per build, alternating; medians over rounds of per-process "
          f"medians ({args.repeats} samples, ~{args.budget:.2f} s per case)")
    print(f"load average {C.load_average()}")
    print("```")

    def med(build, case, who):
        return statistics.median(r["cases"][case][who] for r in runs[build])

    def med_ratio(build, case):  # in-process mlserve/numpy, median over rounds
        return statistics.median(r["cases"][case]["mlserve"] / r["cases"][case]["numpy"] for r in runs[build])

    rows_out = []
    for dtype in ("float64", "float32"):
        max_rows = new0["blas_info"]["gemm_small_max_rows"][dtype]
        for n in (int(r) for r in args.small_rows.split(",")):
            case = f"{dtype} {n}"
            t_new, t_off = med("new", case, "mlserve"), med("off", case, "mlserve")
            t_np = statistics.median([med("new", case, "numpy"), med("off", case, "numpy")])
            rows_out.append([
                dtype, n, f"{small_batch_path(n, max_rows)} / {small_batch_path(n, 0)}",
                C.fmt_time(t_new), C.fmt_time(t_off), C.fmt_time(t_np),
                C.fmt_ratio(t_new / t_off), C.fmt_ratio(med_ratio("new", case)),
                C.fmt_ratio(med_ratio("off", case)),
            ])
    print(C.markdown_table(
        ["dtype", "rows", "path new / old", "mlserve new", "mlserve old (off)", "numpy",
         "new/old", "new/numpy", "old/numpy"],
        rows_out,
    ))
    print()
    print("new/old compares medians from different processes; new/numpy and old/numpy are")
    print("measured in rotation inside one process each (medians over rounds).")
    return runs


# ---------------------------------------------------------------- targets


def print_targets(lat_rows, batch_rows, load, busy_2_threads=None):
    C.print_section("Targets (issue 2)")
    rows = []
    for r in lat_rows:
        case = f"{r['model']}, {r['case']}"
        rows.append([
            f"single row >= {TARGET_VS_SKLEARN:.0f}x faster than scikit-learn: {case}",
            C.fmt_ratio(r["sk_over_mls"]),
            "met" if r["sk_over_mls"] >= TARGET_VS_SKLEARN else "MISSED",
        ])
    for r in lat_rows:
        case = f"{r['model']}, {r['case']}"
        rows.append([
            f"single row >= {TARGET_VS_ORT:.0f}x faster than onnxruntime: {case}",
            C.fmt_ratio(r["ort_over_mls"]),
            "met" if r["ort_over_mls"] >= TARGET_VS_ORT else "MISSED",
        ])
    for r in batch_rows:
        if r["n_rows"] != BIG_BATCH:
            continue
        case = f"{r['model']}, {r['case']}"
        status = "met" if r["mls_over_np"] <= TARGET_VS_NUMPY else "MISSED"
        if busy_2_threads and "2 threads" in r["case"]:
            status += f" (unreliable: load average {busy_2_threads:.1f} on {os.cpu_count()} cpus)"
        rows.append([
            f"{BIG_BATCH} rows within {TARGET_VS_NUMPY}x of numpy: {case}",
            C.fmt_ratio(r["mls_over_np"]),
            status,
        ])
    if load:
        # The target is for 500 MB; a smaller (--quick) model gets a proportional one.
        scale = load["file_bytes"] / 500e6
        target = TARGET_LOAD_MS * (1.0 if 0.9 < scale < 1.1 else scale)
        scaled = "" if 0.9 < scale < 1.1 else f" (50 ms scaled to {C.fmt_bytes(load['file_bytes'])})"
        for label, m in load["methods"].items():
            if label.startswith("mlserve.load"):
                ms = m["load"]["median_ns"] / 1e6
                rows.append([
                    f"load of a {C.fmt_bytes(load['file_bytes'])} model under {target:.3g} ms{scaled}: {label}",
                    f"{ms:.1f} ms",
                    "met" if ms < target else "MISSED",
                ])
    print(C.markdown_table(["target", "measured", "status"], rows))


# ------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if args.small_batch_child:
        small_batch_child(args)
        return
    if args.small_batch:
        print("# bench_linear.py --small-batch")
        C.print_section("Machine")
        print("```")
        print("\n".join(C.machine_lines(["mlserve", "numpy", "scikit-learn", "threadpoolctl"])))
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        print(f"mlserve       git {C.git_description(repo)}; extension {mlserve._core.__file__}")
        print("```")
        runs = bench_small_batch(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "small_batch": runs}, f, indent=1, default=str)
        return
    import onnxruntime
    import threadpoolctl  # noqa: F401 - fail early with a clear ImportError

    t_start = time.perf_counter()
    print(f"# bench_linear.py {'--quick' if args.quick else '(full run)'}")
    C.print_section("Machine")
    print("```")
    print("\n".join(C.machine_lines(
        ["mlserve", "numpy", "scikit-learn", "onnxruntime", "skl2onnx", "onnx", "threadpoolctl", "joblib"]
    )))
    info = mlserve._core.blas_info()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"mlserve       git {C.git_description(repo)}; extension {mlserve._core.__file__} "
          f"(sha256 {C.file_digest(mlserve._core.__file__)})")
    print(f"mlserve blas  {info['config'].strip()} kernel={info['corename']} "
          f"({info['source']}, {mlserve.blas_library_path()})")
    print(f"onnxruntime   providers {onnxruntime.get_available_providers()} (MLAS kernels, no BLAS)")
    print(f"timing        median of {args.repeats} samples, ~{args.budget:.2f} s per measurement, "
          "timeit loop, perf_counter_ns, GC off; contenders of a case sampled in rotation")
    print(f"load average  {C.load_average()} at start")
    print("```")

    rng = np.random.default_rng(0)
    models = make_models(rng)
    Xb = rng.standard_normal((BIG_BATCH, N_FEATURES))  # the data every contender sees

    results = {"args": vars(args), "machine": C.machine_lines([]), "predict": {}}
    with tempfile.TemporaryDirectory(prefix="mlserve-bench-") as tmpdir:
        lat_rows, batch_rows = bench_predict(models, Xb, tmpdir, args, results)

        C.print_section("BLAS libraries in this process (threadpoolctl, inside the 1-thread limit)")
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            mlserve.set_num_threads(1)
            print("```")
            print("\n".join(C.blas_lines()))
            print("```")
        print("scikit-learn's linear predict runs NumPy's matmul, so it uses NumPy's OpenBLAS;")
        print("mlserve calls its own OpenBLAS copy (mlserve/libscipy_openblas.so) only for blocks")
        print(f"above {8192} multiply-adds and plain C loops below that.")
        two = next(iter(results["predict"].values()))["threadpool_info"].get(2, [])
        print("2-thread section, threadpoolctl: " + "; ".join(
            f"{os.path.basename(lib['filepath'])} num_threads={lib['num_threads']}" for lib in two
        ) + "; mlserve.get_num_threads()=2; onnxruntime intra_op_num_threads=2")
        for name, spec in models.items():
            print(f"onnx graph for {name}: float64 {spec['onnx_ops']['float64']}; "
                  f"float32 {spec['onnx_ops']['float32']}")

        print_predict_tables(lat_rows, batch_rows)
        load = None
        if not args.skip_load:
            load = bench_load(tmpdir, args, results)

    results["latency"] = lat_rows
    results["batch"] = batch_rows
    loads = results.get("loadavg_before_2_threads", [])
    busy = max(loads) if loads and max(loads) > (os.cpu_count() or 1) else None
    print_targets(lat_rows, batch_rows, load, busy)
    if busy:
        print()
        print("Other processes kept the cpus busy during the 2-thread measurements, so a")
        print("2-thread BLAS call waits for a descheduled helper thread: those rows measure")
        print("the machine's contention more than the libraries.")
    print()
    print(f"total benchmark time {time.perf_counter() - t_start:.0f} s; "
          f"load average at the end {C.load_average()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
