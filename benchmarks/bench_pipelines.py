"""Pipelines on mixed-type data (issue 14): mlserve's converted Pipeline vs scikit-learn
and onnxruntime, side by side in one run.

The pipeline: ColumnTransformer(age, income: SimpleImputer(median) + StandardScaler;
city, plan: SimpleImputer(constant "missing") + OneHotEncoder(handle_unknown="ignore"))
-> LogisticRegression, fitted on 5000 rows (city: 5 values and None, plan: 200 values).

Cases (outputs checked equal, 1e-6, before timing; medians of interleaved samples):
  record     one record, a dict with strings: mlserve ``model.predict_proba(record)`` vs
             scikit-learn ``pipe.predict_proba(pd.DataFrame([record]))`` vs onnxruntime on
             skl2onnx's conversion (``sess.run`` with the record's columns as 1x1 arrays,
             built per call as a caller must)
  100k rows  ``predict_proba(df)`` of a 100 000-row DataFrame, mlserve vs scikit-learn
  HTTP       one record per request (MLflow ``{"dataframe_records": [record]}`` to
             /invocations) at 64 wrk connections: the mlserve blueprint vs a Flask route
             calling ``pipe.predict_proba(pd.DataFrame(records))``; both gunicorn gthread,
             the same workers x threads, loopback

skl2onnx cannot convert SimpleImputer(missing_values=NaN) on a string column, so the ONNX
model is the same fitted pipeline with that imputer's missing_values set to "" (the
benchmark record has no missing string; its output is checked equal, to float32
precision: onnxruntime's Imputer takes float32 inputs only).

    python benchmarks/bench_pipelines.py            # ~1 min
    python benchmarks/bench_pipelines.py --quick    # shorter samples and wrk runs
"""
from __future__ import annotations

import argparse
import copy
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # this checkout's mlserve, whatever the venv points at

from _common import (
    fmt_ratio,
    fmt_time,
    machine_lines,
    markdown_table,
    measure_interleaved,
)

RECORD = {"age": 37.5, "income": 41000.0, "city": "lyon", "plan": "p17"}


def frame(n: int, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n)
    age[rng.random(n) < 0.1] = np.nan
    income = rng.lognormal(10, 1, n)
    city = rng.choice(["paris", "lyon", "nantes", "brest", "lille"], n).astype(object)
    city[rng.random(n) < 0.05] = None
    plan = rng.choice([f"p{i}" for i in range(200)], n).astype(object)
    X = pd.DataFrame({"age": age, "income": income, "city": city, "plan": plan})
    score = np.nan_to_num(age, nan=40) / 10 + (city == "paris") + rng.normal(0, 1, n)
    return X, (score > np.median(score)).astype(int)


def fit_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = frame(5000)
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
         ["age", "income"]),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                              OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
         ["city", "plan"]),
    ])
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=1000))]).fit(X, y)


def onnx_session(pipe):
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    twin = copy.deepcopy(pipe)
    twin.named_steps["prep"].named_transformers_["cat"].steps[0][1].missing_values = ""
    # onnxruntime's Imputer runs on float32 only, so the numeric inputs are float32
    types = [("age", FloatTensorType([None, 1])), ("income", FloatTensorType([None, 1])),
             ("city", StringTensorType([None, 1])), ("plan", StringTensorType([None, 1]))]
    onx = to_onnx(twin, initial_types=types,
                  options={id(twin.steps[-1][1]): {"zipmap": False}}, target_opset=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(onx.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def onnx_feeds(record):
    return {"age": np.array([[record["age"]]], dtype=np.float32),
            "income": np.array([[record["income"]]], dtype=np.float32),
            "city": np.array([[record["city"]]], dtype=object),
            "plan": np.array([[record["plan"]]], dtype=object)}


# ----------------------------------------------------------- the HTTP servers

def app_factory() -> Any:
    """The WSGI app of one server (BENCH_KIND: mlserve | sklearn), run by gunicorn."""
    kind = os.environ["BENCH_KIND"]
    if kind == "mlserve":
        from mlserve.serving.app import create_app

        return create_app(os.environ["BENCH_STORE"], MLSERVE_BATCHING=False,
                          MLSERVE_RELOAD_INTERVAL=0)
    import pandas as pd
    from flask import Flask, jsonify, request

    with open(os.environ["BENCH_PICKLE"], "rb") as f:
        pipe = pickle.load(f)
    app = Flask("bench")

    @app.post("/invocations")
    def invocations() -> Any:
        frame = pd.DataFrame(request.get_json()["dataframe_records"])
        return jsonify({"predictions": pipe.predict_proba(frame).tolist()})

    return app


def start(kind: str, env: dict, workers: int, threads: int):
    import re
    import subprocess
    import threading

    command = [sys.executable, "-m", "gunicorn", "--chdir", str(HERE), "--bind", "127.0.0.1:0",
               "--worker-class", "gthread", "--workers", str(workers), "--threads",
               str(threads), "--keep-alive", "30", "--backlog", "2048", "--log-level", "info",
               "bench_pipelines:app_factory()"]
    server_env = {**os.environ, **env, "BENCH_KIND": kind, "PYTHONUNBUFFERED": "1",
                  "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.Popen(command, cwd=str(HERE.parent), env=server_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found = threading.Event()
    box: dict[str, Any] = {"log": []}

    def read() -> None:
        for line in proc.stderr:
            box["log"].append(line)
            m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if m:
                box["port"] = int(m.group(1))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(60):
        proc.terminate()
        raise RuntimeError(f"{kind} server did not start:\n" + "".join(box["log"]))
    return proc, f"http://127.0.0.1:{box['port']}/invocations"


def stop(proc) -> None:
    import subprocess

    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def http_case(pipe, model, directory: Path, args) -> list:
    import json
    import shutil

    from bench_http import WRK_LUA, run_wrk, wait_ready

    import mlserve

    if shutil.which("wrk") is None:
        return [["HTTP, 1 record/request, 64 clients", "wrk not installed", "", "", "", "", ""]]
    mlserve.save(model, directory / "churn.mls")
    mlserve.ModelStore(directory / "store").publish("churn", directory / "churn.mls",
                                                    alias="production")
    with open(directory / "pipe.pkl", "wb") as f:
        pickle.dump(pipe, f)
    body = directory / "body.json"
    body.write_text(json.dumps({"dataframe_records": [RECORD]}))
    lua = directory / "post.lua"
    lua.write_text(WRK_LUA)
    env = {"BENCH_STORE": str(directory / "store"), "BENCH_PICKLE": str(directory / "pipe.pkl"),
           "MLSERVE_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    rps: dict[str, list] = {"mlserve": [], "sklearn": []}
    servers = {}
    try:
        for kind in rps:
            servers[kind] = start(kind, env, args.workers, args.threads)
        answers = {}
        for kind, (_, url) in servers.items():
            wait_ready(url, body)
            import urllib.request

            req = urllib.request.Request(url, data=body.read_bytes(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                answers[kind] = json.loads(r.read())["predictions"]
        got = np.asarray(answers["mlserve"], dtype=float).reshape(-1)
        want = np.asarray(answers["sklearn"], dtype=float).reshape(-1)
        assert got.shape == (1,) or np.allclose(got[-1:], want[-1:], rtol=1e-6), answers
        for round_ in range(args.rounds):
            for kind in (list(rps) if round_ % 2 == 0 else list(rps)[::-1]):
                url = servers[kind][1]
                run_wrk(url, body, 64, args.warmup, lua)
                r = run_wrk(url, body, 64, args.duration, lua)
                if r["errors"]:
                    raise RuntimeError(f"{kind}: {r['errors']} errors under load")
                rps[kind].append(r["rps"])
    finally:
        for proc, _ in servers.values():
            stop(proc)
    m, s = float(np.median(rps["mlserve"])), float(np.median(rps["sklearn"]))
    return [["HTTP, 1 record/request, 64 clients", f"{m:,.0f} req/s", f"{s:,.0f} req/s", "",
             fmt_ratio(m / s), "", f"5x {'met' if m / s >= 5 else 'MISSED'}"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2, help="wrk runs per server (median)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 2.0, 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import pandas as pd

    import mlserve

    budget = 0.5 if args.quick else 1.5
    pipe = fit_pipeline()
    model = mlserve.convert(pipe)
    sess = onnx_session(pipe)
    frame_1 = pd.DataFrame([RECORD])
    want = pipe.predict_proba(frame_1)
    np.testing.assert_allclose(model.predict_proba(RECORD), want, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(sess.run(None, onnx_feeds(RECORD))[1], want, rtol=1e-4,
                               atol=1e-6)  # ONNX computes in float32
    ns = {"model": model, "pipe": pipe, "pd": pd, "record": RECORD, "sess": sess,
          "feeds": onnx_feeds}
    one = measure_interleaved({
        "mlserve": "model.predict_proba(record)",
        "sklearn": "pipe.predict_proba(pd.DataFrame([record]))",
        "onnxruntime": "sess.run(None, feeds(record))",
    }, ns, budget_s=budget, repeats=9)
    r_sk = one["sklearn"].median_ns / one["mlserve"].median_ns
    r_ort = one["onnxruntime"].median_ns / one["mlserve"].median_ns
    rows = [["1 record (dict with strings)", fmt_time(one["mlserve"].median_ns),
             fmt_time(one["sklearn"].median_ns), fmt_time(one["onnxruntime"].median_ns),
             fmt_ratio(r_sk), fmt_ratio(r_ort),
             (f"50x sklearn {'met' if r_sk >= 50 else 'MISSED'}, "
              f"5x onnxruntime {'met' if r_ort >= 5 else 'MISSED'}")]]
    big, _ = frame(100_000, seed=7)
    np.testing.assert_allclose(model.predict_proba(big), pipe.predict_proba(big), rtol=1e-6,
                               atol=1e-12)
    ns["big"] = big
    many = measure_interleaved({
        "mlserve": "model.predict_proba(big)",
        "sklearn": "pipe.predict_proba(big)",
    }, ns, budget_s=budget * 4, repeats=5)
    r_big = many["sklearn"].median_ns / many["mlserve"].median_ns
    rows.append(["100 000 rows from a DataFrame", fmt_time(many["mlserve"].median_ns),
                 fmt_time(many["sklearn"].median_ns), "", fmt_ratio(r_big), "",
                 f"3x {'met' if r_big >= 3 else 'MISSED'}"])
    if not args.no_http:
        with tempfile.TemporaryDirectory(prefix="mlserve-bench-pipelines-") as tmp:
            rows += http_case(pipe, model, Path(tmp), args)
    print(markdown_table(["case", "mlserve", "scikit-learn", "onnxruntime", "sklearn / mlserve",
                          "onnxruntime / mlserve", "target"], rows))
    print()
    for line in machine_lines(["numpy", "pandas", "scikit-learn", "onnxruntime", "skl2onnx",
                               "flask", "gunicorn"]):
        print(line)
    print(f"load          {os.getloadavg()[0]:.1f} (1 min)")


if __name__ == "__main__":
    main()
