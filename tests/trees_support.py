"""Helpers shared by tests/test_trees_*.py."""
from __future__ import annotations

import json
import struct

import numpy as np

import mlserve
from mlserve import _core


def reference_twin(model):
    """The same tree model run by the C reference walker (config[7] = 1)."""
    core = model.model_
    arrays = {k: np.array(v) for k, v in core.arrays().items()}
    arrays["config"][7] = 1
    twin = mlserve.TreeEnsembleModel()
    twin._install(_core.create("tree_ensemble", arrays, core.metadata))
    return twin


def rebuild(model, **changes):
    """_core.create with some arrays replaced (raises what create raises)."""
    core = model.model_
    arrays = {k: np.array(v) for k, v in core.arrays().items()}
    for name, value in changes.items():
        if value is None:
            arrays.pop(name, None)
        else:
            arrays[name] = value
    return _core.create("tree_ensemble", arrays, core.metadata)


def patch_section(path, name: str, data: bytes, *, fix_checksums: bool = True) -> None:
    """Overwrite section `name` of an .mls file in place (same length), and
    recompute its checksum and the header's (layout: csrc/mls_format.h)."""
    with open(path, "r+b") as f:
        buf = bytearray(f.read())
        meta_off, meta_len, table_off = struct.unpack_from("<QQQ", buf, 24)
        (count,) = struct.unpack_from("<I", buf, 48)
        for i in range(count):
            e = table_off + 128 * i
            entry_name = bytes(buf[e:e + 64]).rstrip(b"\0").decode()
            if entry_name != name:
                continue
            offset, length = struct.unpack_from("<QQ", buf, e + 104)
            assert len(data) == length, (len(data), length)
            buf[offset:offset + length] = data
            if fix_checksums:
                struct.pack_into("<Q", buf, e + 120, _core.checksum64(bytes(data), 0))
            break
        else:
            raise KeyError(name)
        if fix_checksums:
            header = bytearray(buf[:128])
            header[56:64] = b"\0" * 8
            h = _core.checksum64(bytes(header), 0)
            h = _core.checksum64(bytes(buf[meta_off:meta_off + meta_len]), h)
            h = _core.checksum64(bytes(buf[table_off:table_off + 128 * count]), h)
            struct.pack_into("<Q", buf, 56, h)
        f.seek(0)
        f.write(buf)


def metadata(model) -> dict:
    return json.loads(model.model_.metadata)
