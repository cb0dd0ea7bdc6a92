"""gRPC vs HTTP: the KServe V2 protocol both ways, on one server and one model.

    python benchmarks/bench_grpc.py            # ~20 s
    python benchmarks/bench_grpc.py --quick    # smoke run

One ``mlserve serve STORE --grpc-port P`` (1 worker, 4 threads, defaults
otherwise: batching, metrics, access log), one model: a LogisticRegression on
20 features fitted by scikit-learn and converted (``mlserve.convert``), so
both protocols run the same predict path. One client, one request at a time
(latency, not throughput under load), at 1 and 1000 rows:

* grpc: ``tritonclient.grpc`` ``infer`` with an FP64 input (raw_input_contents,
  answered in raw_output_contents);
* http: ``tritonclient.http`` ``infer`` with binary tensors both ways (the V2
  binary tensor extension: a JSON header, then the raw bytes).

Both ask for the labels and the probabilities; the answers are checked equal
to each other and to scikit-learn's before timing. Medians of interleaved
samples (benchmarks/_common.py), so a busy spell on a shared machine hits both.
Ratio > 1: gRPC faster.
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
from _common import (
    fmt_rate,
    fmt_ratio,
    fmt_time,
    load_average,
    machine_lines,
    markdown_table,
    measure_interleaved,
)

FEATURES = 20
MODEL = "lr"
OUTPUTS = ("predict", "predict_proba")
START_TIMEOUT = 60.0


def publish(store_dir: str) -> object:
    from sklearn.linear_model import LogisticRegression

    import mlserve

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, FEATURES))
    y = (X @ rng.normal(size=FEATURES) > 0).astype(np.int64)
    reference = LogisticRegression().fit(X, y)
    mlserve.ModelStore(store_dir).publish(MODEL, mlserve.convert(reference), alias="production")
    return reference


class Server:
    """``mlserve serve`` on free ports; the HTTP and gRPC ports read from its log."""

    def __init__(self, store_dir: str) -> None:
        command = [
            sys.executable, "-m", "mlserve.cli", "serve", store_dir, "--host", "127.0.0.1",
            "--port", "0", "--grpc-port", "0", "--workers", "1", "--threads", "4",
            "--reload-interval", "0",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.http_port = self.grpc_port = None
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while self.http_port is None or self.grpc_port is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start:\n" + "".join(self.log))
            time.sleep(0.05)

    def _read(self) -> None:
        for line in self.process.stderr:
            if len(self.log) < 200:
                self.log.append(line)
            http = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            grpc = re.search(r"GRPCInferenceService\) listening at 127\.0\.0\.1:(\d+)", line)
            if http:
                self.http_port = int(http.group(1))
            if grpc:
                self.grpc_port = int(grpc.group(1))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short samples (a smoke run)")
    args = parser.parse_args()
    budget, repeats = (0.2, 5) if args.quick else (2.0, 15)

    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    rows_cases = (1, 1000)
    results = []
    with tempfile.TemporaryDirectory() as store_dir:
        reference = publish(store_dir)
        server = Server(store_dir)
        try:
            grpc_client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
            http_client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
            for (rows,) in [(n,) for n in rows_cases]:
                X = np.random.default_rng(rows).normal(size=(rows, FEATURES))

                def grpc_call(X=X):
                    tensor = grpcclient.InferInput("input", list(X.shape), "FP64")
                    tensor.set_data_from_numpy(X)
                    wanted = [grpcclient.InferRequestedOutput(name) for name in OUTPUTS]
                    result = grpc_client.infer(MODEL, [tensor], outputs=wanted)
                    return result.as_numpy("predict"), result.as_numpy("predict_proba")

                def http_call(X=X):
                    tensor = httpclient.InferInput("input", list(X.shape), "FP64")
                    tensor.set_data_from_numpy(X, binary_data=True)
                    wanted = [
                        httpclient.InferRequestedOutput(name, binary_data=True) for name in OUTPUTS
                    ]
                    result = http_client.infer(MODEL, [tensor], outputs=wanted)
                    return result.as_numpy("predict"), result.as_numpy("predict_proba")

                for call in (grpc_call, http_call):  # the same answers, and scikit-learn's
                    labels, proba = call()
                    np.testing.assert_array_equal(labels, reference.predict(X))
                    np.testing.assert_allclose(proba, reference.predict_proba(X), rtol=1e-9)
                timed = measure_interleaved(
                    {"grpc": "grpc_call()", "http": "http_call()"},
                    {"grpc_call": grpc_call, "http_call": http_call},
                    budget_s=budget,
                    repeats=repeats,
                )
                results.append((rows, timed["grpc"].median_ns, timed["http"].median_ns))
            grpc_client.close()
            http_client.close()
        finally:
            server.stop()

    print("## gRPC vs HTTP V2 binary (benchmarks/bench_grpc.py, issue 17 part 7)\n")
    print(
        f"One `mlserve serve --grpc-port` (1 worker, 4 threads), LogisticRegression {FEATURES} "
        "features converted from scikit-learn, labels + probabilities, one client, one request "
        "at a time; tritonclient.grpc (raw contents) vs tritonclient.http (binary tensors); "
        "medians of interleaved samples. Ratio > 1: gRPC faster.\n"
    )
    table = []
    for rows, grpc_ns, http_ns in results:
        table.append([
            rows, fmt_time(grpc_ns), fmt_time(http_ns),
            fmt_rate(rows * 1e9 / grpc_ns), fmt_rate(rows * 1e9 / http_ns),
            fmt_ratio(http_ns / grpc_ns),
        ])  # fmt: skip
    print(markdown_table(
        ["rows", "gRPC latency", "HTTP latency", "gRPC rows/s", "HTTP rows/s", "HTTP / gRPC"],
        table,
    ))  # fmt: skip
    print()
    print(f"load average {load_average()}")
    for line in machine_lines(["numpy", "grpcio", "protobuf", "tritonclient", "scikit-learn"]):
        print(line)


if __name__ == "__main__":
    main()
