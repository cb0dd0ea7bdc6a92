"""mlserve._core.json_decode / json_encode against the stdlib json module.

json_decode must return what json.loads returns (with every rectangular
array of numbers as a float ndarray, compared bit for bit against
np.asarray(json.loads(...))) or raise ValueError exactly when json.loads
raises, except for these deliberate differences (strict RFC 8259):

- NaN, Infinity, -Infinity, and numbers that overflow to inf (1e400) are
  rejected; json.loads returns float nan/inf;
- lone surrogates (in \\u escapes, or UTF-8 encoded) are rejected; json.loads
  returns str with surrogate code points;
- UTF-16/UTF-32 bodies are rejected; json.loads detects and decodes them;
- nesting deeper than max_depth (64) is rejected; json.loads goes to its
  recursion limit;
- integers too large for float64 inside a numeric array are rejected, where
  np.asarray(json.loads(...)) would raise OverflowError.
"""
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import threading
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from memory_support import fuzzer_rss_limit_flag, steady_rss_growth
from mlserve._core import json_decode, json_encode

# hypothesis' failure report touches a deprecated mypy_extensions API on some
# installs; with filterwarnings=error that would hide the falsifying example
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict:DeprecationWarning")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FUZZ = os.path.join(HERE, "fuzz")

# ---- reference model -------------------------------------------------------------


def _rect(ref):
    """(kind, shape) if ref (a json.loads list) must become an ndarray, else None."""
    if not isinstance(ref, list):
        return None
    if not ref:
        return ("num", (0,))
    if all(isinstance(x, bool) for x in ref):
        return ("bool", (len(ref),))
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ref):
        return ("num", (len(ref),))
    subs = [_rect(x) for x in ref]
    if subs[0] is None or any(s != subs[0] for s in subs) or len(subs[0][1]) >= 32:
        return None
    return (subs[0][0], (len(ref),) + subs[0][1])


def _same_float(a, b):
    return struct.pack("<d", a) == struct.pack("<d", b)


def assert_same(ours, ref, float32=False, path="$"):
    """ours (json_decode) equals ref (json.loads) under the ndarray rule."""
    rect = _rect(ref)
    if rect is not None:
        assert isinstance(ours, np.ndarray), f"{path}: expected an ndarray, got {type(ours)}"
        kind, shape = rect
        assert ours.shape == shape, path
        assert ours.flags.c_contiguous, path
        if kind == "bool":
            assert ours.dtype == np.bool_, path
            assert ours.tolist() == ref, path
            return
        dtype = np.float32 if float32 else np.float64
        assert ours.dtype == dtype, path
        # the reference: numpy's conversion of json.loads' Python numbers
        expected = np.asarray(ref, dtype=np.float64).astype(dtype) if ours.size else np.zeros(shape, dtype)
        assert ours.tobytes() == expected.tobytes(), f"{path}: {ours!r} != {expected!r}"
        return
    assert type(ours) is type(ref), f"{path}: {type(ours)} != {type(ref)}"
    if isinstance(ref, dict):
        assert list(ours) == list(ref), path
        for k in ref:
            assert_same(ours[k], ref[k], float32, f"{path}.{k}")
    elif isinstance(ref, list):
        assert len(ours) == len(ref), path
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert_same(a, b, float32, f"{path}[{i}]")
    elif isinstance(ref, float):
        assert _same_float(ours, ref), f"{path}: {ours!r} != {ref!r}"
    else:
        assert ours == ref, path


def _has(ref, pred):
    if pred(ref):
        return True
    if isinstance(ref, dict):
        return any(_has(k, pred) or _has(v, pred) for k, v in ref.items())
    if isinstance(ref, list):
        return any(_has(x, pred) for x in ref)
    return False


def _nonfinite(x):
    return isinstance(x, float) and not math.isfinite(x)


def _surrogate(x):
    return isinstance(x, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in x)


def _depth(x):
    if isinstance(x, dict):
        return 1 + max((_depth(v) for v in x.values()), default=0)
    if isinstance(x, list):
        return 1 + max((_depth(v) for v in x), default=0)
    return 0


def _array_overflow(ref):
    """An int too large for float64 inside an array that becomes an ndarray."""

    def bad(x):
        if _rect(x) is None or _rect(x)[0] != "num":
            return False
        flat = np.asarray(x, dtype=object).ravel() if x else []
        return any(isinstance(v, int) and abs(v) >= 2**1024 for v in flat)

    return _has(ref, bad)


def check_against_json(body, **kw):
    """json_decode(body) behaves like json.loads(body), up to the documented differences."""
    try:
        ref, ref_err = json.loads(body), None
    except RecursionError:
        return
    except ValueError as e:
        ref, ref_err = None, e
    try:
        ours, our_err = json_decode(body, **kw), None
    except ValueError as e:
        ours, our_err = None, e
    if json.detect_encoding(body) not in ("utf-8", "utf-8-sig"):
        return  # UTF-16/32: json.loads decodes them, we reject (documented)
    if ref_err is not None:
        assert our_err is not None, f"json.loads raised {ref_err!r} but json_decode returned {ours!r}"
        return
    if our_err is not None:
        msg = str(our_err)
        if _has(ref, _nonfinite) or _has(ref, _surrogate):
            return
        if "max_depth" in msg and _depth(ref) > kw.get("max_depth", 64):
            return
        if msg.startswith("number out of range") and (
            _array_overflow(ref) or (kw.get("float32") and _has(ref, lambda x: isinstance(x, list)))
        ):
            return
        if "Exceeds the limit" in msg:  # int > 4300 digits: json.loads raises too... in int()
            return
        raise AssertionError(f"json_decode raised {our_err!r}; json.loads returned {ref!r}")
    assert_same(ours, ref, kw.get("float32", False))


# ---- strategies ------------------------------------------------------------------

floats = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=-(10**40), max_value=10**40) | st.integers(min_value=-(2**63), max_value=2**64)
leaves = st.none() | st.booleans() | ints | floats | st.text(max_size=12)
shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4)
arrays = hnp.arrays(np.int64, shapes).map(lambda a: a.tolist()) | hnp.arrays(np.bool_, shapes).map(
    lambda a: a.tolist()
) | hnp.arrays(
    np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), elements=floats
).map(lambda a: a.tolist())
documents = st.recursive(
    leaves | arrays,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)
dumps_options = st.fixed_dictionaries(
    {"ensure_ascii": st.booleans(), "indent": st.none() | st.integers(0, 2) | st.just("\t")}
)

# MLSERVE_JSON_EXAMPLES=2000 for a longer run than the default quick one
EXAMPLES = int(os.environ.get("MLSERVE_JSON_EXAMPLES", "50"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- json_decode: valid documents ------------------------------------------------------


@FAST
@given(doc=documents, opts=dumps_options)
@example(doc={"instances": [[0.1, -0.0, 5e-324, 1.7976931348623157e308]]}, opts={"ensure_ascii": True, "indent": None})
@example(doc=[[1, 2], [3]], opts={"ensure_ascii": True, "indent": None})
@example(doc=[-0, [], [[]], [True, 1]], opts={"ensure_ascii": True, "indent": None})
def test_decode_matches_json_loads(doc, opts):
    body = json.dumps(doc, **opts).encode()
    check_against_json(body)
    # never an error on what json.dumps writes (finite, no lone surrogates)
    assert_same(json_decode(body), json.loads(body))


@FAST
@given(doc=documents)
def test_decode_float32_matches_numpy(doc):
    body = json.dumps(doc).encode()
    ref = json.loads(body)
    try:
        ours = json_decode(body, float32=True)
    except ValueError as e:
        assert str(e).startswith("number out of range")
        with np.errstate(over="ignore"):
            assert _has(
                ref,
                lambda x: _rect(x) is not None and _rect(x)[0] == "num" and x and
                not np.isfinite(np.asarray(x, dtype=np.float64).astype(np.float32)).all(),
            ) or _array_overflow(ref)
        return
    with np.errstate(over="ignore"):
        assert_same(ours, ref, float32=True)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(floats, min_size=1, max_size=50), st.integers(1, 3))
def test_float_literals_are_correctly_rounded(values, digits_shift):
    # repr, %.17g and truncated/extended renderings of every value
    texts = []
    for v in values:
        texts += [repr(v), "%.17g" % v, "%.*e" % (digits_shift + 14, v), "%.*e" % (digits_shift, v)]
    texts = [t for t in texts if math.isfinite(float(t))]
    body = ("[" + ", ".join(texts) + "]").encode()
    got = json_decode(body)
    # an integer literal is an int to json.loads: -0 is 0, as np.asarray sees it
    expected = np.array([float(int(t)) if t.lstrip("-").isdigit() else float(t) for t in texts])
    assert got.tobytes() == expected.tobytes()


def test_numbers_bulk_against_float(rng):
    # 200k random literals in one document: repr of random bit patterns,
    # random digit strings with exponents, near-halfway 17-25 digit strings
    bits = rng.integers(0, 2**63, 50_000, dtype=np.uint64).view(np.float64)
    bits = bits[np.isfinite(bits)] * np.where(rng.random(len(bits[np.isfinite(bits)])) < 0.5, -1, 1)
    texts = [repr(float(x)) for x in bits]
    digits = rng.integers(0, 10, (50_000, 22))
    lengths = rng.integers(1, 23, 50_000)
    exps = rng.integers(-340, 320, 50_000)
    for d, n, e in zip(digits, lengths, exps):
        s = "".join(map(str, d[:n])).lstrip("0") or "0"
        texts.append(f"{s[0]}.{s[1:] or '0'}e{e - 5}")
    for x in rng.random(50_000) * 10.0 ** rng.integers(-300, 300, 50_000):
        texts.append("%.*e" % (int(rng.integers(16, 25)), x))
    texts = [t for t in texts if math.isfinite(float(t))]
    got = json_decode(("[" + ",".join(texts) + "]").encode())
    expected = np.array([float(t) for t in texts])
    bad = np.nonzero(got.view(np.uint64) != expected.view(np.uint64))[0]
    assert not len(bad), [texts[i] for i in bad[:5]]


def test_result_types_and_shapes():
    r = json_decode(b'{"a": [[1, 2], [3, 4]], "b": [[1, 2], [3]], "c": [1, "x"], "d": [],'
                    b' "e": [[true], [false]], "f": 7, "g": 7.0, "h": -0, "i": [[], []], "j": [1, true]}')
    assert r["a"].shape == (2, 2) and r["a"].dtype == np.float64 and r["a"].flags.c_contiguous
    assert isinstance(r["b"], list) and [x.tolist() for x in r["b"]] == [[1.0, 2.0], [3.0]]
    assert r["c"] == [1, "x"] and type(r["c"][0]) is int
    assert r["d"].shape == (0,) and r["d"].dtype == np.float64
    assert r["e"].dtype == np.bool_ and r["e"].shape == (2, 1)
    assert type(r["f"]) is int and type(r["g"]) is float and r["h"] == 0 and type(r["h"]) is int
    assert r["i"].shape == (2, 0)
    assert r["j"] == [1, True] and type(r["j"][1]) is bool
    assert json_decode(b"[-0]")[0].tobytes() == np.float64(0.0).tobytes()  # as np.asarray([0])
    assert json_decode(b"[-0.0]")[0].tobytes() == np.float64(-0.0).tobytes()
    r32 = json_decode(b'{"x": [0.1, 2], "y": 0.1}', float32=True)
    assert r32["x"].dtype == np.float32 and r32["x"][0] == np.float32(0.1)
    assert r32["y"] == 0.1 and type(r32["y"]) is float  # lone numbers stay Python floats
    assert json_decode(b"123456789012345678901234567890") == 123456789012345678901234567890
    assert json_decode(b'{"a": 1, "a": 2, "b": 3}') == {"a": 2, "b": 3}
    assert json_decode(b'\xef\xbb\xbf{"a": "\xc3\xa9\\ud83d\\ude00"}') == {"a": "\u00e9\U0001F600"}
    assert json_decode(bytearray(b"[1.5]")).tolist() == [1.5]
    assert json_decode(memoryview(b"xx[2.5]")[2:]).tolist() == [2.5]


def test_ndarrays_are_independent_and_writeable():
    r = json_decode(b'{"a": [1, 2], "b": [[3, 4]], "c": [true]}')
    a, b = r["a"], r["b"]
    a[0] = 10
    assert b.tolist() == [[3.0, 4.0]] and a.flags.writeable
    del r, b
    assert a.tolist() == [10.0, 2.0]


def test_deep_nesting():
    x = json_decode(b"[" * 64 + b"]" * 64)
    for _ in range(64 - 32):  # the 32 innermost arrays are one ndarray, the rest lists
        assert isinstance(x, list) and len(x) == 1
        x = x[0]
    assert x.shape == (1,) * 31 + (0,)
    with pytest.raises(ValueError, match=r"^JSON nested deeper than max_depth=64 at line 1, column 65$"):
        json_decode(b"[" * 65 + b"]" * 65)
    assert json_decode(b'{"a": {"b": 1}}', max_depth=2) == {"a": {"b": 1}}
    with pytest.raises(ValueError, match="max_depth=1 "):
        json_decode(b'{"a": {"b": 1}}', max_depth=1)
    deep = b"[" * 5000 + b"1" + b"]" * 5000  # iterative build: no C recursion
    x = json_decode(deep, max_depth=10000)
    for _ in range(5000 - 32):
        assert isinstance(x, list) and len(x) == 1
        x = x[0]
    assert x.shape == (1,) * 32
    with pytest.raises(ValueError, match="max_depth must be at least 1"):
        json_decode(b"1", max_depth=0)


def test_max_bytes():
    assert json_decode(b"[1, 2]", max_bytes=6).tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"^JSON body is 6 bytes, more than max_bytes=5$"):
        json_decode(b"[1, 2]", max_bytes=5)


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"instances": [1, 2,]}', "invalid JSON at line 1, column 21: trailing comma before ']'"),
        (b'{"instances": [[1, 2] [3, 4]]}', "invalid JSON at line 1, column 23: expected ',' or ']'"),
        (b'{"a": 1,}', "invalid JSON at line 1, column 9: trailing comma before '}'"),
        (b'{"a" 1}', "invalid JSON at line 1, column 6: expected ':'"),
        (b"{'a': 1}", "invalid JSON at line 1, column 2: strings must use double quotes"),
        (b"[1, 2", "invalid JSON at line 1, column 6: unexpected end of input"),
        (b"", "invalid JSON at line 1, column 1: unexpected end of input"),
        (b"[01]", "invalid JSON at line 1, column 2: leading zeros are not allowed in numbers"),
        (b"[1.]", "invalid JSON at line 1, column 4: expected a digit in number"),
        (b"[NaN]", "invalid JSON at line 1, column 2: NaN and Infinity are not valid JSON numbers"),
        (b"[-Infinity]", "invalid JSON at line 1, column 2: NaN and Infinity are not valid JSON numbers"),
        (b"[1] // c", "invalid JSON at line 1, column 5: extra data after the JSON value"),
        (b"[1, /* c */ 2]", "invalid JSON at line 1, column 5: comments are not allowed in JSON"),
        (b'"\\ud800"', "invalid JSON at line 1, column 2: lone surrogate in \\u escape"),
        (b'"a\\x"', "invalid JSON at line 1, column 3: invalid escape '\\x' in string"),
        (b'"a\nb"', "invalid JSON at line 1, column 3: control character U+000A in string must be escaped"),
        (b'"\xff"', "invalid JSON at line 1, column 2: invalid UTF-8 in string"),
        (b'"\xed\xa0\x80"', "invalid JSON at line 1, column 2: invalid UTF-8 in string"),
        (b'{\n  "a": [1,\n   tru]}', "invalid JSON at line 3, column 4: expected a value"),
        (b'"\xc3\xa9\xc3\xa9" x', "invalid JSON at line 1, column 6: extra data after the JSON value"),
        (b'"abc', "invalid JSON at line 1, column 1: unterminated string"),
        (b'{"a": 1e400}', "number out of range at line 1, column 7"),
        (b"[1, 2, 1" + b"0" * 400 + b"]", "number out of range at line 1, column 8"),
    ],
)
def test_error_messages(body, message):
    with pytest.raises(ValueError) as info:
        json_decode(body)
    assert str(info.value) == message


def test_float32_range():
    with pytest.raises(ValueError, match=r"^number out of range at line 1, column 5$"):
        json_decode(b"[1, 1e39]", float32=True)
    assert json_decode(b'[1e39, "x"]', float32=True) == [1e39, "x"]  # a list: a Python float
    assert json_decode(b"1e39", float32=True) == 1e39
    assert json_decode(b"[1e-50]", float32=True).tolist() == [0.0]


# ---- json_decode: arbitrary and mutated bytes ------------------------------------------


@settings(max_examples=3 * EXAMPLES, deadline=None)
@given(st.binary(max_size=64))
@example(b"[1e400]")
@example(b'["\\udc00"]')
@example(b"\xff\xfe[\x001\x00]\x00")
def test_arbitrary_bytes_like_json(body):
    check_against_json(body)
    check_against_json(body, float32=True)


@st.composite
def mutated(draw):
    body = bytearray(json.dumps(draw(documents), ensure_ascii=draw(st.booleans())).encode())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = draw(st.integers(0, len(body)))
        byte = draw(st.sampled_from(list(b'[]{},:"\\ 0123456789-+.eEtfnul\x00\x1f\x7f\xc3\xa9\xed\xff')))
        if op == "flip" and pos < len(body):
            body[pos] = byte
        elif op == "insert":
            body[pos:pos] = bytes([byte])
        elif pos < len(body):
            del body[pos]
    return bytes(body)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_documents_like_json(body):
    check_against_json(body)


# ---- json_encode -----------------------------------------------------------------


encodable = st.recursive(
    st.none() | st.booleans() | ints | floats | st.text(st.characters(), max_size=12),
    lambda children: st.lists(children, max_size=5)
    | st.lists(children, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=6) | st.integers() | floats | st.booleans() | st.none(), children, max_size=5),
    max_leaves=30,
)


@FAST
@given(encodable)
def test_encode_equals_json_dumps(obj):
    out = json_encode(obj)
    assert out == json.dumps(obj).encode()


@FAST
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float64, np.float16, np.int8, np.int32, np.int64, np.uint16, np.uint64, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
        elements={"allow_nan": False, "allow_infinity": False},
    )
)
def test_encode_ndarray_equals_json_dumps_tolist(a):
    assert json_encode(a) == json.dumps(a.tolist()).encode()
    assert json_encode({"predictions": a}) == json.dumps({"predictions": a.tolist()}).encode()


@FAST
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=2, max_side=8),
                  elements={"allow_nan": False, "allow_infinity": False}))
def test_encode_float32_shortest(a):
    out = json_encode(a)
    texts = out.decode().replace("[", "").replace("]", "").split(", ") if a.size else []
    assert texts == [str(x) for x in a.ravel()]  # repr(np.float32(x)): shortest, numpy's layout
    for text, x in zip(texts, a.ravel()):
        # the text rounds to x in float32 (exactly, not through a double)
        with np.errstate(over="ignore"):
            v, below, above = Fraction(text), np.nextafter(x, -np.inf), np.nextafter(x, np.inf)
        half_down = (Fraction(float(x)) - Fraction(float(below))) / 2 if np.isfinite(below) else None
        half_up = (Fraction(float(above)) - Fraction(float(x))) / 2 if np.isfinite(above) else None
        d = v - Fraction(float(x))
        even = int(np.asarray(x).view(np.uint32)) % 2 == 0
        assert half_up is None or d < half_up or (d == half_up and even), (text, x)
        assert half_down is None or -d < half_down or (-d == half_down and even), (text, x)
    # json_decode(float32=True) reads like np.asarray(json.loads(...), np.float32): through a
    # double. For about one float in 10^9 that gives the neighbour (double rounding, e.g.
    # 7.038531e-26); numpy's own repr/parse pair has the same property.
    back = json_decode(out, float32=True)
    assert back.tobytes() == np.asarray(json.loads(out), dtype=np.float64).astype(np.float32).tobytes()


def test_float32_double_rounding_is_numpys():
    x = np.array([0x15AE43FD], np.uint32).view(np.float32)
    assert json_encode(x) == b"[7.038531e-26]" and str(x[0]) == "7.038531e-26"
    back = json_decode(json_encode(x), float32=True)
    assert back.tobytes() == np.float32(float("7.038531e-26")).tobytes() != x.tobytes()


def test_encode_float_formats():
    values = [0.1, 1e-07, 1e16, 1e15, 123.0, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 1e-05, 0.0001,
              2.2250738585072014e-308, 9007199254740993.0, 1 / 3]
    assert json_encode(values) == json.dumps(values).encode()
    assert json_encode(np.array(values)) == json.dumps(values).encode()
    assert json_encode(np.float32(0.1)) == b"0.1"
    assert json_encode(np.array([1e16, 1e-5, 0.5, 1e6, 1e-4], np.float32)) == b"[1e+16, 1e-05, 0.5, 1e+06, 1e-04]"
    assert json_encode(np.int64(-5)) == b"-5" and json_encode(np.bool_(True)) == b"true"
    assert json_encode(np.float16(0.1)) == json.dumps(float(np.float16(0.1))).encode()
    assert json_encode(np.arange(6, dtype=np.int64).reshape(2, 3, 1)[:, ::2]) == b"[[[0], [2]], [[3], [5]]]"
    assert json_encode(np.zeros((2, 0, 3))) == b"[[], []]"
    assert json_encode(np.array([1, "a", None], dtype=object)) == b'[1, "a", null]'
    assert json_encode(np.array([1.5], dtype=">f8")) == b"[1.5]"


def test_encode_large_array_matches():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(300, 50)) * 10.0 ** rng.integers(-30, 30, (300, 50))
    assert json_encode(a) == json.dumps(a.tolist()).encode()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), np.array([1.0, np.nan]),
                                 np.array([np.inf], np.float32), np.float32("nan"), {1.5: 1, float("nan"): 2}, [np.inf]])
def test_encode_rejects_nonfinite(bad):
    with pytest.raises(ValueError, match=r"^cannot encode NaN or infinity in JSON$"):
        json_encode(bad)


def test_encode_type_errors():
    with pytest.raises(TypeError, match=r"^Object of type object is not JSON serializable$"):
        json_encode([object()])
    with pytest.raises(TypeError, match=r"^keys must be str, int, float, bool or None, not tuple$"):
        json_encode({(1,): 2})
    with pytest.raises(TypeError, match="cannot encode an ndarray of dtype complex128"):
        json_encode(np.array([1j]))
    with pytest.raises(TypeError):
        json_encode("x".encode())
    loop = []
    loop.append(loop)
    with pytest.raises(RecursionError):
        json_encode(loop)


# ---- threads, leaks -----------------------------------------------------------------


def test_threads_decode_and_encode_concurrently():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 20))
    body = json.dumps({"instances": X.tolist()}).encode()  # above the GIL-release size
    text = json.dumps(X.tolist()).encode()
    errors = []

    def work():
        try:
            for _ in range(5):
                assert np.array_equal(json_decode(body)["instances"], X)
                assert json_encode(X) == text
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("which", ["decode", "encode"])
def test_gil_is_released_for_large_inputs(which):
    # With a 5 s switch interval, a thread that holds the GIL keeps it (no
    # forced switch) until it releases it itself: the main thread, woken by
    # `started`, can only run before `done` if json_decode/json_encode let go.
    X = np.random.default_rng(5).normal(size=(20_000, 10))
    body = json.dumps({"instances": X.tolist()}).encode()
    call = (lambda: json_decode(body)) if which == "decode" else (lambda: json_encode(X))
    started, done, seen = threading.Event(), [], []

    def work():
        started.set()
        call()
        done.append(True)

    old = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        t = threading.Thread(target=work)
        t.start()
        started.wait()
        seen.append(bool(done))
        t.join()
    finally:
        sys.setswitchinterval(old)
    assert seen == [False], "the main thread only ran after the call returned: the GIL was held"


def test_no_leak():
    body = json.dumps({"instances": np.ones((50, 20)).tolist(), "k": ["x" * 40, {"y": [1, "z"]}], "s": "\\u00e9"}).encode()
    bad = b'{"instances": [[1, 2], [3, 4]], "x": [1, 2,]}'

    def run(n):
        for _ in range(n):
            json_encode(json_decode(body))
            try:
                json_decode(bad)
            except ValueError:
                pass

    assert steady_rss_growth(lambda: run(3000)) < 4 << 20


# ---- bounded fuzzing ------------------------------------------------------------------


def test_atheris_fuzz_bounded(tmp_path):
    pytest.importorskip("atheris")
    res = subprocess.run(
        [sys.executable, os.path.join(FUZZ, "fuzz_json_atheris.py"), "-max_total_time=3", "-max_len=512",
         fuzzer_rss_limit_flag()],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Done" in res.stderr, res.stderr[-3000:]


def test_libfuzzer_bounded(tmp_path):
    assert shutil.which("clang"), "clang with libFuzzer is needed (.ci/run installs it)"
    exe = tmp_path / "fuzz_json"
    build = subprocess.run(
        ["clang", "-std=c11", "-g", "-O1", "-D_GNU_SOURCE", "-fsanitize=fuzzer,address,undefined",
         "-fno-sanitize-recover=undefined", "-I", os.path.join(ROOT, "csrc"), os.path.join(FUZZ, "fuzz_json.c"),
         os.path.join(ROOT, "csrc", "mls_json.c"), os.path.join(ROOT, "csrc", "mls_status.c"), "-lm", "-o", str(exe)],
        capture_output=True, text=True, timeout=180,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate([b'{"instances": [[1.5, 2, -3e-5], [4, 5, 6]]}', b'[[1,2],[3]]', b'"\\u00e9\\ud83d\\ude00"',
                              b"[true, [false]]", b"-0.0e-0", b"[1e39]"]):
        (corpus / f"seed{i}").write_bytes(seed)
    # the limit counts the RSS peak this test process passes on (see fuzzer_rss_limit_flag):
    # in the full suite that peak alone is over libFuzzer's default 2 GB
    res = subprocess.run([str(exe), "-max_total_time=3", "-max_len=1024", "-seed=1", fuzzer_rss_limit_flag(),
                          str(corpus)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
