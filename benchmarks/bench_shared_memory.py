"""gunicorn workers share one copy of a memory-mapped model's weights.

    python benchmarks/bench_shared_memory.py            # a 500 MB model, ~1-2 min
    python benchmarks/bench_shared_memory.py --quick    # a 50 MB model

A LinearRegression of 5000 features x N outputs (float64; N = 12500 for 500 MB)
is converted from scikit-learn, saved, published to a store and served by a real
``mlserve serve --workers 4``; concurrent predicts run until every worker has
touched all of the weights (its Rss holds them). Then /proc/<pid>/smaps_rollup of
the master and of every worker gives Rss, Pss and private memory. The same server
with a tiny model (5000 x 1) is the baseline, so

    model's cost per extra worker = (sum Pss, big - sum Pss, tiny - model size) / 3

which is 0 when the four workers share one copy (each worker's Pss then holds a
quarter of the file) and the model size when each worker has its own. Target:
< 5% of the model size.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import fmt_bytes, load_average, machine_lines, markdown_table

N_FEATURES = 5000
WORKERS = 4
MIB = 1024 * 1024


def make_model(n_outputs: int):
    """A converted scikit-learn LinearRegression with n_outputs x N_FEATURES weights."""
    from sklearn.linear_model import LinearRegression

    import mlserve

    rng = np.random.default_rng(0)
    sk = LinearRegression()
    sk.coef_ = rng.normal(size=(n_outputs, N_FEATURES)) if n_outputs > 1 else rng.normal(
        size=N_FEATURES
    )
    sk.intercept_ = rng.normal(size=n_outputs) if n_outputs > 1 else 0.5
    sk.n_features_in_ = N_FEATURES
    return mlserve.convert(sk)


def smaps_rollup(pid: int) -> dict[str, int]:
    """Bytes of Rss, Pss, Private_Clean + Private_Dirty of a process."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                values[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return {
        "rss": values["Rss"],
        "pss": values["Pss"],
        "private": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
    }


class Served:
    """``mlserve serve STORE --workers 4`` on an ephemeral port (stopped by stop())."""

    def __init__(self, store_dir: str):
        cmd = [sys.executable, "-m", "mlserve.cli", "serve", store_dir, "--host", "127.0.0.1",
               "--port", "0", "--workers", str(WORKERS), "--threads", "2",
               "--no-access-log", "--no-batching"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
        self.port = None
        found = threading.Event()

        def read():
            for line in self.proc.stderr:
                m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(120):
            self.stop()
            raise RuntimeError("the server did not start")
        import requests

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/v2/health/ready", timeout=10).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the server did not get ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        import psutil

        return sorted(c.pid for c in psutil.Process(self.proc.pid).children())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def measure(store_dir: str, model_bytes: int, touch: bool) -> dict:
    """Memory of the master and workers after predicts reached every worker."""
    import requests

    server = Served(store_dir)
    try:
        row = np.random.default_rng(1).normal(size=N_FEATURES).tolist()
        body = {"instances": [row]}
        pids = server.workers()
        assert len(pids) == WORKERS, pids

        def hammer(n):
            for _ in range(n):
                with requests.Session() as s:  # a new connection: any worker may answer
                    r = s.post(f"{server.url}/predict/m", json=body, timeout=120)
                    r.raise_for_status()

        deadline = time.monotonic() + 180
        while True:
            threads = [threading.Thread(target=hammer, args=(2,)) for _ in range(2 * WORKERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rss = [smaps_rollup(p)["rss"] for p in pids]
            if not touch or min(rss) > 0.9 * model_bytes or time.monotonic() > deadline:
                break
        workers = [smaps_rollup(p) for p in pids]
        master = smaps_rollup(server.proc.pid)
        return {"workers": workers, "master": master,
                "all_touched": min(w["rss"] for w in workers) > 0.9 * model_bytes}  # fmt: skip
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 50 MB model")
    args = parser.parse_args()
    import mlserve

    n_outputs = 1250 if args.quick else 12500
    with tempfile.TemporaryDirectory(prefix="mlserve-shm-") as tmp:
        results = {}
        for label, outputs in (("tiny", 1), ("big", n_outputs)):
            model = make_model(outputs)
            path = os.path.join(tmp, f"{label}.mls")
            mlserve.save(model, path)
            del model
            store_dir = os.path.join(tmp, f"store-{label}")
            mlserve.ModelStore(store_dir).publish("m", path, alias="production")
            size = os.path.getsize(path)
            os.unlink(path)
            results[label] = (size, measure(store_dir, size, touch=label == "big"))
    size, big = results["big"]
    tiny_size, tiny = results["tiny"]

    def total_pss(r):
        return r["master"]["pss"] + sum(w["pss"] for w in r["workers"])

    rows = []
    for label, (msize, r) in (("tiny", results["tiny"]), ("big", results["big"])):
        w = r["workers"]
        rows.append([
            f"{label} ({fmt_bytes(msize)})",
            fmt_bytes(np.median([x["rss"] for x in w])),
            fmt_bytes(np.median([x["pss"] for x in w])),
            fmt_bytes(np.median([x["private"] for x in w])),
            fmt_bytes(r["master"]["pss"]),
            fmt_bytes(total_pss(r)),
        ])  # fmt: skip
    extra = (total_pss(big) - total_pss(tiny) - (size - tiny_size)) / (WORKERS - 1)
    share = extra / size
    print("\n".join(machine_lines(["numpy", "gunicorn", "scikit-learn"])))
    print(f"load average {load_average()}; every big-model worker touched all weights: "
          f"{big['all_touched']}")  # fmt: skip
    print()
    print(markdown_table(
        ["model", "Rss / worker", "Pss / worker", "private / worker", "master Pss",
         f"sum Pss ({WORKERS} workers + master)"],
        rows,
    ))  # fmt: skip
    print()
    verdict = "met" if share < 0.05 and big["all_touched"] else "MISSED"
    shown = ("-" if extra < 0 else "") + fmt_bytes(abs(extra))
    print(f"model's Pss per extra worker: {shown} = {share:.2%} of the model "
          f"({fmt_bytes(size)}); target < 5%: {verdict}")  # fmt: skip
    print(f"(a private copy per worker would be {fmt_bytes(size)} = 100% per extra worker)")


if __name__ == "__main__":
    main()
