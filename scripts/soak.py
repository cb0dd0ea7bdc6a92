"""Soak test: a real gunicorn server under loopback load, with hot reloads, for a bounded time.

    python scripts/soak.py                      # 10 minutes, 2 workers, 8 client threads
    python scripts/soak.py --seconds 60 --json  # what tests/test_soak.py runs with MLSERVE_SOAK_SECONDS=60

What it does: publishes two models to a temporary store and starts
``mlserve serve`` on 127.0.0.1 (port 0). Client threads (keep-alive sessions)
send, until the time is up, a mix of

* valid requests in every protocol (simple JSON, V1, V2 JSON, V2 binary, .npy,
  MLflow JSON and CSV) with 1-64 random rows,
* invalid ones (malformed JSON, wrong feature count, NaN, unknown model,
  wrong Content-Type, bad V2 header length),
* oversized ones (a body over --max-body-bytes, more rows than --max-rows),

each with its own X-Request-ID. Meanwhile a publisher publishes a new version
of the regression model every --publish-every seconds and moves the
``production`` alias to it (sometimes as a 50/50 canary split), and calls
POST /admin/reload now and then. Version v of the model is exactly
``y = X @ W + 10 v``, so every answer can be checked against the version its
X-Model-Version header names.

Pass criteria (exit status 1 and "FAIL" otherwise):

* zero 5xx responses;
* zero lost responses (connection errors, timeouts) and zero misrouted ones: each
  response carries the request's own X-Request-ID, valid requests get their own
  number of rows with the right values for the version that answered, invalid
  and oversized requests get the expected 4xx;
* resident memory (master + workers) grows less than --max-rss-growth (2%) from
  the end of the warm-up (the first --warmup seconds, default 20% of the run) to
  the end of the run (only judged for runs of at least 60 s).

Only loopback addresses are used; the run is bounded by --seconds and every
request by a timeout.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
N_FEATURES = 4
W = np.array([1.0, -2.0, 0.5, 3.0])
REQUEST_TIMEOUT = 30.0


def _fit_version(version: int) -> Any:
    import mlserve

    rng = np.random.default_rng(version)
    X = rng.normal(size=(64, N_FEATURES))
    return mlserve.LinearRegression().fit(X, X @ W + 10.0 * version)


def _fit_classifier() -> Any:
    import mlserve

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, N_FEATURES))
    return mlserve.LogisticRegression().fit(X, np.where(X @ W > 0, "hi", "lo"))


def expected(rows: np.ndarray, version: int) -> np.ndarray:
    return rows @ W + 10.0 * version


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.problems: list[str] = []
        self.problem_counts: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()

    def problem(self, category: str, detail: str) -> None:
        with self.lock:
            self.problem_counts[category] += 1
            if len(self.problems) < 20:
                self.problems.append(f"{category}: {detail}")


# ------------------------------------------------------------------ requests


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _valid(rng: random.Random, rows: np.ndarray) -> tuple[str, str, dict, bytes, str]:
    """(kind, path, headers, body, how to read predictions) for a valid request."""
    n = len(rows)
    kind = rng.choice(["simple", "v1", "v2", "v2_binary", "npy", "mlflow_json", "mlflow_csv"])
    if kind == "simple":
        body = {"features": rows[0].tolist()} if n == 1 else {"instances": rows.tolist()}
        return kind, "/predict/reg", {"Content-Type": "application/json"}, json.dumps(body).encode(), kind
    if kind == "v1":
        body = json.dumps({"instances": rows.tolist()}).encode()
        return kind, "/v1/models/reg:predict", {"Content-Type": "application/json"}, body, kind
    if kind == "v2":
        body = {"inputs": [{"name": "x", "shape": [n, N_FEATURES], "datatype": "FP64", "data": rows.ravel().tolist()}]}
        return kind, "/v2/models/reg/infer", {"Content-Type": "application/json"}, json.dumps(body).encode(), kind
    if kind == "v2_binary":
        raw = rows.astype("<f8").tobytes()
        header = json.dumps({
            "inputs": [{"name": "x", "shape": [n, N_FEATURES], "datatype": "FP64",
                        "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
        }).encode()  # fmt: skip
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
        return kind, "/v2/models/reg/infer", headers, header + raw, kind
    if kind == "npy":
        return kind, "/predict/reg", {"Content-Type": "application/x-npy"}, _npy(rows), kind
    if kind == "mlflow_json":
        body = json.dumps({"dataframe_split": {"data": rows.tolist()}}).encode()
        return kind, "/invocations", {"Content-Type": "application/json"}, body, kind
    lines = ["a,b,c,d"] + [",".join(repr(float(v)) for v in row) for row in rows]
    return kind, "/invocations", {"Content-Type": "text/csv"}, "\n".join(lines).encode(), "mlflow_json"


def _predictions(how: str, response: Any) -> np.ndarray:
    if how == "v2_binary":
        length = int(response.headers["Inference-Header-Content-Length"])
        header = json.loads(response.content[:length])
        return np.frombuffer(response.content[length:], dtype="<f8")[: header["outputs"][0]["shape"][0]]
    data = response.json()
    if how == "simple":
        value = data.get("predictions", data.get("prediction"))
        return np.atleast_1d(np.asarray(value, dtype=float))
    if how in ("v1", "mlflow_json", "npy"):
        return np.asarray(data["predictions"], dtype=float)
    if how == "v2":
        return np.asarray(data["outputs"][0]["data"], dtype=float)
    raise ValueError(how)


def _invalid(rng: random.Random, max_body: int, max_rows: int) -> tuple[str, str, dict, bytes, set[int]]:
    """(kind, path, headers, body, the statuses allowed) for an invalid or oversized request."""
    json_headers = {"Content-Type": "application/json"}
    choice = rng.randrange(9)
    if choice == 0:
        return "bad_json", "/predict/reg", json_headers, b'{"instances": [[1, 2,', {400}
    if choice == 1:
        return "wrong_width", "/v1/models/reg:predict", json_headers, b'{"instances": [[1, 2, 3]]}', {400}
    if choice == 2:
        return "nan", "/predict/reg", {"Content-Type": "application/x-npy"}, _npy(np.full((2, 4), np.nan)), {400}
    if choice == 3:
        return "unknown_model", "/predict/nosuch", json_headers, b'{"features": [1, 2, 3, 4]}', {404}
    if choice == 4:
        return "content_type", "/predict/reg", {"Content-Type": "text/xml"}, b"<x/>", {415}
    if choice == 5:
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "999999"}
        return "v2_header_length", "/v2/models/reg/infer", headers, b'{"inputs": []}', {400}
    if choice == 6:
        return "npy_claims_huge", "/predict/reg", {"Content-Type": "application/x-npy"}, _npy_claiming((10**12, 4)), {400, 413}
    if choice == 7:
        rows = np.zeros((max_rows + 1, N_FEATURES))
        return "too_many_rows", "/predict/reg", {"Content-Type": "application/x-npy"}, _npy(rows), {413}
    body = b'{"instances": [' + b"[0,0,0,0]," * (max_body // 10 + 100) + b"[0,0,0,0]]}"
    return "too_large", "/predict/reg", json_headers, body, {413}


def _npy_claiming(shape: tuple[int, ...]) -> bytes:
    header = ("{'descr': '<f8', 'fortran_order': False, 'shape': %r, }" % (shape,)).ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64


def client_loop(url: str, deadline: float, seed: int, stats: Stats, args: argparse.Namespace) -> None:
    import requests

    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    session = requests.Session()
    while time.monotonic() < deadline:
        request_id = uuid.uuid4().hex
        valid = rng.random() < 0.8
        if valid:
            rows = nprng.normal(size=(rng.randint(1, 64), N_FEATURES)).round(6)
            kind, path, headers, body, how = _valid(rng, rows)
            allowed = {200}
        else:
            kind, path, headers, body, allowed = _invalid(rng, args.max_body_bytes, args.max_rows)
        headers = {**headers, "X-Request-ID": request_id}
        try:
            response = session.post(url + path, data=body, headers=headers, timeout=REQUEST_TIMEOUT)
        except requests.RequestException as exc:
            stats.problem("lost", f"{kind} {request_id}: {type(exc).__name__}: {exc}")
            session = requests.Session()
            continue
        with stats.lock:
            stats.kinds[kind] += 1
            stats.statuses[response.status_code] += 1
        if response.status_code >= 500:
            stats.problem("5xx", f"{kind} {response.status_code}: {response.text[:200]}")
            continue
        if response.headers.get("X-Request-ID") != request_id:
            stats.problem("misrouted", f"{kind}: sent id {request_id}, got {response.headers.get('X-Request-ID')}")
            continue
        if response.status_code not in allowed:
            stats.problem("unexpected_status", f"{kind}: {response.status_code} {response.text[:200]}")
            continue
        if not valid:
            continue
        version = int(response.headers["X-Model-Version"])
        with stats.lock:
            stats.versions[str(version)] += 1
        try:
            got = _predictions(how, response)
        except Exception as exc:  # noqa: BLE001
            stats.problem("misrouted", f"{kind}: unreadable answer {exc}: {response.content[:200]!r}")
            continue
        want = expected(rows, version)
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-6, atol=1e-6):
            stats.problem("misrouted", f"{kind} v{version}: {len(rows)} rows sent, answer {got[:3]} != {want[:3]}")


def publisher_loop(store_dir: str, url: str, deadline: float, every: float, stats: Stats, first: int) -> None:
    import requests

    from mlserve.store import ModelStore

    store = ModelStore(store_dir)
    version = first
    rng = random.Random(7)
    while time.monotonic() + every < deadline:
        time.sleep(every)
        version = store.publish("reg", _fit_version(version + 1))
        if rng.random() < 0.3:
            store.set_alias("reg", "production", {version - 1: 50, version: 50})
        else:
            store.set_alias("reg", "production", version)
        with stats.lock:
            stats.kinds["publish"] += 1
        if rng.random() < 0.5:
            try:
                response = requests.post(url + "/admin/reload", timeout=REQUEST_TIMEOUT)
                if response.status_code != 200:
                    stats.problem("5xx" if response.status_code >= 500 else "unexpected_status",
                                  f"admin reload {response.status_code}")  # fmt: skip
                with stats.lock:
                    stats.kinds["admin_reload"] += 1
            except requests.RequestException as exc:
                stats.problem("lost", f"admin reload: {exc}")


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mlserve.store import ModelStore

    workdir = tempfile.mkdtemp(prefix="mlserve-soak-")
    store_dir = os.path.join(workdir, "models")
    store = ModelStore(store_dir)
    store.publish("reg", _fit_version(1), alias="production")
    store.publish("clf", _fit_classifier(), alias="production")
    log_path = os.path.join(workdir, "server.log")
    command = [
        sys.executable, "-m", "mlserve.cli", "serve", store_dir, "--host", "127.0.0.1", "--port", "0",
        "--workers", str(args.workers), "--threads", str(args.threads), "--default-model", "reg",
        "--reload-interval", "0.5", "--max-body-bytes", str(args.max_body_bytes),
        "--max-rows", str(args.max_rows), "--no-access-log",
        "--admin",  # the soak posts /admin/reload without keys (closed by default)
    ]  # fmt: skip
    log = open(log_path, "w+")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    stats = Stats()
    rss: list[tuple[float, int]] = []
    try:
        url = _wait_for_server(log_path, server)
        start = time.monotonic()
        deadline = start + args.seconds
        threads = [
            threading.Thread(target=client_loop, args=(url, deadline, 1000 + i, stats, args), daemon=True)
            for i in range(args.clients)
        ]
        threads.append(threading.Thread(
            target=publisher_loop, args=(store_dir, url, deadline, args.publish_every, stats, 1), daemon=True))  # fmt: skip
        for thread in threads:
            thread.start()
        while time.monotonic() < deadline:
            rss.append((time.monotonic() - start, _tree_rss(server.pid)))
            time.sleep(1.0)
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT + 10)
        elapsed = time.monotonic() - start
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    with open(log_path) as f:
        server_log = f.read()
    warmup = args.warmup if args.warmup is not None else 0.2 * args.seconds
    after = [r for t, r in rss if t >= warmup]
    growth = None
    if len(after) >= 6:
        k = max(3, len(after) // 10)
        first, last = np.median(after[:k]), np.median(after[-k:])
        growth = float((last - first) / first)
    requests_sent = sum(v for k, v in stats.kinds.items() if k not in ("publish", "admin_reload"))
    result = {
        "seconds": round(elapsed, 1),
        "workers": args.workers,
        "clients": args.clients,
        "requests": requests_sent,
        "requests_per_second": round(requests_sent / elapsed, 1),
        "kinds": dict(sorted(stats.kinds.items())),
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "versions_answering": dict(sorted(stats.versions.items(), key=lambda kv: int(kv[0]))),
        "problems": dict(stats.problem_counts),
        "problem_examples": stats.problems,
        "rss_mb_after_warmup": round(after[0] / 2**20, 1) if after else None,
        "rss_mb_end": round(after[-1] / 2**20, 1) if after else None,
        "rss_growth": None if growth is None else round(growth, 4),
        "server_tracebacks": server_log.count("Traceback"),
    }
    failures = []
    if stats.problem_counts:
        failures.append(f"problems: {dict(stats.problem_counts)}")
    if result["server_tracebacks"]:
        failures.append(f"{result['server_tracebacks']} tracebacks in the server log")
    if args.seconds >= 60 and growth is not None and growth >= args.max_rss_growth:
        failures.append(f"RSS grew {growth:.2%} after warm-up (limit {args.max_rss_growth:.0%})")
    result["failures"] = failures
    result["ok"] = not failures
    if failures:
        result["server_log_tail"] = server_log[-3000:]
    return result


def _wait_for_server(log_path: str, server: subprocess.Popen) -> str:
    import re

    import requests

    deadline = time.monotonic() + 60
    url = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("server exited:\n" + Path(log_path).read_text()[-3000:])
        if url is None:
            match = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", Path(log_path).read_text())
            url = match.group(1) if match else None
        if url is not None:
            try:
                if requests.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    return url
            except requests.RequestException:
                pass
        time.sleep(0.1)
    raise RuntimeError("server did not get ready:\n" + Path(log_path).read_text()[-3000:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--publish-every", type=float, default=5.0)
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument("--max-rows", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=None, help="seconds (default: 20%% of the run)")
    parser.add_argument("--max-rss-growth", type=float, default=0.02)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:22} {value}")
    print("OK" if result["ok"] else "FAIL")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
