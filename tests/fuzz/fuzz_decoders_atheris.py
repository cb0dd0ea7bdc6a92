"""atheris targets for every request decoder (V1/V2 JSON, V2 binary, npy, MLflow CSV/JSON, simple).

Run one target (tests/test_fuzz_decoders.py runs each for a few seconds;
scripts/fuzz runs them all for longer):

    python tests/fuzz/fuzz_decoders_atheris.py --target=v2_binary -max_total_time=60 [corpus_dir]

The property (tests/fuzz/decoders.py): for any input the decoder returns 2-D
numeric rows that predict answers, or raises a 4xx ServingError; any other
exception is a finding. Half of the inputs are raw bytes, half are built from
the fuzzer's bytes into nearly valid requests of the target's protocol (then
a few bytes are flipped), so the checks past the first parse are reached.
The Python decoders (mlserve.serving) are instrumented for coverage.
A crash input is saved as crash-<sha1>; keep it in tests/fuzz/corpus/<target>/
and it is replayed by the normal test suite.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402  (not instrumented: large and not under test)

import mlserve  # noqa: E402,F401

with atheris.instrument_imports(include=["mlserve.serving"]):
    import mlserve.serving.codecs  # noqa: F401
    import mlserve.serving.runtime  # noqa: F401

from decoders import FEATURES, TARGETS, check  # noqa: E402

DTYPES = ["FP64", "FP32", "FP16", "INT64", "INT32", "INT8", "UINT8", "BOOL", "BYTES", "FP8", ""]


def _number(fdp):
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 0:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 12))
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return None
    if kind == 3:
        return fdp.ConsumeUnicodeNoSurrogates(3)
    return fdp.ConsumeRegularFloat()


def _rows(fdp, max_rows=4, max_cols=6):
    rows, cols = fdp.ConsumeIntInRange(0, max_rows), fdp.ConsumeIntInRange(0, max_cols)
    ragged = fdp.ConsumeIntInRange(0, 9) == 0
    return [[_number(fdp) for _ in range(cols + (ragged and r == 0))] for r in range(rows)]


def _shape(fdp):
    return [fdp.ConsumeIntInRange(-1, 6) if fdp.ConsumeIntInRange(0, 20) else fdp.ConsumeInt(8)
            for _ in range(fdp.ConsumeIntInRange(0, 3))]  # fmt: skip


def _names(fdp):
    pool = FEATURES + ["x", "input", ""]
    return [pool[fdp.ConsumeIntInRange(0, len(pool) - 1)] for _ in range(fdp.ConsumeIntInRange(0, 5))]


def _v2_tensor(fdp, binary: list[bytes] | None):
    shape = _shape(fdp)
    tensor = {
        "name": (_names(fdp) or ["x"])[0] if fdp.ConsumeBool() else "input",
        "shape": shape,
        "datatype": DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)],
    }
    if binary is not None and fdp.ConsumeBool():
        raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 96))
        size = len(raw) if fdp.ConsumeIntInRange(0, 4) else fdp.ConsumeInt(6)
        tensor["parameters"] = {"binary_data_size": size}
        binary.append(raw)
    else:
        count = 1
        for s in shape:
            count *= max(s, 0) if isinstance(s, int) and s < 64 else 1
        data = [_number(fdp) for _ in range(min(count + fdp.ConsumeIntInRange(-1, 1), 64))]
        tensor["data"] = data if fdp.ConsumeIntInRange(0, 3) else [data]
    return tensor


def _structured(target: str, fdp) -> bytes:
    if target == "v1_json":
        if fdp.ConsumeBool():
            body = {"instances": _rows(fdp)}
        elif fdp.ConsumeBool():
            body = {"instances": [{n: _number(fdp) for n in _names(fdp)} for _ in range(2)]}
        else:
            body = {"inputs": {n: [_number(fdp) for _ in range(2)] for n in _names(fdp)}}
        if fdp.ConsumeIntInRange(0, 3) == 0:
            body["return"] = ["predict", "proba", "all", "x", 1][fdp.ConsumeIntInRange(0, 4)]
        return json.dumps(body).encode()
    if target in ("v2_json", "v2_binary"):
        binary = [] if target == "v2_binary" else None
        body = {"inputs": [_v2_tensor(fdp, binary) for _ in range(fdp.ConsumeIntInRange(0, 4))]}
        if fdp.ConsumeBool():
            body["outputs"] = [{"name": ["predict", "predict_proba", "x"][fdp.ConsumeIntInRange(0, 2)],
                                "parameters": {"binary_data": fdp.ConsumeBool()}}]  # fmt: skip
        header = json.dumps(body).encode()
        if binary is None:
            return header
        length = len(header) + fdp.ConsumeIntInRange(-2, 2) * (fdp.ConsumeIntInRange(0, 5) == 0)
        return struct.pack("<H", max(0, min(length, 65535))) + header + b"".join(binary)
    if target == "npy":
        dtype = ["<f8", "<f4", ">f8", "<i8", "|b1", "<u2", "<f2", "|O", "<c16", "<M8[s]"][
            fdp.ConsumeIntInRange(0, 9)
        ]
        shape = tuple(max(0, s) if isinstance(s, int) else 1 for s in _shape(fdp))
        header = "{'descr': %r, 'fortran_order': %s, 'shape': %r, }" % (
            dtype, fdp.ConsumeBool(), shape)
        if fdp.ConsumeIntInRange(0, 7) == 0:
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(_rows(fdp, 3, 5), dtype=object), allow_pickle=True)
            return buffer.getvalue()
        header = header.ljust(118 if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeIntInRange(0, 200)) + "\n"
        version = b"\x01\x00" if fdp.ConsumeIntInRange(0, 5) else b"\x02\x00"
        length = struct.pack("<H" if version == b"\x01\x00" else "<I", len(header))
        return b"\x93NUMPY" + version + length + header.encode("latin1") + fdp.ConsumeBytes(
            fdp.ConsumeIntInRange(0, 256))
    if target == "mlflow_csv":
        lines = [",".join(_names(fdp) or FEATURES)]
        for row in _rows(fdp):
            lines.append(",".join("" if v is None else str(v) for v in row))
        sep = ["\n", "\r\n", "\r"][fdp.ConsumeIntInRange(0, 2)]
        return sep.join(lines).encode()
    if target == "mlflow_json":
        kind = fdp.ConsumeIntInRange(0, 3)
        if kind == 0:
            body = {"dataframe_split": {"columns": _names(fdp), "data": _rows(fdp)}}
        elif kind == 1:
            body = {"dataframe_records": [{n: _number(fdp) for n in _names(fdp)} for _ in range(2)]}
        elif kind == 2:
            body = {"instances": _rows(fdp)}
        else:
            body = {"inputs": {n: [_number(fdp)] for n in _names(fdp)}}
        return json.dumps(body).encode()
    if target == "simple_json":
        if fdp.ConsumeBool():
            body = {"features": [_number(fdp) for _ in range(fdp.ConsumeIntInRange(0, 6))]}
        elif fdp.ConsumeBool():
            body = {"features": {n: _number(fdp) for n in _names(fdp)}}
        else:
            body = {"instances": _rows(fdp)}
        return json.dumps(body).encode()
    raise ValueError(target)


def make_input(target: str, data: bytes) -> bytes:
    """The request body the fuzzer's bytes stand for (raw, or structured plus a few edits)."""
    if data[:1] == b"\x00":
        return data[1:]
    fdp = atheris.FuzzedDataProvider(data)
    body = bytearray(_structured(target, fdp))
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        if not body:
            break
        body[fdp.ConsumeIntInRange(0, len(body) - 1)] = fdp.ConsumeInt(1) & 0xFF
    return bytes(body)


def main() -> None:
    target = "v1_json"
    argv = []
    for arg in sys.argv:
        if arg.startswith("--target="):
            target = arg.split("=", 1)[1]
        else:
            argv.append(arg)
    if target not in TARGETS:
        raise SystemExit(f"--target must be one of {', '.join(TARGETS)}")

    def one_input(data: bytes) -> None:
        body = make_input(target, data)
        try:
            check(target, body)
        except BaseException:
            # the request body itself, replayable without atheris (tests/fuzz/corpus/<target>/)
            name = f"crash-body-{target}-{hashlib.sha1(body).hexdigest()[:16]}"
            with open(name, "wb") as f:
                f.write(body)
            print(f"fuzz_decoders: request body saved as {name}", file=sys.stderr)
            raise

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
