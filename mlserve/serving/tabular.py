"""Pipelines over HTTP: named columns of mixed types (numbers and strings) decoded
for a pipeline model (mlserve.PipelineModel, MLS_KIND_PIPELINE).

A pipeline takes columns, not a float matrix: the codecs hand its batch over as
a ColumnRows (the input columns by name, numeric ones as float64 arrays, string
ones as object arrays of str/None), which the one predict path of runtime.py
passes to the model as it would pass rows. A value of the wrong type is a 400
naming the column and the row. String values arrive as the str objects the C
JSON decoder makes; the C transform reads their UTF-8 in place (no copy) and
looks them up in the training categories' hash table.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlserve._mixins import feature_mismatch
from mlserve._pipeline import check_string_column, numeric_column, string_column
from mlserve.serving.errors import BadRequest


def is_pipeline(loaded: Any) -> bool:
    return loaded.metadata.get("input_schema") is not None


class ColumnRows(dict):
    """A batch of a pipeline's input columns, by name, in the schema's order.

    ``shape`` and ``ndim`` answer as a 2-D batch of rows does, for the row limits,
    metrics and the cache key.
    """

    ndim = 2

    def __init__(self, columns: Mapping[str, np.ndarray], n_rows: int) -> None:
        super().__init__(columns)
        self.shape = (int(n_rows), len(columns))

    def canonical_bytes(self) -> bytes:
        """The batch as bytes for the response cache's key."""
        h = hashlib.sha256()
        for name, values in self.items():
            h.update(name.encode() + b"\0")
            if values.dtype.kind == "f":
                h.update(b"f" + np.ascontiguousarray(values).tobytes())
            else:
                for v in values.tolist():
                    h.update(b"\1" if v is None else b"s" + v.encode() + b"\0")
        return h.digest()


def _schema(loaded: Any) -> list:
    return loaded.metadata["input_schema"]


def column_datatypes(loaded: Any) -> list[tuple[str, str]]:
    """(name, V2 datatype) of each input column: BYTES for strings, FP64 for numbers."""
    return [(c["name"], "BYTES" if c["kind"] != "numeric" else "FP64") for c in _schema(loaded)]


def _converted(columns: Mapping[str, Any], loaded: Any, what: str) -> ColumnRows:
    out = {}
    n_rows = None
    for col in _schema(loaded):
        name = col["name"]
        values = columns[name]
        if isinstance(values, np.ndarray) and values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        try:
            if col["kind"] == "numeric":
                values = numeric_column(name, values)
            else:
                values = string_column(name, values.tolist() if isinstance(values, np.ndarray)
                                       and values.dtype.kind != "O" else values)
                check_string_column(name, values)  # a 400 naming the row, before the model
        except ValueError as exc:
            raise BadRequest(f"{what}: {exc}") from None
        if values.ndim != 1:
            raise BadRequest(f"{what} column {name!r} must be a flat list of values")
        if n_rows is None:
            n_rows = values.shape[0]
        elif values.shape[0] != n_rows:
            raise BadRequest(f"{what} columns must all have the same length: {name!r} has "
                             f"{values.shape[0]}, the first has {n_rows}")
        out[name] = values
    if not n_rows:
        raise BadRequest(f"{what} is empty: send at least one row")
    return ColumnRows(out, n_rows)


def records_to_columns(records: Any, loaded: Any, what: str) -> ColumnRows:
    """``[{"col": value, ...}, ...]``: every record names exactly the input columns."""
    if isinstance(records, np.ndarray):
        records = records.tolist()
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BadRequest(f"{what} must be a list of objects mapping column names to values")
    if not records:
        raise BadRequest(f"'{what}' is empty: send at least one row")
    order = [c["name"] for c in _schema(loaded)]
    expected = set(order)
    for i, record in enumerate(records):
        if record.keys() != expected:
            label = what if len(records) == 1 else f"{what} row {i}"
            raise BadRequest(feature_mismatch(list(record), order, label))
    return _converted({n: [r[n] for r in records] for n in order}, loaded, what)


def mapping_to_columns(columns: Mapping[str, Any], loaded: Any, what: str) -> ColumnRows:
    """``{"col": [values...], ...}``: one list per input column."""
    order = [c["name"] for c in _schema(loaded)]
    message = feature_mismatch(list(columns), order, what)
    if message is not None:
        raise BadRequest(message)
    return _converted(columns, loaded, what)


def split_to_columns(names: Any, data: Any, loaded: Any, what: str) -> ColumnRows:
    """dataframe_split: ``columns`` (names) and ``data`` (rows of values)."""
    if isinstance(names, np.ndarray):
        names = names.tolist()
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise BadRequest("'dataframe_split' of a pipeline needs 'columns': a list of names")
    if isinstance(data, np.ndarray):  # all numbers, packed by the JSON decoder
        if data.ndim != 2:
            raise BadRequest(f"{what} must be a list of rows")
        return mapping_to_columns(dict(zip(names, data.T)), loaded, what)
    if not isinstance(data, list) or not all(isinstance(r, (list, np.ndarray)) for r in data):
        raise BadRequest(f"{what} must be a list of rows")
    rows = [r.tolist() if isinstance(r, np.ndarray) else r for r in data]
    for i, r in enumerate(rows):
        if len(r) != len(names):
            raise BadRequest(f"{what} row {i} has {len(r)} values for {len(names)} columns")
    if len(set(names)) != len(names) or not rows:
        return mapping_to_columns({n: [] for n in names}, loaded, what)
    return mapping_to_columns({n: [r[j] for r in rows] for j, n in enumerate(names)}, loaded,
                              what)


def v2_columns(arrays: Sequence[tuple[str, np.ndarray]], loaded: Any) -> ColumnRows:
    """V2 inputs of a pipeline: one input per column, by name."""
    columns: dict[str, np.ndarray] = {}
    for name, array in arrays:
        if name in columns:
            raise BadRequest(f"input {name!r} appears twice")
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise BadRequest(f"a pipeline takes one input per column, of shape [n] or [n, 1]; "
                             f"input {name!r} has shape {list(array.shape)}")
        columns[name] = array
    return mapping_to_columns(columns, loaded, "inputs")


def warm_up_columns(loaded: Any) -> ColumnRows:
    """One row: 0.0 in numeric columns, a known category (or missing) in string ones."""
    out = {}
    for c in _schema(loaded):
        if c["kind"] == "numeric":
            out[c["name"]] = np.zeros(1)
        else:
            cats = c.get("categories") or [None]
            out[c["name"]] = np.array([cats[0]], dtype=object)
    return ColumnRows(out, 1)


def csv_to_columns(header: list, data: list, loaded: Any) -> ColumnRows:
    """A CSV body: numbers parsed per numeric column (empty: missing), strings as given
    (empty: missing)."""
    kinds = {c["name"]: c["kind"] for c in _schema(loaded)}
    for i, line in enumerate(data):
        if len(line) != len(header):
            raise BadRequest(f"CSV row {i} has {len(line)} values for {len(header)} columns")
    columns: dict[str, list] = {}
    for j, name in enumerate(header):
        values: list = [line[j] if line[j] != "" else None for line in data]
        if kinds.get(name) == "numeric":
            for i, v in enumerate(values):
                if v is not None:
                    try:
                        values[i] = float(v)
                    except ValueError:
                        raise BadRequest(f"CSV data: column {name!r}, row {i}: expected a "
                                         f"number, got {v[:40]!r}") from None
        columns[name] = values
    return mapping_to_columns(columns, loaded, "CSV data")
