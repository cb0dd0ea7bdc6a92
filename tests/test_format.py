"""The .mls container through the public API: save, load, ModelFormatError.

The byte layout is described in csrc/mls_format.h; _Layout below reads it
independently, so these tests also pin the layout and the checksum chain
(csrc/mls_format.c) that other readers would have to reproduce.
"""
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings

import numpy as np
import pytest

import mlserve
from mlserve import _core

HEADER = struct.Struct("<8sHHIQQQQIIQ64s")  # 128 bytes
ENTRY = struct.Struct("<64sII4QQQQ")  # 128 bytes
MAGIC = b"\x89MLS\r\n\x1a\n"

# Every message a corrupt file can produce says one of these.
CORRUPT = r"corrupt|bad magic|format version|truncated|header says"


class _Layout:
    """Offsets of an .mls file's fields, read with struct (little-endian)."""

    def __init__(self, data):
        (self.magic, self.major, self.minor, self.kind, self.size, self.meta_off,
         self.meta_len, self.table_off, self.count, self.flags, self.checksum,
         self.reserved) = HEADER.unpack_from(data, 0)
        self.sections = {}
        for i in range(self.count):
            entry_off = self.table_off + i * ENTRY.size
            name, dtype, ndim, *rest = ENTRY.unpack_from(data, entry_off)
            shape, (off, length, checksum) = rest[:4], rest[4:]
            self.sections[name.rstrip(b"\0").decode()] = dict(
                entry=entry_off, dtype=dtype, ndim=ndim, shape=shape[:ndim],
                offset=off, length=length, checksum=checksum)


def header_checksum(data):
    """The chain documented at the top of csrc/mls_format.c."""
    fields = HEADER.unpack_from(data, 0)
    meta_off, meta_len, table_off, count = fields[5], fields[6], fields[7], fields[8]
    header = bytearray(data[:128])
    header[56:64] = bytes(8)
    h = _core.checksum64(bytes(header), 0)
    h = _core.checksum64(bytes(data[meta_off:meta_off + meta_len]), h)
    return _core.checksum64(bytes(data[table_off:table_off + 128 * count]), h)


CHUNK = 4 << 20  # format 2.x section checksums: 4 MiB chunks


def section_checksum(raw, major=2):
    """A section's data checksum, as documented at the top of csrc/mls_format.c."""
    if major == 1 or len(raw) <= CHUNK:
        return _core.checksum64(raw, 0)
    hashes = [_core.checksum64(raw[off:off + CHUNK], j) for j, off in enumerate(range(0, len(raw), CHUNK))]
    return _core.checksum64(struct.pack(f"<{len(hashes)}Q", *hashes), len(raw))


def reseal(data):
    """Recompute the header checksum of a patched file, so that only the
    check under test can fire."""
    data = bytearray(data)
    struct.pack_into("<Q", data, 56, header_checksum(data))
    return bytes(data)


@pytest.fixture
def fitted(rng):
    X = rng.normal(size=(40, 4))
    y = X @ np.array([1.5, -2.0, 0.25, 3.0]) + 0.5 + 0.01 * rng.normal(size=40)
    return mlserve.LinearRegression().fit(X, y), X


@pytest.fixture
def saved(fitted, tmp_path):
    model, X = fitted
    path = tmp_path / "model.mls"
    mlserve.save(model, path)
    return path, model, X


def load_bytes(tmp_path, data, name="patched.mls", **kwargs):
    path = tmp_path / name
    path.write_bytes(data)
    return mlserve.load(path, **kwargs)


# ---- round trip ------------------------------------------------------------


@pytest.mark.parametrize("verify", [True, False])
def test_round_trip_predictions_identical(saved, verify):
    path, model, X = saved
    loaded = mlserve.load(path, verify=verify)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.coef_, model.coef_)
    assert loaded.intercept_ == model.intercept_


def test_round_trip_multi_output_and_resave(rng, tmp_path):
    X, Y = rng.normal(size=(30, 6)), rng.normal(size=(30, 3))
    model = mlserve.LinearRegression().fit(X, Y)
    mlserve.save(model, tmp_path / "a.mls")
    loaded = mlserve.load(tmp_path / "a.mls")
    mlserve.save(loaded, tmp_path / "b.mls")  # a mapped model saves too
    again = mlserve.load(tmp_path / "b.mls")
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    assert again.coef_.shape == (3, 6)


def test_layout_is_as_documented(saved):
    path, model, _ = saved
    data = path.read_bytes()
    lay = _Layout(data)
    assert lay.magic == MAGIC
    assert (lay.major, lay.minor) == (2, 0)
    assert lay.size == len(data)
    assert lay.flags == 0 and lay.reserved == bytes(64)
    assert lay.checksum == header_checksum(data)
    assert set(lay.sections) == {"coef", "intercept"}
    for sec in lay.sections.values():
        assert sec["offset"] % 64 == 0
        raw = data[sec["offset"]:sec["offset"] + sec["length"]]
        assert sec["checksum"] == section_checksum(raw) == _core.checksum64(raw, 0)
    coef = lay.sections["coef"]
    raw = data[coef["offset"]:coef["offset"] + coef["length"]]
    np.testing.assert_array_equal(np.frombuffer(raw, "<f8"), model.coef_.ravel())


def test_checksum64_is_seeded_and_length_aware():
    assert _core.checksum64(b"abc", 0) == _core.checksum64(b"abc", 0)
    assert _core.checksum64(b"abc", 0) != _core.checksum64(b"abc", 1)
    assert _core.checksum64(b"abc", 0) != _core.checksum64(b"abc\0", 0)
    assert _core.checksum64(b"", 0) != _core.checksum64(b"\0", 0)


# ---- load maps the file -----------------------------------------------------


def _mapping_of(address):
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= address < hi:
                return fields[5].strip() if len(fields) == 6 else ""
    return None


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_load_maps_the_file(saved):
    path, _, _ = saved
    loaded = mlserve.load(path)
    address = loaded.coef_.__array_interface__["data"][0]
    assert _mapping_of(address) == os.path.realpath(path)
    assert address % 64 == 0
    assert not loaded.coef_.flags.writeable


def test_loaded_model_survives_replacing_the_file(saved, rng):
    # save renames a new file over the old one, so a mapping of the old one
    # keeps its bytes: servers can hot-swap models under running workers.
    path, model, X = saved
    loaded = mlserve.load(path)
    before = loaded.predict(X)
    other = mlserve.LinearRegression().fit(X, rng.normal(size=len(X)))
    mlserve.save(other, path)
    np.testing.assert_array_equal(loaded.predict(X), before)
    np.testing.assert_array_equal(mlserve.load(path).predict(X), other.predict(X))


# ---- corrupt, foreign, truncated files --------------------------------------


def test_empty_file(tmp_path):
    with pytest.raises(mlserve.ModelFormatError,
                       match="file is empty: a .mls file starts with a 128-byte header"):
        load_bytes(tmp_path, b"")


def test_short_file_names_the_header_size(tmp_path):
    with pytest.raises(mlserve.ModelFormatError,
                       match=r"file is truncated: 37 bytes, a \.mls header needs 128"):
        load_bytes(tmp_path, MAGIC + bytes(29))


@pytest.mark.parametrize("data", [
    b"PK\x03\x04" + bytes(200),                   # zip (e.g. a .npz or .keras)
    b"\x80\x04\x95" + bytes(200),                 # pickle / joblib
    b"\x89HDF\r\n\x1a\n" + bytes(200),            # HDF5
    b'{"kind": "linear_regressor"}',              # JSON
    b"\x89MLT\r\n\x1a\n" + bytes(200),            # one byte off
    b"MLS",                                       # shorter than the magic
], ids=["zip", "pickle", "hdf5", "json", "near-miss", "short"])
def test_foreign_files_bad_magic(tmp_path, data):
    with pytest.raises(mlserve.ModelFormatError, match=r"not an \.mls file \(bad magic\)"):
        load_bytes(tmp_path, data)


def test_error_names_the_path(tmp_path):
    path = tmp_path / "foreign.mls"
    path.write_bytes(b"hello world")
    with pytest.raises(mlserve.ModelFormatError, match="foreign.mls"):
        mlserve.load(path)


def test_garbage_bytes(tmp_path, rng):
    for size in [1, 7, 8, 127, 128, 129, 1000, 4096, 65536]:
        junk = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        with pytest.raises(mlserve.ModelFormatError, match=CORRUPT):
            load_bytes(tmp_path, junk)
        # garbage behind a valid magic gets past the first check
        with pytest.raises(mlserve.ModelFormatError, match=CORRUPT):
            load_bytes(tmp_path, MAGIC + junk)


def test_truncated_at_many_lengths(saved, tmp_path):
    path, _, _ = saved
    data = path.read_bytes()
    for n in [*range(200), *range(200, len(data), 5), len(data) - 1]:
        with pytest.raises(mlserve.ModelFormatError, match=r"file is (empty|truncated)"):
            load_bytes(tmp_path, data[:n])


def test_extended_file(saved, tmp_path):
    path, _, _ = saved
    with pytest.raises(mlserve.ModelFormatError, match=r"header says \d+ \(bytes appended"):
        load_bytes(tmp_path, path.read_bytes() + b"\0")


@pytest.mark.parametrize("verify", [True, False])
def test_bit_flip_anywhere_is_rejected(saved, tmp_path, rng, verify):
    # One flipped bit in every byte of the file (a different bit each time):
    # the header checksum covers the header, metadata and table, padding must
    # be zero, and with verify the section checksums cover the data.
    path, _, _ = saved
    data = path.read_bytes()
    lay = _Layout(data)
    in_data = np.zeros(len(data), bool)
    for sec in lay.sections.values():
        in_data[sec["offset"]:sec["offset"] + sec["length"]] = True
    for pos in range(len(data)):
        if in_data[pos] and not verify:
            continue  # data is only checked with verify (see the next test)
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(mlserve.ModelFormatError, match=CORRUPT):
            load_bytes(tmp_path, bytes(flipped), verify=verify)


def test_data_flip_needs_verify(saved, tmp_path):
    path, _, X = saved
    data = bytearray(path.read_bytes())
    coef = _Layout(data).sections["coef"]
    data[coef["offset"] + 3] ^= 0x10
    with pytest.raises(mlserve.ModelFormatError,
                       match="checksum mismatch in section 'coef': file is corrupt"):
        load_bytes(tmp_path, bytes(data))
    # the documented trade-off: verify=False skips the data pass
    loaded = load_bytes(tmp_path, bytes(data), verify=False)
    assert loaded.predict(X).shape == (len(X),)


def test_header_checksum_mismatch(saved, tmp_path):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    data[12] ^= 0x01  # model kind
    with pytest.raises(mlserve.ModelFormatError, match="header checksum mismatch: file is corrupt"):
        load_bytes(tmp_path, bytes(data))


def test_newer_major_version_is_rejected(saved, tmp_path):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    struct.pack_into("<HH", data, 8, 3, 0)
    with pytest.raises(mlserve.ModelFormatError,
                       match=r"file is \.mls format version 3\.0, this build reads up to 2\.x"):
        load_bytes(tmp_path, reseal(data))


def test_newer_minor_version_is_accepted(saved, tmp_path):
    path, model, X = saved
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, 10, 7)
    loaded = load_bytes(tmp_path, reseal(data))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_version_zero_is_corrupt(saved, tmp_path):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, 8, 0)
    with pytest.raises(mlserve.ModelFormatError, match=r"version 0\.0, which never existed"):
        load_bytes(tmp_path, reseal(data))


# ---- format 2.x: chunked section checksums, verified on several threads ----


@pytest.fixture(scope="module")
def large_saved(tmp_path_factory):
    """A 40 MB coef (10 chunks, above the 32 MiB threading threshold) and a
    10 MB one (3 chunks, one thread)."""
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(7)
    out = {}
    for rows in (500, 128):
        ref = sklearn_linear.LinearRegression()
        ref.coef_ = rng.normal(size=(rows, 10_000))
        ref.intercept_ = rng.normal(size=rows)
        ref.n_features_in_ = 10_000
        path = tmp_path_factory.mktemp("large") / f"coef{rows}.mls"
        mlserve.save(mlserve.convert(ref), path)
        out[rows] = path, rng.normal(size=(3, 10_000)), ref
    return out


@pytest.mark.parametrize("rows", [500, 128])
def test_large_section_checksum_is_chunked_as_documented(large_saved, rows):
    path, X, ref = large_saved[rows]
    data = path.read_bytes()
    coef = _Layout(data).sections["coef"]
    raw = data[coef["offset"]:coef["offset"] + coef["length"]]
    assert len(raw) > 2 * CHUNK and len(raw) % CHUNK != 0
    assert coef["checksum"] == section_checksum(raw) != _core.checksum64(raw, 0)
    # scores of ~100 summed from 10000 products: a summation order other than
    # NumPy's (3 rows take the small-batch kernel) moves them by ~1e-13, so a
    # score near 0 needs an absolute tolerance
    np.testing.assert_allclose(mlserve.load(path).predict(X), ref.predict(X), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("rows", [500, 128])
def test_large_section_bit_flips_and_chunk_swaps_are_rejected(large_saved, tmp_path, rng, rows):
    path, _, _ = large_saved[rows]
    data = path.read_bytes()
    coef = _Layout(data).sections["coef"]
    start, length = coef["offset"], coef["length"]
    positions = [0, CHUNK - 1, CHUNK, 2 * CHUNK - 1, 2 * CHUNK, length - CHUNK, length - 1]
    positions += [int(p) for p in rng.integers(0, length, 3)]
    for pos in positions:
        flipped = bytearray(data)
        flipped[start + pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(mlserve.ModelFormatError,
                           match="checksum mismatch in section 'coef': file is corrupt"):
            load_bytes(tmp_path, bytes(flipped))
    swapped = bytearray(data)
    swapped[start:start + CHUNK], swapped[start + CHUNK:start + 2 * CHUNK] = (
        data[start + CHUNK:start + 2 * CHUNK], data[start:start + CHUNK])
    with pytest.raises(mlserve.ModelFormatError, match="checksum mismatch in section 'coef'"):
        load_bytes(tmp_path, bytes(swapped))


def test_format_1_files_still_load_with_their_own_checksum(large_saved, tmp_path):
    # A 1.x file (written by earlier builds) differs only in the version and
    # in its section checksums: one sequential checksum64 per section.
    path, X, ref = large_saved[500]
    data = bytearray(path.read_bytes())
    lay = _Layout(data)
    struct.pack_into("<H", data, 8, 1)
    v2_sums = {}
    for name, sec in lay.sections.items():
        raw = bytes(data[sec["offset"]:sec["offset"] + sec["length"]])
        v2_sums[name] = sec["checksum"]
        struct.pack_into("<Q", data, sec["entry"] + 120, section_checksum(raw, major=1))
    v1 = reseal(data)
    loaded = load_bytes(tmp_path, v1, name="v1.mls")
    np.testing.assert_allclose(loaded.predict(X), ref.predict(X), rtol=1e-12)
    coef = lay.sections["coef"]
    flipped = bytearray(v1)
    flipped[coef["offset"] + 5 * CHUNK + 11] ^= 0x04
    with pytest.raises(mlserve.ModelFormatError, match="checksum mismatch in section 'coef'"):
        load_bytes(tmp_path, bytes(flipped), name="v1.mls")
    # the version decides the rule: a 1.x header over 2.x checksums is corrupt
    struct.pack_into("<Q", data, coef["entry"] + 120, v2_sums["coef"])
    with pytest.raises(mlserve.ModelFormatError, match="checksum mismatch in section 'coef'"):
        load_bytes(tmp_path, reseal(data), name="v1.mls")


def _patched_section(path, name, **fields):
    data = bytearray(path.read_bytes())
    entry = _Layout(data).sections[name]["entry"]
    for key, value in fields.items():
        if key == "shape":
            for d, dim in enumerate(value):
                struct.pack_into("<Q", data, entry + 72 + 8 * d, dim)
        else:
            offset = {"dtype": 64, "ndim": 68, "offset": 104, "length": 112}[key]
            struct.pack_into("<I" if key in ("dtype", "ndim") else "<Q", data, entry + offset,
                             value)
    return reseal(data)


def test_oversized_section(saved, tmp_path):
    # shape and length agree with each other but claim more than the file holds
    path, _, _ = saved
    data = _patched_section(path, "coef", shape=[10**9], length=8 * 10**9)
    with pytest.raises(mlserve.ModelFormatError,
                       match=r"section 'coef': data \(8000000000 bytes at offset \d+\) runs past "
                             r"the end of the file \(\d+ bytes\)"):
        load_bytes(tmp_path, data)


def test_shape_disagrees_with_length(saved, tmp_path):
    path, _, _ = saved
    data = _patched_section(path, "coef", shape=[5])
    with pytest.raises(mlserve.ModelFormatError,
                       match=r"section 'coef': data is 32 bytes, but 5 float64 elements need 40"):
        load_bytes(tmp_path, data)


def test_shape_overflow(saved, tmp_path):
    path, _, _ = saved
    data = _patched_section(path, "coef", ndim=2, shape=[2**62, 2**62])
    with pytest.raises(mlserve.ModelFormatError, match=r"section 'coef': shape is too large"):
        load_bytes(tmp_path, data)


@pytest.mark.parametrize("fields, message", [
    ({"dtype": 77}, r"section 'coef': unknown dtype code 77"),
    ({"ndim": 5}, r"section 'coef': ndim is 5, at most 4 is allowed"),
    ({"offset": 1}, r"section 'coef': data offset 1 is not a multiple of 64"),
    ({"offset": 0}, r"section 'coef' \(bytes 0\.\.32\) overlaps the header \(bytes 0\.\.128\)"),
], ids=["dtype", "ndim", "misaligned", "overlap"])
def test_bad_section_entry(saved, tmp_path, fields, message):
    path, _, _ = saved
    with pytest.raises(mlserve.ModelFormatError, match=message):
        load_bytes(tmp_path, _patched_section(path, "coef", **fields))


def test_sections_overlapping_each_other(saved, tmp_path):
    path, _, _ = saved
    coef = _Layout(path.read_bytes()).sections["coef"]
    data = _patched_section(path, "intercept", offset=coef["offset"])
    with pytest.raises(mlserve.ModelFormatError,
                       match=r"section '(coef|intercept)' \(bytes \d+\.\.\d+\) overlaps section "
                             r"'(coef|intercept)' \(bytes \d+\.\.\d+\): file is corrupt"):
        load_bytes(tmp_path, data)


def test_section_count_larger_than_the_file(saved, tmp_path):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 48, 4000)
    with pytest.raises(mlserve.ModelFormatError,
                       match=r"section table \(4000 entries of 128 bytes at offset \d+\) lies "
                             r"outside the file body"):
        load_bytes(tmp_path, reseal(data))
    struct.pack_into("<I", data, 48, 0xFFFFFFFF)
    with pytest.raises(mlserve.ModelFormatError, match="exceeds the limit of 4096"):
        load_bytes(tmp_path, bytes(data))


def test_metadata_out_of_bounds(saved, tmp_path):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    struct.pack_into("<Q", data, 32, 2**63)
    with pytest.raises(mlserve.ModelFormatError, match=r"metadata is \d+ bytes, the limit is"):
        load_bytes(tmp_path, bytes(data))
    struct.pack_into("<Q", data, 32, len(data))
    with pytest.raises(mlserve.ModelFormatError, match=r"metadata \(\d+ bytes at offset 128\) "
                                                       r"lies outside the file body"):
        load_bytes(tmp_path, bytes(data))


def test_nonzero_padding(saved, tmp_path):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    lay = _Layout(data)
    gap = lay.meta_off + lay.meta_len  # metadata is padded to the table's 64-byte boundary
    assert gap < lay.table_off
    data[gap] = 0x20
    with pytest.raises(mlserve.ModelFormatError, match=r"padding bytes \d+\.\.\d+ are not zero"):
        load_bytes(tmp_path, bytes(data))


def test_not_a_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        mlserve.load(tmp_path / "missing.mls")
    with pytest.raises(OSError, match="Is a directory"):
        mlserve.load(tmp_path)


# ---- atomic save -----------------------------------------------------------


def _leftovers(directory, keep):
    return sorted(set(os.listdir(directory)) - set(keep))


def test_failed_save_into_missing_directory(fitted, tmp_path):
    model, _ = fitted
    target = tmp_path / "no" / "such" / "dir" / "model.mls"
    with pytest.raises(OSError, match="No such file or directory"):
        mlserve.save(model, target)
    assert os.listdir(tmp_path) == []


def test_failed_save_over_a_directory_leaves_no_temp_file(fitted, tmp_path):
    model, _ = fitted
    (tmp_path / "model.mls").mkdir()
    with pytest.raises(OSError, match="rename"):
        mlserve.save(model, tmp_path / "model.mls")
    assert os.listdir(tmp_path) == ["model.mls"]


def test_failed_save_into_read_only_directory_keeps_the_old_file(fitted, rng):
    model, X = fitted
    other = mlserve.LinearRegression().fit(X, rng.normal(size=len(X)))
    # not under tmp_path: its parents are private to the user running the
    # tests, and the non-root child below must reach the directory
    base = pathlib.Path(tempfile.mkdtemp(prefix="mlserve-test-"))
    directory = base / "ro"
    path = directory / "model.mls"
    try:
        os.chmod(base, 0o755)
        os.mkdir(directory)
        mlserve.save(model, path)
        before = path.read_bytes()
        os.chmod(directory, 0o555)
        if os.geteuid() != 0:
            with pytest.raises(OSError, match="Permission denied"):
                mlserve.save(other, path)
        else:
            # root ignores permission bits: save from a child that is not root
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
                pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    mlserve.load(path)  # can read it: the failure below is the write
                    code = 2
                    mlserve.save(other, path)
                    code = 3
                except OSError as exc:
                    code = 0 if code == 2 and "Permission denied" in str(exc) else 4
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        os.chmod(directory, 0o755)
        assert path.read_bytes() == before
        assert os.listdir(directory) == ["model.mls"]
        np.testing.assert_array_equal(mlserve.load(path).predict(X), model.predict(X))
    finally:
        os.chmod(directory, 0o755)
        shutil.rmtree(base)


_SAVE_LOOP = textwrap.dedent("""
    import sys
    import mlserve
    old, new = mlserve.load(sys.argv[1]), mlserve.load(sys.argv[2])
    target = sys.argv[3]
    mlserve.save(old, target)
    print("ready", flush=True)
    while True:
        mlserve.save(new, target)
        mlserve.save(old, target)
""")


def test_crash_during_save_leaves_old_or_new_model(tmp_path, rng):
    # A writer SIGKILLed at a random moment, over and over: the target is
    # always one complete model (a kill may leave a hidden temporary file,
    # never a torn target).
    X = rng.normal(size=(64, 40))
    models = {}
    for name in ("old", "new"):
        Y = rng.normal(size=(64, 12000))  # coef_ of 3.8 MB: saves take a while
        models[name] = mlserve.LinearRegression().fit(X, Y)
        mlserve.save(models[name], tmp_path / f"{name}.mls")
    target = tmp_path / "target.mls"
    seen, torn_writes = set(), 0
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVE_LOOP, str(tmp_path / "old.mls"),
             str(tmp_path / "new.mls"), str(target)],
            stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(float(rng.uniform(0.0, 0.3)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        loaded = mlserve.load(target, verify=True)
        matches = [name for name, m in models.items()
                   if np.array_equal(loaded.coef_, m.coef_)]
        assert len(matches) == 1
        seen.add(matches[0])
        for leftover in _leftovers(tmp_path, ["old.mls", "new.mls", "target.mls"]):
            assert leftover.startswith(".target.mls.tmp."), leftover
            os.unlink(tmp_path / leftover)
            torn_writes += 1
    print(f"after 8 kills the target held {sorted(seen)}; {torn_writes} kills hit a write")
