"""HTTP load benchmark: servers side by side under the same gunicorn settings, driven by wrk.

Servers (loopback only, each with --workers W --threads T):

  (a) bare     Flask route returning a constant JSON (the framework ceiling), gunicorn gthread
  (b) sklearn  Flask + scikit-learn: model.predict(np.asarray(request.get_json()["instances"]))
  (c) mlserve  the mlserve blueprint (mlserve.serving.app.create_app), MLSERVE_BATCHING=False
  (d) batched  the same with micro-batching on (MLSERVE_BATCH_MAX_SIZE, MLSERVE_BATCH_MAX_DELAY_MS)
  (e) defaults ``mlserve serve STORE`` itself with its defaults: the buffering worker
               (mlserve.serving.worker), multiprocess Prometheus metrics, the JSON access log
               on stderr, request ids, Server-Timing, batching on, store reload every 2 s
  (f) bare     the route of (a) on (e)'s worker class (BufferingThreadWorker), for (e)/(f)
  (g) baseline (e) run from another checkout (--baseline PATH, e.g. ``git archive`` of main
               with its built extension), for a before/after comparison in one run

(a)-(d) run ``gunicorn -k gthread``; (e) and (g) run ``python -m mlserve.cli serve``.

Models: "cheap", a LogisticRegression on 20 features (the HTTP path is all that
matters), and "heavy", a multi-output Ridge with 2048 features and 1024
outputs (16 MB of float64 weights: one row is a full pass over them, a batch
shares it), and "forest", a RandomForestClassifier of 100 trees of depth 10 on
20 features (the tree family; scikit-learn's predict starts a thread pool per
call). All are fitted with scikit-learn; mlserve serves the converted model
(mlserve.convert), so both sides compute the same function.

Load: wrk (https://github.com/wg/wrk) with a Lua script that POSTs one body
file, at concurrency 1, 8 and 64 with single-row V1 bodies
(``{"instances": [[...]]}``), and at concurrency 8 with 1000-row bodies of the
cheap model. Every case runs for --duration seconds after a --warmup run; the
servers of one case are measured one after another (rotating the order per
round) so drift on a shared machine affects them alike. The table gives
requests/s, rows/s, p50 and p99 latency, and ratios.

    python benchmarks/bench_http.py                  # full grid (~4 min)
    python benchmarks/bench_http.py --quick          # 2 s runs, 1 s warm-up
    python benchmarks/bench_http.py --profile c:heavy:64   # + py-spy of server (c) under that case
    python benchmarks/bench_http.py --servers aefg --baseline /tmp/main --cases cheap:1,cheap:8,cheap:64

The servers are started with this file as the gunicorn app module
(``bench_http:app_factory()``, configured by BENCH_* environment variables).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SERVERS = {
    "a": "bare Flask, constant JSON",
    "b": "Flask + scikit-learn predict",
    "c": "mlserve, batching off",
    "d": "mlserve, batching on",
    "e": "mlserve serve, defaults",
    "f": "bare Flask on (e)'s worker",
    "g": "mlserve serve, defaults, baseline",
}
#: the servers that are ``mlserve serve`` (the others are this file's app_factory)
SERVE_KINDS = ("e", "g")
CHEAP_FEATURES = 20
HEAVY_FEATURES, HEAVY_OUTPUTS = 2048, 1024

WRK_LUA = r"""
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d, "mean_us": %f}\n',
    summary.requests, summary.duration, errors,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


# ---------------------------------------------------------------- the apps


def app_factory() -> Any:
    """The WSGI app of one server, chosen by BENCH_KIND (run inside gunicorn workers)."""
    kind = os.environ["BENCH_KIND"]
    if kind == "f":
        kind = "a"  # the same route, on another worker class
    if kind in ("c", "d"):
        from mlserve.serving.app import create_app

        config: dict[str, Any] = {"MLSERVE_BATCHING": kind == "d", "MLSERVE_RELOAD_INTERVAL": 0}
        if kind == "d":
            config["MLSERVE_BATCH_MAX_SIZE"] = int(os.environ["BENCH_MAX_BATCH"])
            config["MLSERVE_BATCH_MAX_DELAY_MS"] = float(os.environ["BENCH_MAX_DELAY_MS"])
        extra = os.environ.get("BENCH_MLSERVE_CONFIG")
        if extra:
            config.update(json.loads(extra))
        return create_app(os.environ["BENCH_STORE"], **config)

    from flask import Flask, jsonify, request

    app = Flask("bench")
    if kind == "a":

        @app.post("/v1/models/<name>:predict")
        def constant(name: str) -> Any:
            return jsonify({"predictions": [1]})

        return app
    models = {}
    for name in ("cheap", "heavy", "forest"):
        with open(Path(os.environ["BENCH_DIR"]) / f"{name}.pkl", "rb") as f:
            models[name] = pickle.load(f)

    @app.post("/v1/models/<name>:predict")
    def predict(name: str) -> Any:
        model = models[name]
        prediction = model.predict(np.asarray(request.get_json()["instances"]))
        return jsonify({"predictions": prediction.tolist()})

    return app


# ------------------------------------------------------------- the servers


class Gunicorn:
    def __init__(
        self, kind: str, env: dict[str, str], workers: int, threads: int, code: Path
    ) -> None:
        """Start server ``kind`` with the mlserve package of the checkout ``code``."""
        self.kind = kind
        if kind in SERVE_KINDS:
            # exactly the server a user starts; its access log goes to stderr (read below)
            command = [
                sys.executable, "-m", "mlserve.cli", "serve", env["BENCH_STORE"],
                "--host", "127.0.0.1", "--port", "0",
                "--workers", str(workers), "--threads", str(threads),
            ]  # fmt: skip
        else:
            worker = "mlserve.serving.worker.BufferingThreadWorker" if kind == "f" else "gthread"
            command = [
                sys.executable, "-m", "gunicorn", "--chdir", str(HERE),
                "--bind", "127.0.0.1:0", "--worker-class", worker,
                "--workers", str(workers), "--threads", str(threads),
                "--keep-alive", "30", "--backlog", "2048", "--log-level", "info",
                "bench_http:app_factory()",
            ]  # fmt: skip
            import gunicorn.config

            if hasattr(gunicorn.config, "ControlSocketDisable"):
                command.insert(-1, "--no-control-socket")
        server_env = {**os.environ, **env, "BENCH_KIND": kind, "PYTHONUNBUFFERED": "1"}
        server_env["PYTHONPATH"] = os.pathsep.join(
            [str(code), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        for key in [k for k in server_env if k.startswith("MLSERVE_") and kind in SERVE_KINDS]:
            if key not in ("MLSERVE_NUM_THREADS",):
                del server_env[key]  # the defaults, whatever this shell exports
        server_env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # serve makes its own folder
        self.process = subprocess.Popen(
            command,
            cwd=str(code),
            env=server_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port: int | None = None
        self.workers: list[int] = []
        self.log: list[str] = []
        self.access_lines = 0
        ready = threading.Event()

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                if line.startswith("{"):  # an access-log line of (e), (g)
                    self.access_lines += 1
                    continue
                if len(self.log) < 200:
                    self.log.append(line)
                m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                m = re.search(r"Booting worker with pid: (\d+)", line)
                if m:
                    self.workers.append(int(m.group(1)))
                    if len(self.workers) >= workers:
                        ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60):
            self.stop()
            raise RuntimeError(f"server {kind} did not start:\n" + "".join(self.log))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the master and its workers."""
        total = 0
        for pid in [self.process.pid, *self.workers]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_ready(url: str, body: Path, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    data = body.read_bytes()
    while True:
        try:
            req = urllib.request.Request(
                url, data=data, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=10) as response:
                json.loads(response.read())
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ------------------------------------------------------------------- wrk


def run_wrk(url: str, body: Path, connections: int, seconds: float, lua: Path) -> dict[str, Any]:
    threads = 1 if connections < 8 else 2
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
         "--timeout", "30s", "-s", str(lua), url],
        env={**os.environ, "BENCH_BODY": str(body)},
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )  # fmt: skip
    line = next((l for l in out.stdout.splitlines() if l.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed:\n{out.stdout}\n{out.stderr}")
    result = json.loads(line[6:])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def server_timing_probe(url: str, body: Path, clients: int, seconds: float) -> str:
    """Batch sizes and in-server latency (queue + compute, from Server-Timing) under load.

    A threaded Python client (keep-alive connections) instead of wrk, because
    it reads every response's Server-Timing header; run in a subprocess.
    """
    code = f"""
import http.client, re, threading, time, urllib.parse, collections, json
u = urllib.parse.urlsplit({url!r}); body = open({str(body)!r}, 'rb').read()
sizes = collections.Counter(); inside = []; stop = time.monotonic() + {seconds}
def run():
    c = http.client.HTTPConnection(u.hostname, u.port)
    while time.monotonic() < stop:
        c.request('POST', u.path, body, {{'Content-Type': 'application/json'}})
        r = c.getresponse(); r.read()
        m = re.search(r'queue;dur=([\\d.]+), compute;dur=([\\d.]+).*batch;desc=(\\d+)', r.getheader('Server-Timing'))
        inside.append(float(m.group(1)) + float(m.group(2))); sizes[int(m.group(3))] += 1
ts = [threading.Thread(target=run) for _ in range({clients})]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps({{'inside': inside, 'sizes': sizes}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds + 120)
    data = json.loads(out.stdout)
    inside = np.array(data["inside"])
    sizes = {int(k): v for k, v in data["sizes"].items()}
    n = sum(sizes.values())
    mean_batch = sum(k * v for k, v in sizes.items()) / n
    return (
        f"{n} requests; rows per core call (per request): mean {mean_batch:.1f}, max {max(sizes)}; "
        f"in-server queue + compute: p50 {np.percentile(inside, 50):.1f} ms, "
        f"p99 {np.percentile(inside, 99):.1f} ms"
    )


# ------------------------------------------------------------------ setup


def build_models(directory: Path) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge

    import mlserve

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, CHEAP_FEATURES))
    y = (X @ rng.normal(size=CHEAP_FEATURES) > 0).astype(np.int64)
    cheap = LogisticRegression().fit(X, y)
    Xh = rng.normal(size=(64, HEAVY_FEATURES))
    Yh = rng.normal(size=(64, HEAVY_OUTPUTS))
    heavy = Ridge(alpha=1.0).fit(Xh, Yh)
    Xf = rng.normal(size=(5000, CHEAP_FEATURES))
    yf = (Xf[:, 0] * Xf[:, 1] + Xf[:, 2] > 0).astype(np.int64)
    forest = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0).fit(Xf, yf)
    store = mlserve.ModelStore(directory / "store")
    for name, model in (("cheap", cheap), ("heavy", heavy), ("forest", forest)):
        with open(directory / f"{name}.pkl", "wb") as f:
            pickle.dump(model, f)
        store.publish(name, mlserve.convert(model), alias="production")
    return {"cheap": cheap, "heavy": heavy, "forest": forest}


def write_body(path: Path, n_features: int, rows: int, seed: int) -> Path:
    X = np.random.default_rng(seed).normal(size=(rows, n_features))
    path.write_text(json.dumps({"instances": X.tolist()}))
    return path


def time_full_batch(model: Any, rows: int) -> float:
    """Milliseconds of one mlserve predict on a batch of ``rows`` rows (median of 7)."""
    X = np.random.default_rng(3).normal(size=(rows, model.n_features_in_))
    times = []
    for _ in range(7):
        start = time.perf_counter()
        model.predict(X)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    versions = []
    for mod in ("flask", "gunicorn", "sklearn", "numpy", "mlserve"):
        try:
            import importlib.metadata as md

            versions.append(f"{mod} {md.version('scikit-learn' if mod == 'sklearn' else mod)}")
        except Exception:
            pass
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return (
        f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python "
        f"{platform.python_version()}; {', '.join(versions)}; {wrk.strip()}; "
        f"load average at start {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )


# -------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of wrk before each run")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the grid; medians reported")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="2 s runs, 0.5 s warm-up")
    parser.add_argument("--servers", default="abcd")
    parser.add_argument("--cases", default="cheap:1,cheap:8,cheap:64,heavy:1,heavy:8,heavy:64,cheap1000:8,forest:1,forest:64")
    parser.add_argument("--mlserve-config", default=None, help="extra MLSERVE_* keys for (c), (d) as JSON")
    parser.add_argument("--profile", default=None, help="SERVER:CASE[,...] (e.g. c:heavy:64): py-spy the worker (first round)")
    parser.add_argument("--json", default=None, help="write the raw results here")
    parser.add_argument(
        "--baseline", default=None, type=Path,
        help="checkout (with its built extension) that server (g) runs, e.g. main before a change",
    )  # fmt: skip
    args = parser.parse_args()
    unknown = [k for k in args.servers if k not in SERVERS]
    if unknown:
        sys.exit(f"unknown server {unknown[0]!r}; the servers are {', '.join(SERVERS)}")
    if "g" in args.servers and args.baseline is None:
        sys.exit("server (g) runs the --baseline checkout: give --baseline PATH")
    if args.baseline is not None and not (args.baseline / "mlserve" / "__init__.py").is_file():
        sys.exit(f"--baseline {args.baseline}: no mlserve package there")
    if args.quick:
        args.duration, args.warmup = 2.0, 1.0
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")

    directory = Path(tempfile.mkdtemp(prefix="mlserve-bench-http-"))
    lua = directory / "post.lua"
    lua.write_text(WRK_LUA)
    print(f"machine: {machine()}")
    models = build_models(directory)
    import mlserve

    heavy_mls = mlserve.convert(models["heavy"])
    full_batch_ms = time_full_batch(heavy_mls, args.max_batch)
    one_row_ms = time_full_batch(heavy_mls, 1)
    print(f"heavy model compute: 1 row {one_row_ms:.2f} ms, {args.max_batch} rows {full_batch_ms:.2f} ms")
    bodies = {
        "cheap": (write_body(directory / "cheap1.json", CHEAP_FEATURES, 1, 1), 1, "cheap"),
        "heavy": (write_body(directory / "heavy1.json", HEAVY_FEATURES, 1, 2), 1, "heavy"),
        "cheap1000": (write_body(directory / "cheap1000.json", CHEAP_FEATURES, 1000, 4), 1000, "cheap"),
        "forest": (write_body(directory / "forest1.json", CHEAP_FEATURES, 1, 5), 1, "forest"),
    }
    env = {
        "BENCH_DIR": str(directory),
        "BENCH_STORE": str(directory / "store"),
        "BENCH_MAX_BATCH": str(args.max_batch),
        "BENCH_MAX_DELAY_MS": str(args.max_delay_ms),
        "MLSERVE_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",  # scikit-learn's BLAS: one thread per call, as mlserve
        "OMP_NUM_THREADS": "1",
    }
    if args.mlserve_config:
        env["BENCH_MLSERVE_CONFIG"] = args.mlserve_config
    print(
        f"servers: gunicorn gthread, {args.workers} worker(s) x {args.threads} threads, "
        f"keep-alive; (e), (g): mlserve serve with its defaults, --workers/--threads as these; "
        f"(f): (a) on BufferingThreadWorker; batching (d): max_batch_size {args.max_batch}, max_delay_ms {args.max_delay_ms}; "
        f"wrk {args.duration:g} s per run after {args.warmup:g} s warm-up, {args.rounds} round(s)"
    )
    servers: dict[str, Gunicorn] = {}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        for kind in args.servers:
            code = args.baseline if kind == "g" else HERE.parent
            servers[kind] = Gunicorn(kind, env, args.workers, args.threads, code.resolve())
        cases = [c.split(":") for c in args.cases.split(",")]
        profiles = set(args.profile.split(",")) if args.profile else set()
        for round_ in range(args.rounds):
            for case_index, (body_name, conc) in enumerate(cases):
                body, rows, model = bodies[body_name]
                case = f"{body_name}:{conc}"
                order = list(args.servers)
                shift = (round_ + case_index) % len(order)
                order = order[shift:] + order[:shift]
                for kind in order:
                    url = f"{servers[kind].url}/v1/models/{model}:predict"
                    wait_ready(url, body)
                    if args.warmup > 0:
                        run_wrk(url, body, int(conc), args.warmup, lua)
                    profile = None
                    if f"{kind}:{case}" in profiles and round_ == 0:
                        profile = start_profile(servers[kind], directory, args.duration, case)
                    cpu0 = servers[kind].cpu_seconds()
                    r = run_wrk(url, body, int(conc), args.duration, lua)
                    cpu = servers[kind].cpu_seconds() - cpu0
                    r["cpu_ms_per_req"] = 1000.0 * cpu / max(1, r["requests"])
                    r["cpu_util"] = cpu / (r["duration_us"] / 1e6)
                    if profile is not None:
                        finish_profile(profile)
                    r["rows_per_s"] = r["rps"] * rows
                    results.setdefault((kind, case), []).append(r)
                    print(
                        f"  {case:14s} ({kind}) {r['rps']:9.0f} req/s {r['rows_per_s']:10.0f} rows/s "
                        f"p50 {r['p50_us'] / 1000:7.2f} ms p99 {r['p99_us'] / 1000:7.2f} ms "
                        f"server CPU {r['cpu_ms_per_req']:.3f} ms/req ({r['cpu_util']:.2f} cores)"
                        + (f"  errors {r['errors']}" if r["errors"] else ""),
                        flush=True,
                    )
        if "d" in servers and "heavy:64" in args.cases:
            body, _, _ = bodies["heavy"]
            probe = server_timing_probe(
                f"{servers['d'].url}/v1/models/heavy:predict", body, 64, args.duration
            )
            print(f"server-timing probe, (d) heavy with 64 Python clients: {probe}")
    finally:
        for server in servers.values():
            server.stop()
        for kind in SERVE_KINDS:
            if kind in servers:
                print(f"({kind}) wrote {servers[kind].access_lines} access-log lines on stderr")
    summary = summarize(results, args, full_batch_ms, one_row_ms)
    print(summary)
    if args.json:
        Path(args.json).write_text(
            json.dumps({f"{k}|{c}": v for (k, c), v in results.items()}, indent=1)
        )
    shutil.rmtree(directory, ignore_errors=True)


def start_profile(server: Gunicorn, directory: Path, seconds: float, case: str) -> Any:
    pid = server.workers[-1]
    out = directory / f"profile-{server.kind}-{case.replace(':', '-')}.txt"
    process = subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--duration", str(int(max(1, seconds))),
         "--format", "raw", "--rate", "200", "--gil", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return process, out


def finish_profile(profile: Any) -> None:
    process, out = profile
    process.wait(60)
    if not out.exists():
        print("py-spy produced no profile:", process.stderr.read() if process.stderr else "")
        return
    self_counts: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        leaf = stack.split(";")[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + n
    print(f"py-spy of {out.name} (--gil: the thread holding the GIL): {total} samples; "
          "top frames by self time:")  # fmt: skip
    for leaf, n in sorted(self_counts.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {100 * n / total:5.1f}%  {leaf}")
    dest = Path(tempfile.gettempdir()) / f"mlserve-bench-http-{out.name}"
    shutil.copy(out, dest)
    print(f"  (collapsed stacks saved to {dest})")


def summarize(results: dict, args: Any, full_batch_ms: float, one_row_ms: float) -> str:
    def med(kind: str, case: str, key: str) -> float | None:
        runs = results.get((kind, case))
        if not runs:
            return None
        return float(np.median([r[key] for r in runs]))

    lines = [
        "",
        "| case | server | req/s | rows/s | p50 ms | p99 ms | server CPU ms/req | rows/s vs (b) | req/s vs (a) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in args.cases.split(","):
        for kind in args.servers:
            rps = med(kind, case, "rps")
            if rps is None:
                continue
            rows = med(kind, case, "rows_per_s")
            base_b = med("b", case, "rows_per_s")
            base_a = med("a", case, "rps")
            name, conc = case.split(":")
            label = f"{name.replace('cheap1000', 'cheap, 1000 rows')} @{conc}"
            lines.append(
                f"| {label} | ({kind}) {SERVERS[kind]} | {rps:.0f} | {rows:.0f} | "
                f"{med(kind, case, 'p50_us') / 1000:.2f} | {med(kind, case, 'p99_us') / 1000:.2f} | "
                f"{med(kind, case, 'cpu_ms_per_req'):.3f} | "
                + (f"{rows / base_b:.2f}x" if base_b else "-")
                + " | "
                + (f"{rps / base_a:.2f}" if base_a and not name.startswith("cheap1000") else "-")
                + " |"
            )
    lines.append("")
    lines.append("Targets:")

    def ratio(k1: str, k2: str, case: str, key: str) -> float | None:
        x, y = med(k1, case, key), med(k2, case, key)
        return x / y if x and y else None

    def num(x: float | None, spec: str = ".2f") -> str:
        return "n/a" if x is None else format(x, spec)

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    for conc in ("1", "8", "64"):
        r_ca = ratio("c", "a", f"cheap:{conc}", "rps")
        r_cb = ratio("c", "b", f"cheap:{conc}", "rps")
        if r_ca is None and r_cb is None:
            continue
        cpu_ac = ratio("a", "c", f"cheap:{conc}", "cpu_ms_per_req")
        lines.append(
            f"- cheap @{conc}: (c)/(a) requests/s = {num(r_ca)} (target >= 0.85: "
            f"{verdict(None if r_ca is None else r_ca >= 0.85)}); (c)/(b) = {num(r_cb)} "
            f"(target > 1: {verdict(None if r_cb is None else r_cb > 1)}); requests per server "
            f"CPU-second (c)/(a) = {num(cpu_ac)}"
        )
    for conc in ("1", "8", "64"):
        case = f"cheap:{conc}"
        r_ea, r_ef = ratio("e", "a", case, "rps"), ratio("e", "f", case, "rps")
        r_ga, r_eg = ratio("g", "a", case, "rps"), ratio("e", "g", case, "rps")
        if r_ea is None and r_ef is None and r_ga is None:
            continue
        lines.append(
            f"- cheap @{conc}, defaults on: (e)/(a) requests/s = {num(r_ea)} (target >= 0.85: "
            f"{verdict(None if r_ea is None else r_ea >= 0.85)}); (e)/(f) (same worker class) = "
            f"{num(r_ef)}; baseline (g)/(a) = {num(r_ga)}; (e)/(g) = {num(r_eg)}; requests per "
            f"server CPU-second (e)/(a) = {num(ratio('a', 'e', case, 'cpu_ms_per_req'))}"
        )
    r_dc = ratio("d", "c", "heavy:64", "rows_per_s")
    if r_dc is not None:
        cpu_cd = ratio("c", "d", "heavy:64", "cpu_ms_per_req")
        r_da = ratio("d", "a", "heavy:64", "rows_per_s")
        r_ac = ratio("a", "c", "heavy:64", "rows_per_s")
        lines.append(
            f"- heavy @64: rows per server CPU-second (d)/(c) = {num(cpu_cd)}; "
            f"(d) reaches {num(r_da)} of the bare-Flask request rate (a) with the same bodies"
        )
        p99 = (med("d", "heavy:64", "p99_us") or 0.0) / 1000
        bound = args.max_delay_ms + 3 * full_batch_ms
        lines.append(
            f"- heavy @64: (d)/(c) rows/s = {r_dc:.2f} (target >= 3: {verdict(r_dc >= 3)}); "
            f"p99 of (d) {p99:.1f} ms vs max_delay_ms + 3 x full-batch compute = "
            f"{args.max_delay_ms:g} + 3 x {full_batch_ms:.1f} = {bound:.1f} ms "
            f"({verdict(p99 <= bound)})"
        )
        # Two ceilings measured in the same run: (d) cannot serve more requests
        # than the bare route (a) with the same bodies, and with 64 clients in a
        # closed loop the mean latency is 64 / throughput (Little's law).
        rps_a = med("a", "heavy:64", "rps")
        if r_ac is not None and rps_a:
            lines.append(
                f"- heavy @64 ceilings in this run: (a)/(c) = {r_ac:.2f}, so (d)/(c) cannot exceed "
                f"{r_ac:.2f}; a p99 within {bound:.1f} ms needs a mean latency below it, i.e. more "
                f"than 64 / {bound / 1000:.4f} s = {64000 / bound:.0f} req/s, against (a)'s {rps_a:.0f}"
            )
    for conc in ("1", "8", "64"):
        r_cb = ratio("c", "b", f"forest:{conc}", "rows_per_s")
        if r_cb is not None:
            r_dc = ratio("d", "c", f"forest:{conc}", "rows_per_s")
            lines.append(
                f"- forest @{conc} (no target): (c)/(b) rows/s = {r_cb:.2f}"
                + (f"; (d)/(c) = {r_dc:.2f}" if r_dc is not None else "")
            )
    r_big = ratio("c", "b", "cheap1000:8", "rows_per_s")
    if r_big is not None:
        lines.append(
            f"- 1000-row bodies @8: (c)/(b) rows/s = {r_big:.2f} (target >= 5: {verdict(r_big >= 5)})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
