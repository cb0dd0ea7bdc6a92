"""Crafted .mls files of the recommender kind: every bad section is refused.

The files are written here by an independent writer that follows the layout
in csrc/mls_format.h (checksums included), so the container is valid and
only the recommender's own validation (csrc/mls_topk.c: topk_init) is under
test: missing sections, wrong dtypes and shapes, id counts that disagree,
offsets that point outside their bytes, non-finite factors. A random
search over such files (seeded) must load or raise ModelFormatError, never
crash; this file is in .ci/sanitize's quick list.
"""

import json
import struct

import numpy as np
import pytest

import mlserve
from mlserve import _core

KIND_RECOMMENDER = 5
HEADER = struct.Struct("<8sHHIQQQQIIQ64s")
ENTRY = struct.Struct("<64sII4QQQQ")
DTYPES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3,
          np.dtype(np.int64): 4, np.dtype(np.uint8): 5}  # fmt: skip
METADATA = {"kind": "recommender", "estimator": "Recommender", "task": "recommender",
            "n_features": 3, "regularization": 0.01}  # fmt: skip


def _align(n):
    return (n + 63) // 64 * 64


def mls_bytes(sections, kind=KIND_RECOMMENDER, metadata=None):
    """A complete, checksummed .mls image of ``sections`` (name -> array)."""
    meta = json.dumps(metadata or METADATA).encode()
    table_off = _align(128 + len(meta))
    offset = _align(table_off + 128 * len(sections))
    entries, blobs = [], []
    for name, arr in sections.items():
        arr = np.ascontiguousarray(arr)
        raw = arr.tobytes()
        shape = list(arr.shape) + [0] * (4 - arr.ndim)
        entries.append(ENTRY.pack(name.encode(), DTYPES[arr.dtype], arr.ndim, *shape, offset,
                                  len(raw), _core.checksum64(raw, 0)))  # fmt: skip
        blobs.append((offset, raw))
        offset = _align(offset + len(raw))
    size = offset
    data = bytearray(size)
    data[128 : 128 + len(meta)] = meta
    table = b"".join(entries)
    data[table_off : table_off + len(table)] = table
    for off, raw in blobs:
        data[off : off + len(raw)] = raw
    header = HEADER.pack(b"\x89MLS\r\n\x1a\n", 2, 0, kind, size, 128, len(meta), table_off,
                         len(sections), 0, 0, bytes(64))  # fmt: skip
    h = _core.checksum64(header, 0)
    h = _core.checksum64(meta, h)
    h = _core.checksum64(table, h)
    data[:128] = header[:56] + struct.pack("<Q", h) + header[64:]
    return bytes(data)


def valid_sections(rng, n_users=4, n_items=6, d=3, dtype=np.float64):
    V = rng.normal(size=(n_items, d)).astype(dtype)
    return {
        "user_factors": rng.normal(size=(n_users, d)).astype(dtype),
        "item_factors": V,
        "item_norms": np.linalg.norm(V, axis=1).astype(dtype),
    }


def load(tmp_path, data):
    path = tmp_path / "crafted.mls"
    path.write_bytes(data)
    return mlserve.load(path)


def test_the_writer_makes_files_mlserve_reads(rng, tmp_path):
    sections = valid_sections(rng)
    sections["item_id_offsets"] = np.array([0, 1, 2, 3, 4, 5, 6], dtype=np.int64)
    sections["item_id_bytes"] = np.frombuffer(b"abcdef", dtype=np.uint8)
    model = load(tmp_path, mls_bytes(sections))
    U, V = sections["user_factors"], sections["item_factors"]
    ref = np.argsort(-(U[1] @ V.T), kind="stable")[:3]
    assert model.recommend([1], k=3)[0].tolist() == [["abcdef"[j] for j in ref]]
    assert _core.loads(mls_bytes(sections)).kind == "recommender"


def _with(rng, **changes):
    sections = valid_sections(rng)
    for name, value in changes.items():
        if value is None:
            sections.pop(name)
        else:
            sections[name] = value
    return sections


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"item_factors": None}, "recommender has no 'item_factors' section"),
        ({"user_factors": None}, "recommender has no 'user_factors' section"),
        ({"item_factors": np.ones((6, 3), dtype=np.int64)},
         "section 'item_factors' must be a 2-D float32 or float64 array, got int64"),
        ({"item_factors": np.ones(6)}, "section 'item_factors' must be a 2-D float32 or float64 array, got float64 with 1 dimensions"),
        ({"item_factors": np.ones((6, 2))}, "must have the same dtype and factor dimension"),
        ({"item_factors": np.ones((6, 3), dtype=np.float32)}, "must have the same dtype and factor dimension"),
        ({"item_factors": np.ones((0, 3)), "item_norms": np.ones(0)}, r"at least 1 item and 1 factor, got item_factors of shape \(0, 3\)"),
        ({"item_factors": np.ones((6, 0)), "user_factors": np.ones((4, 0))}, r"at least 1 item and 1 factor"),
        ({"item_norms": None}, r"section 'item_norms' must be float64 of shape \(6,\)"),
        ({"item_norms": np.ones(5)}, r"section 'item_norms' must be float64 of shape \(6,\)"),
        ({"item_norms": np.ones(6, dtype=np.float32)}, r"section 'item_norms' must be float64"),
        ({"item_norms": np.array([1, 1, -1, 1, 1, 1.0])}, "section 'item_norms' has -1 at item 2"),
        ({"item_norms": np.array([1, 1, 1, np.nan, 1, 1.0])}, "section 'item_norms' has nan at item 3"),
        ({"item_factors": np.full((6, 3), np.nan)}, "section 'item_factors' holds NaN or infinity"),
        ({"user_factors": np.array([[0, 0, 0], [0, np.inf, 0.0]])}, "section 'user_factors' holds NaN or infinity"),
        ({"item_ids": np.arange(5, dtype=np.int64)}, r"section 'item_ids' must be int64 of shape \(6,\) \(one id per item\), got int64 with 1 dimensions and 5 values"),
        ({"user_ids": np.arange(5, dtype=np.int64)}, r"section 'user_ids' must be int64 of shape \(4,\)"),
        ({"item_ids": np.arange(6, dtype=np.float64)}, r"section 'item_ids' must be int64"),
        ({"item_ids": np.arange(6, dtype=np.int64), "item_id_bytes": np.zeros(1, np.uint8)}, "both integer and string item ids"),
        ({"item_id_bytes": np.zeros(6, np.uint8)}, "need both 'item_id_offsets' and 'item_id_bytes'"),
        ({"item_id_offsets": np.arange(7, dtype=np.int64)}, "need both 'item_id_offsets' and 'item_id_bytes'"),
        ({"item_id_offsets": np.arange(6, dtype=np.int64), "item_id_bytes": np.zeros(6, np.uint8)},
         r"section 'item_id_offsets' must be int64 of shape \(7,\) \(one more than the item count\), got 6 values"),
        ({"user_id_offsets": np.arange(5, dtype=np.int64), "user_id_bytes": np.zeros(9, np.uint8)},
         "section 'user_id_offsets' must run from 0 to 9"),
        ({"item_id_offsets": np.array([1, 2, 3, 4, 5, 6, 6]), "item_id_bytes": np.zeros(6, np.uint8)},
         "section 'item_id_offsets' must run from 0 to 6 .*, got 1 to 6"),
        ({"item_id_offsets": np.array([0, 4, 2, 3, 4, 5, 6]), "item_id_bytes": np.zeros(6, np.uint8)},
         "section 'item_id_offsets' decreases at 1"),
        ({"item_id_offsets": np.arange(7, dtype=np.int64), "item_id_bytes": np.zeros(6, np.int32)},
         "section 'item_id_bytes' must be a 1-D uint8 array"),
    ],
)  # fmt: skip
def test_bad_sections_are_refused_by_name(rng, tmp_path, changes, message):
    data = mls_bytes(_with(rng, **changes))
    with pytest.raises(mlserve.ModelFormatError, match=message):
        load(tmp_path, data)
    with pytest.raises(mlserve.ModelFormatError, match=message):
        _core.loads(data)


def test_string_ids_that_are_not_utf8_are_refused(rng, tmp_path):
    data = mls_bytes(_with(rng, item_id_offsets=np.arange(7, dtype=np.int64),
                           item_id_bytes=np.full(6, 0xFF, np.uint8)))  # fmt: skip
    model = load(
        tmp_path, data
    )  # C checks counts and offsets; the bytes decode in Python
    with pytest.raises(UnicodeDecodeError):
        model.item_ids  # noqa: B018


def test_truncated_recommender_files_are_refused(rng, tmp_path):
    model = mlserve.Recommender(rng.normal(size=(5, 4)), rng.normal(size=(9, 4)),
                                item_ids=[f"i{j}" for j in range(9)])  # fmt: skip
    path = tmp_path / "full.mls"
    mlserve.save(model, path)
    data = path.read_bytes()
    for cut in sorted(set(range(0, len(data), 37)) | {len(data) - 1, len(data) - 64}):
        with pytest.raises(mlserve.ModelFormatError):
            load(tmp_path, data[:cut])


def test_random_crafted_recommenders_load_or_raise(rng, tmp_path):
    """A seeded search over shapes, dtypes, values and id sections."""
    dtypes = [np.float32, np.float64, np.int64, np.uint8]
    loaded = 0
    for _ in range(300):
        n_users, n_items, d = (int(x) for x in rng.integers(0, 5, size=3))
        sections = {}
        for name, shape in [("user_factors", (n_users, d)), ("item_factors", (n_items, d)),
                            ("item_norms", (n_items,))]:  # fmt: skip
            if rng.random() < 0.05:
                continue
            if rng.random() < 0.1:
                shape = tuple(
                    int(s) for s in rng.integers(0, 5, size=rng.integers(1, 4))
                )
            dtype = (
                dtypes[0] if rng.random() < 0.8 else dtypes[rng.integers(len(dtypes))]
            )
            arr = np.abs(rng.normal(size=shape)).astype(dtype)
            if arr.size and arr.dtype.kind == "f" and rng.random() < 0.1:
                arr.flat[rng.integers(arr.size)] = rng.choice([np.nan, np.inf, -1.0])
            sections[name] = arr
        who = rng.choice(["item", "user"])
        n = n_items if who == "item" else n_users
        choice = rng.integers(4)
        if choice == 1:
            sections[f"{who}_ids"] = np.arange(n + rng.integers(-1, 2), dtype=np.int64)
        elif choice == 2:
            lengths = rng.integers(0, 3, size=max(n + int(rng.integers(-1, 2)), 0))
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            if offsets.size > 1 and rng.random() < 0.3:
                offsets[rng.integers(offsets.size)] += int(rng.integers(-3, 4))
            sections[f"{who}_id_offsets"] = offsets
            sections[f"{who}_id_bytes"] = np.full(
                int(lengths.sum()), ord("x"), np.uint8
            )
        if not sections:
            continue
        data = mls_bytes(sections)
        try:
            model = _core.loads(data)
        except mlserve.ModelFormatError:
            continue
        loaded += 1
        recommender = mlserve.Recommender._from_core_model(model)
        if recommender.n_users:
            items, scores = recommender._run(recommender.user_factors[:1], 1, None, None, None,
                                             cosine=False)  # fmt: skip
            index = _core.topk(
                model, recommender.user_factors[:1], 1, None, None, None, False
            )[0]
            assert items.shape == scores.shape == (1, 1) and 0 <= index[0, 0] < n_items
    assert loaded > 10  # the search reaches valid files too
