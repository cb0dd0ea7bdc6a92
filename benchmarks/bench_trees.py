"""Tree ensembles: mlserve vs scikit-learn, XGBoost, LightGBM, onnxruntime,
treelite (tl2cgen-compiled C) and lleaves (LLVM), one run, same data.

    python benchmarks/bench_trees.py            # full run (trains and compiles: ~15 min)
    python benchmarks/bench_trees.py --quick    # smoke run, smaller models, ~2 min
    python benchmarks/bench_trees.py --json results.json

Models (20 features, float64 input for mlserve; each contender gets the input
type its API takes, converted outside the timed statement):

* rf:   scikit-learn RandomForestClassifier, 100 trees, max_depth 10, binary;
* xgb:  XGBoost XGBClassifier, 500 trees, max_depth 6, binary:logistic;
* hgb:  scikit-learn HistGradientBoostingClassifier, 500 trees, max_depth 6,
        binary (the scikit-learn counterpart of xgb);
* lgbm: LightGBM LGBMClassifier, 1000 iterations x 5 classes, 63 leaves.

Contenders: mlserve (``mlserve.convert``; ``--scalar`` adds mlserve_scalar, the
same model with its SIMD kernels off), the source library's own predict
(scikit-learn ``predict_proba``, XGBoost ``inplace_predict``, LightGBM
``predict``), onnxruntime (skl2onnx / onnxmltools graphs, float32),
treelite models compiled to a shared library by tl2cgen (gcc -O3), and
lleaves (LightGBM only). Every contender's output is checked against the
source library before timing. Batches of 1, 1024 and 100000 rows, at 1 and 2
threads (mlserve.set_num_threads, n_jobs / nthread / num_threads /
intra_op_num_threads per library, threadpoolctl for OpenMP). Times are
medians of ``repeats`` samples; contenders of one case are sampled in
rotation (_common.measure_interleaved). Ratios: other/mlserve time, so 5x
means mlserve is 5 times faster.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import mlserve  # noqa: E402

N_FEATURES = 20
BATCHES = (1, 1024, 100_000)


def _try_import(name):
    try:
        return __import__(name)
    except Exception:  # noqa: BLE001 - optional contender
        return None


# ---------------------------------------------------------------- models


def train_models(quick: bool, cache_dir: str):
    """Train (or load from cache_dir) the four models."""
    import joblib
    from sklearn.datasets import make_classification

    os.makedirs(cache_dir, exist_ok=True)
    scale = 0.1 if quick else 1.0
    X2, y2 = make_classification(20000, N_FEATURES, n_informative=12, random_state=0)
    # LightGBM grows 5000 trees: 8000 rows keep its training to a few minutes
    X5, y5 = make_classification(8000, N_FEATURES, n_informative=12, n_classes=5,
                                 random_state=1)
    models = {}

    def cached(name, make):
        path = os.path.join(cache_dir, f"{name}{'-quick' if quick else ''}.joblib")
        if os.path.exists(path):
            return joblib.load(path)
        t0 = time.perf_counter()
        est = make()
        print(f"  trained {name} in {time.perf_counter() - t0:.1f} s")
        joblib.dump(est, path)
        return est

    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    models["rf"] = cached("rf", lambda: RandomForestClassifier(
        n_estimators=max(10, int(100 * scale)), max_depth=10, n_jobs=2, random_state=0
    ).fit(X2, y2))
    xgb = _try_import("xgboost")
    if xgb is not None:
        models["xgb"] = cached("xgb", lambda: xgb.XGBClassifier(
            n_estimators=max(20, int(500 * scale)), max_depth=6, n_jobs=2, random_state=0
        ).fit(X2, y2))
    models["hgb"] = cached("hgb", lambda: HistGradientBoostingClassifier(
        max_iter=max(20, int(500 * scale)), max_depth=6, early_stopping=False, random_state=0
    ).fit(X2, y2))
    lgb = _try_import("lightgbm")
    if lgb is not None:
        models["lgbm"] = cached("lgbm", lambda: lgb.LGBMClassifier(
            n_estimators=max(20, int(1000 * scale)), num_leaves=63, n_jobs=2, verbose=-1,
            random_state=0, min_child_samples=5,
        ).fit(X5, y5))
    return models


# ---------------------------------------------------------------- contenders


def compile_treelite(tl_model, workdir, name, nthread_build=2):
    """tl2cgen: generate C, compile with gcc, return a loader(nthread)."""
    import tl2cgen

    libpath = os.path.join(workdir, f"{name}.so")
    if not os.path.exists(libpath):
        t0 = time.perf_counter()
        tl2cgen.export_lib(tl_model, toolchain="gcc", libpath=libpath,
                           params={"parallel_comp": 8}, nthread=nthread_build, verbose=False)
        print(f"  tl2cgen compiled {name} in {time.perf_counter() - t0:.1f} s")
    return lambda nthread: tl2cgen.Predictor(libpath, nthread=nthread, verbose=False)


def scalar_twin(model):
    """The same mlserve model on the scalar walker (config[7] = 2: no SIMD,
    the walker before the AVX2/AVX-512 kernels; csrc/mls_tree.h)."""
    from mlserve import _core

    core = model.model_
    arrays = {k: np.array(v) for k, v in core.arrays().items()}
    arrays["config"][7] = 2
    twin = mlserve.TreeEnsembleModel()
    twin._install(_core.create("tree_ensemble", arrays, core.metadata))
    return twin


def make_contenders(key, est, workdir, threads, treelite_max_trees=10**9, no_lleaves=False,
                    scalar=False, only=None):
    """name -> (callable(X) -> proba-like output, input converter, reference)."""
    out = {}
    mls = mlserve.convert(est)
    out["mlserve"] = (mls.predict_proba, lambda X: X)
    if scalar:
        out["mlserve_scalar"] = (scalar_twin(mls).predict_proba, lambda X: X)
    ort = _try_import("onnxruntime")
    if key in ("rf", "hgb"):
        est.n_jobs = threads
        out["sklearn"] = (est.predict_proba, lambda X: X)
    if key == "xgb":
        booster = est.get_booster()
        booster.set_param({"nthread": threads})
        out["xgboost"] = (lambda X: booster.inplace_predict(X), lambda X: X)
    if key == "lgbm":
        booster = est.booster_
        out["lightgbm"] = (lambda X: booster.predict(X, num_threads=threads), lambda X: X)
    # onnxruntime
    if ort is not None:
        onx = None
        try:
            if key in ("rf", "hgb"):
                from skl2onnx import to_onnx

                onx = to_onnx(est, np.zeros((1, N_FEATURES), np.float32),
                              options={id(est): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
            elif key == "xgb":
                from onnxmltools import convert_xgboost
                from onnxmltools.convert.common.data_types import FloatTensorType

                onx = convert_xgboost(est, initial_types=[("X", FloatTensorType([None, N_FEATURES]))],
                                      target_opset=15)
            elif key == "lgbm":
                from onnxmltools import convert_lightgbm
                from onnxmltools.convert.common.data_types import FloatTensorType

                onx = convert_lightgbm(est, initial_types=[("X", FloatTensorType([None, N_FEATURES]))],
                                       target_opset=15, zipmap=False)
        except Exception as exc:  # noqa: BLE001
            print(f"  onnx conversion of {key} failed: {type(exc).__name__}: {exc}"[:200])
        if onx is not None:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(onx.SerializeToString(), so,
                                        providers=["CPUExecutionProvider"])
            iname = sess.get_inputs()[0].name
            outs = [o.name for o in sess.get_outputs()]
            pidx = next((i for i, o in enumerate(sess.get_outputs()) if "prob" in o.name.lower()), -1)
            oname = [outs[pidx]]
            out["onnxruntime"] = (lambda X: sess.run(oname, {iname: X})[0],
                                  lambda X: X.astype(np.float32))
    # treelite + tl2cgen
    tl = _try_import("treelite")
    if mls.n_trees_ > treelite_max_trees:
        print(f"  treelite skipped for {key}: {mls.n_trees_} trees > --treelite-max-trees")
        tl = None
    if tl is not None and _try_import("tl2cgen") is not None:
        try:
            import tl2cgen

            if key == "xgb":
                tlm = tl.frontend.from_xgboost(est.get_booster())
            elif key == "lgbm":
                tlm = tl.frontend.from_lightgbm(est.booster_)
            else:
                tlm = tl.sklearn.import_model(est)
            loader = compile_treelite(tlm, workdir, key)
            pred = loader(threads)
            out["treelite"] = (lambda X: pred.predict(tl2cgen.DMatrix(X)),
                               lambda X: X.astype(np.float32) if key == "xgb" else X)
        except Exception as exc:  # noqa: BLE001
            print(f"  treelite for {key} failed: {type(exc).__name__}: {exc}"[:200])
    if key == "lgbm" and not no_lleaves and _try_import("lleaves") is not None:
        import lleaves

        try:
            path = os.path.join(workdir, "lgbm.txt")
            cache = os.path.join(workdir, "lgbm_lleaves.o")
            est.booster_.save_model(path)
            llm = lleaves.Model(model_file=path)
            t0 = time.perf_counter()
            llm.compile(cache=cache)
            print(f"  lleaves compiled lgbm in {time.perf_counter() - t0:.1f} s")
            out["lleaves"] = (lambda X: llm.predict(X, n_jobs=threads), lambda X: X)
        except Exception as exc:  # noqa: BLE001
            print(f"  lleaves failed: {type(exc).__name__}: {exc}"[:200])
    if only:
        out = {k: v for k, v in out.items() if k in only or k.startswith("mlserve")}
    return out, mls


def _as_proba(key, y, n):
    y = np.asarray(y, dtype=np.float64).reshape(n, -1)
    if y.shape[1] == 1:
        y = np.column_stack([1 - y[:, 0], y[:, 0]])
    return y


def check(key, contenders, X, reference):
    ok = {}
    for name, (fn, conv) in contenders.items():
        got = _as_proba(key, fn(conv(X)), X.shape[0])
        if got.shape != reference.shape and key == "lgbm" and name == "treelite":
            got = got.reshape(reference.shape)
        err = float(np.max(np.abs(got - reference))) if got.shape == reference.shape else np.inf
        # float32 contenders (onnxruntime, treelite on xgb) may flip a split
        # for values near a threshold: report their error, keep them.
        ok[name] = err
    return ok


# ---------------------------------------------------------------- main


def run(args):
    warnings.filterwarnings("ignore")
    from threadpoolctl import threadpool_limits

    print("\n".join(C.machine_lines(["mlserve", "numpy", "scikit-learn", "xgboost", "lightgbm",
                                     "onnxruntime", "skl2onnx", "onnxmltools", "treelite",
                                     "tl2cgen", "lleaves"])))
    print(f"load average  {C.load_average()} at start")
    workdir = args.workdir or tempfile.mkdtemp(prefix="mlserve-bench-trees-")
    models = train_models(args.quick, workdir)
    batches = tuple(args.rows or BATCHES)
    rng = np.random.default_rng(0)
    X_all = rng.normal(size=(max(max(batches), 2000), N_FEATURES)) * 2
    results, rows = [], []
    for key, est in models.items():
        if args.only and key not in args.only:
            continue
        for threads in args.threads:
            mlserve.set_num_threads(threads)
            with threadpool_limits(threads):
                contenders, mls = make_contenders(key, est, workdir, threads,
                                                  args.treelite_max_trees, args.no_lleaves,
                                                  args.scalar, args.contenders)
                reference = est.predict_proba(X_all[:2000])
                errors = check(key, contenders, X_all[:2000], reference)
                if threads == 1:
                    print(f"\n{key}: {mls} max |proba - source|: "
                          + ", ".join(f"{n} {e:.1e}" for n, e in errors.items()))
                for n in batches:
                    X = X_all[:n]
                    ns = {"X_" + name: conv(X) for name, (fn, conv) in contenders.items()}
                    ns.update({"f_" + name: fn for name, (fn, conv) in contenders.items()})
                    stmts = {name: f"f_{name}(X_{name})" for name in contenders}
                    budget = args.budget * (3 if n == max(batches) else 1)
                    m = C.measure_interleaved(stmts, ns, budget_s=budget, repeats=args.repeats)
                    base = m["mlserve"].median_ns
                    for name, meas in m.items():
                        results.append({"model": key, "threads": threads, "rows": n,
                                        "contender": name, **meas.as_dict(),
                                        "max_abs_err": errors.get(name)})
                        rows.append([key, threads, n, name, C.fmt_time(meas.median_ns),
                                     C.fmt_rate(n * 1e9 / meas.median_ns),
                                     C.fmt_ratio(meas.median_ns / base)])
                    print(C.markdown_table(
                        ["model", "threads", "rows", "contender", "median", "rows/s",
                         "vs mlserve"], rows[-len(m):]))
    mlserve.set_num_threads(1)
    print("\n## All results\n")
    print(C.markdown_table(["model", "threads", "rows", "contender", "median", "rows/s",
                            "time / mlserve"], rows))
    print(f"\nload average at the end {C.load_average()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 10x smaller models, short timings")
    p.add_argument("--budget", type=float, default=None, help="seconds per measurement (default 0.3, quick 0.03)")
    p.add_argument("--repeats", type=int, default=None, help="samples per measurement (default 9, quick 3)")
    p.add_argument("--only", nargs="*", help="subset of models: rf xgb hgb lgbm")
    p.add_argument("--workdir", help="cache trained models and compiled libraries here")
    p.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    p.add_argument("--treelite-max-trees", type=int, default=10**9,
                   help="skip tl2cgen for larger models (compiling 5000 trees takes long)")
    p.add_argument("--rows", type=int, nargs="*", help="batch sizes (default 1 1024 100000)")
    p.add_argument("--no-lleaves", action="store_true", help="skip lleaves (LLVM compile)")
    p.add_argument("--scalar", action="store_true",
                   help="also time mlserve's scalar walker (mlserve_scalar: SIMD off)")
    p.add_argument("--contenders", nargs="*",
                   help="subset of contenders besides mlserve (e.g. onnxruntime xgboost)")
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2],
                   help="thread counts (default 1 2)")
    args = p.parse_args(argv)
    if args.budget is None:
        args.budget = 0.03 if args.quick else 0.3
    if args.repeats is None:
        args.repeats = 3 if args.quick else 9
    run(args)


if __name__ == "__main__":
    main()
