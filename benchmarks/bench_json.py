"""JSON codec: mlserve._core.json_decode / json_encode vs the stdlib json + NumPy.

    python benchmarks/bench_json.py            # a minute or so
    python benchmarks/bench_json.py --quick    # smoke run

Decoding: a predict body ``{"instances": X.tolist()}`` (json.dumps of
standard-normal float64, so 16-17 significant digits per number) parsed into
a float64 array of rows:

* mlserve: ``json_decode(body)["instances"]`` (one C pass, the array built
  from the packed buffer);
* reference: ``np.asarray(json.loads(body)["instances"], dtype=np.float64)``;
* for scale: ``json.loads(body)`` alone (no array).

Encoding: a predictions array ``Y`` to the bytes of a JSON array:

* mlserve: ``json_encode(Y)``;
* reference: ``json.dumps(Y.tolist()).encode()`` (the same bytes: checked).

Shapes: 1 x 20 and 1000 x 20 (LogisticRegression rows), 64 x 2048 (the heavy
Ridge model's rows), 1000 x 1024 outputs (its predictions). Every result is
checked against the reference before it is timed. Times are medians of
interleaved samples (benchmarks/_common.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    fmt_bytes,
    fmt_ratio,
    fmt_time,
    load_average,
    machine_lines,
    markdown_table,
    measure_interleaved,
    print_section,
)

from mlserve._core import json_decode, json_encode  # noqa: E402

DECODE_SHAPES = [(1, 20), (1000, 20), (64, 2048)]
ENCODE_SHAPES = [(1, 20), (1000, 20), (1000, 1024)]


def bench_decode(rows, cols, rng, budget_s, repeats):
    X = rng.standard_normal((rows, cols))
    body = json.dumps({"instances": X.tolist()}).encode()
    got = json_decode(body)["instances"]
    assert got.dtype == np.float64 and got.tobytes() == X.tobytes()
    ns = {"json_decode": json_decode, "json": json, "np": np, "body": body}
    m = measure_interleaved(
        {
            "mlserve": 'json_decode(body)["instances"]',
            "json+numpy": 'np.asarray(json.loads(body)["instances"], dtype=np.float64)',
            "json.loads": "json.loads(body)",
        },
        ns,
        budget_s=budget_s,
        repeats=repeats,
    )
    return len(body), m


def bench_encode(rows, cols, rng, budget_s, repeats):
    Y = rng.standard_normal((rows, cols))
    ref = json.dumps(Y.tolist()).encode()
    assert json_encode(Y) == ref
    ns = {"json_encode": json_encode, "json": json, "Y": Y}
    m = measure_interleaved(
        {"mlserve": "json_encode(Y)", "json+tolist": "json.dumps(Y.tolist()).encode()"},
        ns,
        budget_s=budget_s,
        repeats=repeats,
    )
    return len(ref), m


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    args = ap.parse_args(argv)
    budget_s, repeats = (0.2, 5) if args.quick else (1.5, 11)
    rng = np.random.default_rng(0)

    print_section("machine")
    for line in machine_lines(["numpy"]):
        print(line)
    print(f"load average before: {load_average()}")

    print_section("decode: body bytes -> float64 rows")
    rows = []
    for r, c in DECODE_SHAPES:
        size, m = bench_decode(r, c, rng, budget_s, repeats)
        ours, ref, loads = m["mlserve"].median_ns, m["json+numpy"].median_ns, m["json.loads"].median_ns
        rows.append([f"{r} x {c}", fmt_bytes(size), fmt_time(ours), fmt_time(ref), fmt_ratio(ref / ours),
                     fmt_time(loads), fmt_ratio(loads / ours), f"{size / ours * 1e3:.0f} MB/s"])
    print(markdown_table(["rows x cols", "body", "mlserve", "json+numpy", "speed-up", "json.loads only",
                          "vs loads", "mlserve MB/s"], rows))

    print_section("encode: float64 array -> JSON bytes")
    rows = []
    for r, c in ENCODE_SHAPES:
        size, m = bench_encode(r, c, rng, budget_s, repeats)
        ours, ref = m["mlserve"].median_ns, m["json+tolist"].median_ns
        rows.append([f"{r} x {c}", fmt_bytes(size), fmt_time(ours), fmt_time(ref), fmt_ratio(ref / ours),
                     f"{r * c / ours * 1e3:.1f} M floats/s"])
    print(markdown_table(["rows x cols", "output", "mlserve", "json.dumps(tolist)", "speed-up", "mlserve rate"],
                         rows))
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
