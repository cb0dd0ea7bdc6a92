"""atheris target for mlserve._core.json_decode / json_encode.

Run (tests/test_json_codec.py runs it for a few seconds):
    python tests/fuzz/fuzz_json_atheris.py -max_total_time=60 -max_len=512 [corpus_dir]

Each input goes through json_decode (float64 and float32) and is compared
with json.loads under the documented differences (check_against_json in
tests/test_json_codec.py); a decoded value is encoded again with json_encode
and decoded back to the same value. Only the Python side is instrumented
for coverage (the extension is a regular build), so this complements the
libFuzzer target tests/fuzz/fuzz_json.c rather than replacing it.
"""
import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hypothesis  # noqa: E402,F401  (imported by the test module; not instrumented)
import numpy as np  # noqa: E402  (not instrumented: large and not under test)
import pytest  # noqa: E402,F401

from mlserve._core import json_decode, json_encode  # noqa: E402

with atheris.instrument_imports():
    import json

    from test_json_codec import assert_same, check_against_json


def _document(fdp, depth=0):
    """A JSON-able value drawn from the fuzzer's bytes (so most inputs are
    valid or nearly valid JSON, not rejected at the first byte)."""
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 24))
    if kind == 3:
        x = fdp.ConsumeRegularFloat()
        return x
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 8))
    if kind == 5:
        return [fdp.ConsumeRegularFloat() for _ in range(fdp.ConsumeIntInRange(0, 6))]
    if kind in (6, 7):
        rows, cols = fdp.ConsumeIntInRange(0, 4), fdp.ConsumeIntInRange(0, 4)
        return [[fdp.ConsumeRegularFloat() for _ in range(cols)] for _ in range(rows)]
    if kind == 8:
        return [_document(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {fdp.ConsumeUnicodeNoSurrogates(4): _document(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))}


def _structured(data: bytes) -> bytes:
    fdp = atheris.FuzzedDataProvider(data)
    text = bytearray(json.dumps(_document(fdp), ensure_ascii=fdp.ConsumeBool()).encode())
    for _ in range(fdp.ConsumeIntInRange(0, 3)):  # a few byte edits
        if not text:
            break
        pos = fdp.ConsumeIntInRange(0, len(text) - 1)
        text[pos] = fdp.ConsumeInt(1) & 0xFF
    return bytes(text)


def test_one_input(data: bytes) -> None:
    if data[:1] == b"\x00":  # raw bytes mode
        data = data[1:]
    else:
        data = _structured(data)
    check_against_json(data)
    check_against_json(data, float32=True)
    try:
        value = json_decode(data)
    except ValueError:
        return
    try:
        text = json_encode(value)
    except ValueError:
        return  # not reachable today: decoded values are finite
    again = json_decode(text)
    assert_same(again, json.loads(text))
    if isinstance(value, np.ndarray):
        assert again.tobytes() == value.tobytes() or np.array_equal(again, value)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
