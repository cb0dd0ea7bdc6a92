"""Slow clients and the fast path: gunicorn's gthread worker vs mlserve's BufferingThreadWorker.

Two gunicorn servers of the same app (``mlserve.serving.app.create_app``, a
LogisticRegression on 20 features), the same settings as ``mlserve serve``'s
defaults (1 worker x 4 threads, keep-alive 5 s), loopback only; they differ in
the worker class alone:

  old   gunicorn.workers.gthread.ThreadWorker (what ``mlserve serve`` ran before)
  new   mlserve.serving.worker.BufferingThreadWorker (what it runs now)

1. Fast path, with wrk: requests/s of single-row V1 predicts and of
   ``GET /v2/health/ready`` at 8 connections. Each round measures old, new,
   new, old (new, old, old, new the next round), so drift and the order of
   the runs affect both alike; a round's ratio is new's total over old's.
2. Slow clients: 64 connections (32 trickle their headers, 32 send full
   headers and trickle the body, a byte every 0.5 s); meanwhile a client sends
   health checks, one after another (2 s timeout each) for --slow-seconds;
   p50 / p99 / max latency and the number that timed out.

    python benchmarks/bench_slow_clients.py              # 3 rounds of 3 s runs, ~2 min
    python benchmarks/bench_slow_clients.py --rounds 1 --duration 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_http import WRK_LUA, machine, run_wrk, write_body  # noqa: E402

WORKERS = {
    "old": "gthread",
    "new": "mlserve.serving.worker.BufferingThreadWorker",
}
FEATURES = 20
SLOW_CONNECTIONS = 64
TRICKLE_PERIOD = 0.5
PROBE_TIMEOUT = 2.0
GET_LUA = WRK_LUA[WRK_LUA.index("function done") :]


class Server:
    """gunicorn with ``worker`` serving the store, on an ephemeral 127.0.0.1 port."""

    def __init__(self, worker: str, store: Path, threads: int, config: dict[str, Any]) -> None:
        keywords = ", ".join(f"{key}={value!r}" for key, value in config.items())
        command = [
            sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0",
            "--worker-class", worker, "--workers", "1", "--threads", str(threads),
            "--keep-alive", "5", "--timeout", "60", "--no-control-socket",
            f"mlserve.serving.app:create_app({str(store)!r}, {keywords})",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "MLSERVE_NUM_THREADS": "1"},
        )  # fmt: skip
        self.port = None
        self.worker_pid: int | None = None
        self.log: list[str] = []
        booted = threading.Event()

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                if len(self.log) < 200:
                    self.log.append(line)
                match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
                if match:
                    self.port = int(match.group(1))
                match = re.search(r"Booting worker with pid: (\d+)", line)
                if match:
                    self.worker_pid = int(match.group(1))
                    booted.set()

        threading.Thread(target=read, daemon=True).start()
        if not booted.wait(60):
            self.stop()
            raise RuntimeError(f"{worker} did not start:\n" + "".join(self.log))
        deadline = time.monotonic() + 60
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{worker} did not get ready:\n" + "".join(self.log))
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker process so far."""
        fields = Path(f"/proc/{self.worker_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _ready(self) -> bool:
        return health_latency(self.port) != float("inf")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def health_latency(port: int) -> float:
    """Seconds for one GET /v2/health/ready on a new connection; inf when it times out."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    return float("inf")
                answer += chunk
    except OSError:
        return float("inf")
    if not answer.startswith(b"HTTP/1.1 200"):
        return float("inf")
    return time.monotonic() - start


def slow_client_probe(server: Server, seconds: float) -> dict[str, Any]:
    """Health-check latency while SLOW_CONNECTIONS connections trickle bytes."""
    head = b"POST /predict/cheap HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    openings = [b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Slow"] * (SLOW_CONNECTIONS // 2)
    openings += [head] * (SLOW_CONNECTIONS - len(openings))
    sockets = []
    for opening in openings:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(opening)
        sockets.append(sock)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(TRICKLE_PERIOD):
            for sock in sockets:
                try:
                    sock.send(b" ")
                except OSError:
                    pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    latencies = []
    try:
        time.sleep(1.0)  # all accepted and trickling
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            latencies.append(health_latency(server.port))
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(5)
        for sock in sockets:
            sock.close()
    done = np.array([x for x in latencies if x != float("inf")]) * 1000
    return {
        "probes": len(latencies),
        "timeouts": len(latencies) - len(done),
        "p50_ms": float(np.percentile(done, 50)) if len(done) else None,
        "p99_ms": float(np.percentile(done, 99)) if len(done) else None,
        "max_ms": float(done.max()) if len(done) else None,
    }


def build_store(directory: Path) -> Path:
    import mlserve

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, FEATURES))
    y = (X @ rng.normal(size=FEATURES) > 0).astype(np.int64)
    store = mlserve.ModelStore(directory / "store")
    store.publish("cheap", mlserve.LogisticRegression().fit(X, y), alias="production")
    return directory / "store"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads (serve's default)")
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--cases", default="predict,health")
    parser.add_argument(
        "--app-config", default="{}", help="MLSERVE_* keys for create_app as JSON, e.g. "
        '\'{"MLSERVE_BATCHING": false}\''
    )
    parser.add_argument("--json", default=None, help="write the raw results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    directory = Path(tempfile.mkdtemp(prefix="mlserve-bench-slow-"))
    post_lua = directory / "post.lua"
    post_lua.write_text(WRK_LUA)
    get_lua = directory / "get.lua"
    get_lua.write_text(GET_LUA)
    body = write_body(directory / "one_row.json", FEATURES, 1, 1)
    print(f"machine: {machine()}")
    print(
        f"servers: gunicorn, 1 worker x {args.threads} threads, keep-alive 5 s; wrk "
        f"{args.connections} connections, {args.duration:g} s per run, {args.rounds} round(s)"
    )
    store = build_store(directory)
    config = {"MLSERVE_RELOAD_INTERVAL": 0, **json.loads(args.app_config)}
    print(f"app config: {config}")
    servers = {name: Server(worker, store, args.threads, config) for name, worker in WORKERS.items()}
    rps: dict[tuple[str, str], list[float]] = {}
    cpu_us: dict[tuple[str, str], list[float]] = {}  # worker CPU time per request
    try:
        known = {
            "predict": ("/v1/models/cheap:predict", post_lua),
            "health": ("/v2/health/ready", get_lua),
        }
        cases = {name: known[name] for name in args.cases.split(",")}
        for round_ in range(args.rounds):
            for case_index, (case, (path, lua)) in enumerate(cases.items()):
                pair = ["old", "new"] if (round_ + case_index) % 2 == 0 else ["new", "old"]
                runs: dict[str, list[float]] = {"old": [], "new": []}
                cpu: dict[str, list[float]] = {"old": [], "new": []}
                for name in pair + pair[::-1]:
                    url = servers[name].url + path
                    run_wrk(url, body, args.connections, 1, lua)  # warm-up
                    cpu_before = servers[name].cpu_seconds()
                    result = run_wrk(url, body, args.connections, args.duration, lua)
                    cpu[name].append((servers[name].cpu_seconds() - cpu_before) / result["requests"])
                    if result["errors"]:
                        raise RuntimeError(f"{name} {case}: {result['errors']} wrk errors")
                    runs[name].append(result["rps"])
                    print(f"round {round_ + 1} {case:8s} {name}: {result['rps']:8.0f} req/s")
                for name, values in runs.items():
                    rps.setdefault((case, name), []).append(float(np.mean(values)))
                    cpu_us.setdefault((case, name), []).append(float(np.mean(cpu[name])) * 1e6)
        slow = {name: slow_client_probe(server, args.slow_seconds) for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()

    print("\nfast path (requests/s, median of rounds; ratio new/old per round, then its median)")
    print(
        "| case | old req/s | new req/s | new/old per round | median new/old "
        "| old CPU us/req | new CPU us/req |"
    )
    print("|---|---:|---:|---|---:|---:|---:|")
    for case in cases:
        old, new = rps[(case, "old")], rps[(case, "new")]
        ratios = [n / o for n, o in zip(new, old)]
        print(
            f"| {case} | {np.median(old):.0f} | {np.median(new):.0f} | "
            f"{', '.join(f'{r:.2f}' for r in ratios)} | {np.median(ratios):.2f} "
            f"| {np.median(cpu_us[(case, 'old')]):.0f} | {np.median(cpu_us[(case, 'new')]):.0f} |"
        )
    print(
        f"\n{SLOW_CONNECTIONS} slow connections; health checks one after another for "
        f"{args.slow_seconds:g} s ({PROBE_TIMEOUT:g} s timeout each)"
    )
    print("| worker | probes | timed out | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in slow.items():
        cells = [f"{r[k]:.1f}" if r[k] is not None else "-" for k in ("p50_ms", "p99_ms", "max_ms")]
        print(f"| {name} | {r['probes']} | {r['timeouts']} | {' | '.join(cells)} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rps": {f"{c}:{n}": v for (c, n), v in rps.items()},
                    "cpu_us_per_request": {f"{c}:{n}": v for (c, n), v in cpu_us.items()},
                    "slow": slow,
                },
                indent=2,
            )
        )
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
