"""Request decoding and response encoding for each protocol.

Every decoder turns a request body into one 2-D numeric matrix (and the names
of the outputs wanted); every encoder turns the model's output arrays into
the protocol's response. The model itself is only ever called through
:func:`mlserve.serving.runtime.predict`.

Protocols:

* TF Serving / KServe V1: ``{"instances": [...]}`` (rows) or ``{"inputs": ...}``
  (columnar) -> ``{"predictions": ...}`` / ``{"outputs": ...}``.
* KServe V2 / Open Inference Protocol, with the binary tensor data extension
  (a JSON header of ``Inference-Header-Content-Length`` bytes followed by raw
  little-endian tensors; BYTES elements are each prefixed by a 4-byte length).
* MLflow scoring: exactly one of ``dataframe_split``, ``dataframe_records``,
  ``instances``, ``inputs``; or a CSV body with a header row.
* Simple: ``{"features": [...]}``, ``{"instances": [[...]]}`` or an ``.npy`` body.
"""

from __future__ import annotations

import csv
import io
import math
import struct
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from mlserve._core import json_decode, json_encode
from mlserve._mixins import feature_mismatch
from mlserve.serving.errors import BadRequest, PayloadTooLarge
from mlserve.serving.runtime import PREDICT, PREDICT_PROBA, TRANSFORM, LoadedModel
from mlserve.serving.tabular import (
    csv_to_columns,
    is_pipeline,
    mapping_to_columns,
    records_to_columns,
    split_to_columns,
    v2_columns,
)

__all__ = [
    "V2_DATATYPES",
    "decode_json",
    "decode_mlflow_csv",
    "decode_mlflow_json",
    "decode_npy",
    "decode_simple_json",
    "decode_v1",
    "decode_v2",
    "encode_json",
    "encode_npy",
    "encode_simple",
    "encode_v1",
    "encode_v2",
    "outputs_for_return",
    "to_numeric_array",
    "v2_datatype",
]

#: KServe V2 tensor datatypes and the numpy dtypes they travel as (little-endian).
V2_DATATYPES: Mapping[str, np.dtype] = MappingProxyType(
    {
        "BOOL": np.dtype("?"),
        "UINT8": np.dtype("<u1"),
        "UINT16": np.dtype("<u2"),
        "UINT32": np.dtype("<u4"),
        "UINT64": np.dtype("<u8"),
        "INT8": np.dtype("<i1"),
        "INT16": np.dtype("<i2"),
        "INT32": np.dtype("<i4"),
        "INT64": np.dtype("<i8"),
        "FP16": np.dtype("<f2"),
        "FP32": np.dtype("<f4"),
        "FP64": np.dtype("<f8"),
    }
)

#: Most nested arrays/objects a request body may have (V1 records are 4 deep).
JSON_MAX_DEPTH = 64

RETURN_CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "predict": (PREDICT,),
        "proba": (PREDICT_PROBA,),
        "all": (PREDICT, PREDICT_PROBA),
        "distances": (TRANSFORM,),  # k-means: the distances to every center
    }
)


# ------------------------------------------------------------------ shared


def decode_json(body: bytes) -> dict[str, Any]:
    """Parse a JSON object body in C; anything else is a 400 that says what is wrong.

    Strict RFC 8259 (no NaN/Infinity literals), and no key twice in one object;
    GIL released for large bodies; every rectangular array of numbers arrives
    as a float64 ndarray (booleans as a bool ndarray), so no Python float is
    made per number. Other arrays (ragged, mixed, strings, objects) are lists.
    """
    if not body:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        # unique keys: a record that names a feature twice would lose a value silently
        data = json_decode(body, max_depth=JSON_MAX_DEPTH, unique_keys=True)
    except ValueError as exc:
        raise BadRequest(_json_error_message(str(exc))) from None
    if not isinstance(data, dict):
        raise BadRequest(f"expected a JSON object, got {_json_type(data)}")
    return data


def _json_error_message(message: str) -> str:
    """The 400 message for a json_decode error (which names line and column)."""
    if message.startswith("number out of range"):
        return "a number is too large for float64" + message[len("number out of range") :]
    if message.startswith("duplicate key"):
        return f"{message}; keys must be unique (a repeated feature would lose a value)"
    if message.startswith("JSON nested deeper than"):
        position = message[message.find(" at line") :] if " at line" in message else ""
        return f"malformed JSON: nested too deeply (more than {JSON_MAX_DEPTH} levels){position}"
    return f"malformed JSON: {message}"


def encode_json(payload: Any) -> bytes:
    """JSON bytes of a response payload (ndarrays formatted in C); NaN/infinity is a 400.

    A model can only produce NaN or infinity from inputs at the edge of the
    float range (e.g. 1e308 times a weight); JSON cannot carry them.
    """
    try:
        return json_encode(payload)
    except ValueError:
        raise BadRequest(
            "the prediction is NaN or infinity, which JSON cannot represent "
            "(are the inputs within range?); request application/x-npy or V2 binary outputs"
        ) from None


def _json_type(value: Any) -> str:
    return {
        list: "an array",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
        dict: "an object",
        np.ndarray: "an array",
    }.get(type(value), type(value).__name__)


def _as_list(value: Any) -> Any:
    """A JSON array that json_decode packed as an ndarray, as a list (off the hot path)."""
    return value.tolist() if isinstance(value, np.ndarray) else value


def to_numeric_array(data: Any, what: str) -> np.ndarray:
    """``data`` (nested lists of numbers) as a numeric array, without per-number Python work.

    Booleans become 0/1 and null becomes NaN (which the model then rejects
    unless it handles missing values); strings, objects and ragged rows are
    a 400 naming ``what``.
    """
    if type(data) is np.ndarray:  # json_decode's packed arrays: float64 or bool
        if data.dtype.kind == "b":
            return data.astype(np.float64)
        return data
    if isinstance(data, (str, bytes, dict)) or data is None:
        raise BadRequest(f"{what} must be an array of numbers, got {_json_type(data)}")
    try:
        array = np.asarray(data)
    except ValueError:
        raise BadRequest(
            f"{what} must be a rectangular array: rows have different lengths"
        ) from None
    kind = array.dtype.kind
    if kind in "fiu":
        return array
    if kind == "b":
        return array.astype(np.float64)
    if kind == "O":
        try:
            return array.astype(np.float64)
        except OverflowError:
            raise BadRequest(f"{what} has a number too large for float64") from None
        except (TypeError, ValueError):
            pass
    raise BadRequest(f"{what} must contain only numbers, found {_first_non_number(data)}")


def _first_non_number(data: Any) -> str:
    """Describe the first value in nested lists that is not a number (error path only)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, (list, tuple)):
            stack.extend(reversed(value))
        elif isinstance(value, str):
            return f"the string {value[:40]!r}"
        elif isinstance(value, dict):
            return "an object"
        elif isinstance(value, np.ndarray):
            stack.extend(reversed(value.tolist()))
    return "a value that is not a number"


#: numpy refuses shapes whose non-zero dimensions multiply past this many bytes,
#: even for an empty array (shape [0, 2**62]); found by fuzzing the V2 and npy decoders
MAX_ARRAY_BYTES = 2**62


def check_dimensions(shape: Sequence[int], itemsize: int, what: str) -> None:
    """A 400 for a claimed shape numpy cannot represent (checked before any reshape)."""
    size = itemsize
    for dimension in shape:
        size *= max(int(dimension), 1)
        if size >= MAX_ARRAY_BYTES:
            raise BadRequest(f"{what}: shape {list(shape)} is too large")


def as_rows(array: np.ndarray, loaded: LoadedModel, what: str) -> np.ndarray:
    """A batch as 2-D rows: 1-D input is one row (or one column for a 1-feature model)."""
    if array.ndim == 2:
        return array
    if array.ndim == 1:
        if loaded.n_features == 1 and array.shape[0] != 1:
            return array.reshape(-1, 1)
        return array.reshape(1, -1)
    shape = loaded.input_shape
    if shape is not None:  # a graph model takes whole N-D tensors: [N, *input_shape]
        if array.ndim == len(shape) + 1 and tuple(array.shape[1:]) == shape:
            return array.reshape(array.shape[0], -1)
        raise BadRequest(
            f"{what} must have shape {['N', *shape]} (or rows of {loaded.n_features} values), "
            f"got {list(array.shape)}"
        )
    raise BadRequest(f"{what} must be a list of rows (2 dimensions), got {array.ndim} dimensions")


def columns_to_rows(
    columns: Mapping[str, Any], loaded: LoadedModel, what: str, *, ordered: bool = False
) -> np.ndarray:
    """Named feature columns (``{"age": [..], "income": [..]}``) as 2-D rows in the model's order.

    ``ordered``: the names come from a list (V2 inputs), so their order is the
    client's and a model without feature names may take them by position.
    """
    if is_pipeline(loaded):  # named columns of mixed types (serving/tabular.py)
        return mapping_to_columns(columns, loaded, what)
    order = feature_order(list(columns), loaded, what, ordered=ordered)
    arrays = []
    for name in order:
        column = to_numeric_array(columns[name], f"{what} column {name!r}")
        if column.ndim == 0:
            column = column.reshape(1)
        elif column.ndim == 2 and column.shape[1] == 1:
            column = column[:, 0]
        if column.ndim != 1:
            raise BadRequest(f"{what} column {name!r} must be a flat list of numbers")
        arrays.append(column)
    lengths = {name: column.shape[0] for name, column in zip(order, arrays)}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name!r} has {n}" for name, n in list(lengths.items())[:4])
        raise BadRequest(f"{what} columns must all have the same length: {shown}")
    if arrays and not arrays[0].shape[0]:
        raise BadRequest(f"{what} columns are empty: send at least one row")
    return np.column_stack(arrays)


def feature_order(
    names: Sequence[str], loaded: LoadedModel, what: str, *, ordered: bool = True
) -> list[str]:
    """``names`` in the model's feature order; missing, unknown or repeated names are a 400.

    A model fitted without feature names takes ``names`` by position, as a
    DataFrame is taken, but only when they come in an order the client chose
    (a list: CSV header, dataframe_split columns, V2 inputs). Keys of a JSON
    object (records, a columns object) have no order by the JSON standard,
    so such a model refuses them rather than guess.
    """
    expected = loaded.feature_names
    if expected is None:
        if not ordered:
            raise BadRequest(
                f"model {loaded.name!r} was fitted without feature names, so the names in "
                f"{what} cannot be matched to its features; send each row as a list of "
                f"{loaded.n_features} numbers in the training order"
            )
        if len(names) != loaded.n_features:
            raise BadRequest(
                f"{what} has {len(names)} columns; model {loaded.name!r} expects "
                f"{loaded.n_features} features"
            )
        return list(names)
    message = feature_mismatch(names, expected, what)
    if message is not None:
        raise BadRequest(message)
    return list(expected)


def _empty(what: str) -> BadRequest:
    return BadRequest(f"'{what}' is empty: send at least one row")


def records_to_rows(records: Any, loaded: LoadedModel, what: str) -> np.ndarray:
    """A list of ``{feature: value}`` objects as 2-D rows in the model's feature order.

    Every record must name exactly the model's features; the first one that
    does not is a 400 naming its row (counted from 0) and the feature.
    """
    if is_pipeline(loaded):
        return records_to_columns(records, loaded, what)
    records = _as_list(records)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BadRequest(f"{what} must be a list of objects mapping feature names to numbers")
    if not records:
        raise _empty(what)
    if loaded.feature_names is None:
        feature_order(list(records[0]), loaded, what, ordered=False)  # raises: no names
    order = list(loaded.feature_names)
    expected = set(order)
    for i, record in enumerate(records):
        if record.keys() != expected:
            label = what if len(records) == 1 else f"{what} row {i}"
            raise BadRequest(feature_mismatch(list(record), order, label))
    rows = [[record[name] for name in order] for record in records]
    return to_numeric_array(rows, what)


def outputs_for_return(value: Any, loaded: LoadedModel) -> tuple[str, ...]:
    """The outputs named by a ``"return"`` option: predict (default), proba or all."""
    if value is None:
        return (PREDICT,)
    outputs = RETURN_CHOICES.get(value) if isinstance(value, str) else None
    if outputs is None:
        raise BadRequest(
            f"'return' must be one of {', '.join(map(repr, RETURN_CHOICES))}, got {value!r}"
        )
    return checked_outputs(value, outputs, loaded, f"model {loaded.name!r}")


def checked_outputs(
    value: str, outputs: tuple[str, ...], loaded: LoadedModel, what: str
) -> tuple[str, ...]:
    """``outputs`` of a return choice, for this model: "all" of a k-means model is its
    ids and distances; probabilities need a classifier, distances a k-means model."""
    if loaded.is_clusterer and value == "all":
        return (PREDICT, TRANSFORM)
    if PREDICT_PROBA in outputs and not loaded.is_classifier:
        raise BadRequest(f"{what} is not a classifier; it has no probabilities")
    if TRANSFORM in outputs and not loaded.is_clusterer:
        raise BadRequest(
            f"{what} is not a k-means model; it has no distances (only a clusterer has)"
        )
    return outputs


def _jsonable(array: np.ndarray) -> Any:
    """An output array as json_encode takes it: numbers stay an ndarray (formatted in C)."""
    if array.dtype.kind in "fiub":
        return array
    return _tolist(array)


def _tolist(array: np.ndarray) -> Any:
    if array.dtype.kind == "S":
        return np.char.decode(array, "utf-8", "replace").tolist()
    return array.tolist()


# ---------------------------------------------------------- TF Serving / V1


@dataclass
class V1Request:
    rows: np.ndarray
    outputs: tuple[str, ...]
    columnar: bool


def decode_v1(body: Mapping[str, Any], loaded: LoadedModel) -> V1Request:
    """``{"instances": [...]}`` (row format) or ``{"inputs": ...}`` (columnar format)."""
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise BadRequest("request must contain exactly one of 'instances' or 'inputs'")
    outputs = outputs_for_return(body.get("return"), loaded)
    if has_instances:
        return V1Request(_instances_to_rows(body["instances"], loaded, "instances"), outputs, False)
    return V1Request(_inputs_to_rows(body["inputs"], loaded, "inputs"), outputs, True)


def _instances_to_rows(instances: Any, loaded: LoadedModel, what: str) -> np.ndarray:
    if is_pipeline(loaded):
        if isinstance(instances, list) and instances and isinstance(instances[0], dict):
            return records_to_columns(instances, loaded, what)
        raise BadRequest(f"model {loaded.name!r} is a pipeline: send '{what}' as records, "
                         "objects mapping each column name to its value")
    if type(instances) is np.ndarray:  # rows of numbers, packed by json_decode
        if not instances.size and instances.ndim == 1:
            raise _empty(what)
        return as_rows(to_numeric_array(instances, what), loaded, what)
    if not isinstance(instances, list):
        raise BadRequest(f"'{what}' must be a list, got {_json_type(instances)}")
    if not instances:
        raise _empty(what)
    if instances and isinstance(instances[0], dict):
        first = instances[0]
        if len(first) == 1 and not (
            loaded.feature_names and next(iter(first)) in loaded.feature_names
        ):
            key = next(iter(first))  # one named input tensor per instance: {"input": [...]}
            try:
                values = [instance[key] for instance in instances]
            except (KeyError, TypeError):
                raise BadRequest(f"every instance must have the input {key!r}") from None
            return as_rows(to_numeric_array(values, what), loaded, what)
        return records_to_rows(instances, loaded, what)
    return as_rows(to_numeric_array(instances, what), loaded, what)


def _inputs_to_rows(inputs: Any, loaded: LoadedModel, what: str) -> np.ndarray:
    if is_pipeline(loaded):
        if isinstance(inputs, dict):
            return mapping_to_columns(inputs, loaded, what)
        raise BadRequest(f"model {loaded.name!r} is a pipeline: send '{what}' as an object "
                         "mapping each column name to its list of values")
    if isinstance(inputs, (list, np.ndarray)) and len(inputs) == 0:
        raise _empty(what)
    if isinstance(inputs, dict):
        if len(inputs) == 1 and not (
            loaded.feature_names and next(iter(inputs)) in loaded.feature_names
        ):
            return as_rows(to_numeric_array(next(iter(inputs.values())), what), loaded, what)
        return columns_to_rows(inputs, loaded, what)
    return as_rows(to_numeric_array(inputs, what), loaded, what)


def encode_v1(results: Mapping[str, np.ndarray], request: V1Request) -> dict[str, Any]:
    """``{"predictions": ...}`` for row requests, ``{"outputs": ...}`` for columnar ones."""
    if len(results) == 1:
        value = _jsonable(next(iter(results.values())))
        return {"outputs": value} if request.columnar else {"predictions": value}
    if request.columnar:
        return {"outputs": {name: _jsonable(a) for name, a in results.items()}}
    lists = {name: _tolist(a) for name, a in results.items()}
    n = len(next(iter(lists.values())))
    return {"predictions": [{name: lists[name][i] for name in lists} for i in range(n)]}


# ----------------------------------------------------------- KServe V2 / OIP


@dataclass
class V2Output:
    name: str
    binary: bool


@dataclass
class V2Request:
    rows: np.ndarray
    outputs: list[V2Output]
    id: Any = None
    binary_default: bool = False
    input_dtypes: list[str] = field(default_factory=list)


def v2_datatype(dtype: np.dtype) -> str:
    """The V2 datatype name of a numpy dtype (strings and objects are BYTES)."""
    if dtype.kind in "USO":
        return "BYTES"
    for name, candidate in V2_DATATYPES.items():
        if candidate == dtype.newbyteorder("<") or candidate == dtype:
            return name
    raise BadRequest(f"output dtype {dtype} has no V2 datatype")


def split_v2_body(body: bytes, header_length: str | None) -> tuple[bytes, Any]:
    """(JSON header bytes, binary tensor bytes) of a V2 body (Inference-Header-Content-Length)."""
    binary: Any = b""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(
                f"Inference-Header-Content-Length must be an integer, got {header_length!r}"
            ) from None
        if not 0 <= length <= len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {length} but the body is {len(body)} bytes"
            )
        body, binary = body[:length], memoryview(body)[length:]
    return body, binary


def decode_v2(body: bytes, header_length: str | None, loaded: LoadedModel) -> V2Request:
    """A V2 inference request: JSON, or JSON header plus binary tensors."""
    body, binary = split_v2_body(body, header_length)
    header = decode_json(body)
    inputs = _as_list(header.get("inputs"))
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    offset = 0
    arrays: list[tuple[str, np.ndarray]] = []
    dtypes: list[str] = []
    for position, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise BadRequest(f"input {position} must be an object with name, shape, datatype")
        array, used = _decode_v2_tensor(tensor, position, binary, offset,
                                        allow_bytes=is_pipeline(loaded))
        offset += used
        arrays.append((str(tensor.get("name")), array))
        dtypes.append(tensor["datatype"])
    if offset != len(binary):
        raise BadRequest(
            f"the body has {len(binary)} bytes of binary tensor data but the inputs "
            f"declare {offset} (binary_data_size)"
        )
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"'id' must be a string, got {_json_type(request_id)}")  # found by schemathesis
    rows = _v2_inputs_to_rows(arrays, loaded)
    outputs, binary_default = _v2_requested_outputs(header, loaded)
    return V2Request(rows, outputs, request_id, binary_default, dtypes)


def _decode_v2_tensor(
    tensor: Mapping[str, Any], position: int, binary: Any, offset: int,
    allow_bytes: bool = False,
) -> tuple[np.ndarray, int]:  # fmt: skip
    name = tensor.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"input {position} has no 'name'")
    datatype = tensor.get("datatype")
    shape = _shape_list(tensor.get("shape"))
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of non-negative integers")
    if datatype is None:
        raise BadRequest(
            f"input {name!r} has no 'datatype'; expected one of {', '.join(_V2_INPUT_DATATYPES)}"
        )
    if datatype == "BYTES":  # strings, for a pipeline's string columns (JSON data only)
        if not allow_bytes:
            raise BadRequest(f"input {name!r}: datatype BYTES is not supported; send numbers")
        return _decode_v2_bytes(tensor, name, shape), 0
    dtype = V2_DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadRequest(
            f"input {name!r}: unknown datatype {datatype!r}; expected one of "
            + ", ".join(_V2_INPUT_DATATYPES)
        )
    check_dimensions(shape, dtype.itemsize, f"input {name!r}")
    count = math.prod(shape)
    parameters = _optional_object(tensor.get("parameters"), f"input {name!r}: 'parameters'")
    if "shared_memory_region" in parameters:
        raise BadRequest(f"input {name!r}: shared memory is not supported")
    size = parameters.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
        if size != count * dtype.itemsize:
            raise BadRequest(
                f"input {name!r}: binary_data_size is {size} bytes but shape {shape} "
                f"of {datatype} needs {count * dtype.itemsize}"
            )
        if offset + size > len(binary):
            raise BadRequest(
                f"input {name!r}: binary_data_size {size} runs past the end of the body"
            )
        raw = binary[offset : offset + size]
        if dtype.kind == "b":  # any byte would read as a bool; only 0 and 1 are BOOL values
            as_bytes = np.frombuffer(raw, dtype=np.uint8)
            if (as_bytes > 1).any():
                i = int(np.argmax(as_bytes > 1))
                raise BadRequest(
                    f"input {name!r}: BOOL binary data holds byte {int(as_bytes[i])} at "
                    f"position {i}; expected 0 (false) or 1 (true)"
                )
        return np.frombuffer(raw, dtype=dtype).reshape(shape), size
    if "data" not in tensor:
        raise BadRequest(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    data = tensor["data"]
    _check_v2_booleans(data, datatype, name)
    values = to_numeric_array(data, f"input {name!r} data")
    if values.size != count:
        raise BadRequest(
            f"input {name!r}: shape {shape} needs {count} values, 'data' has {values.size}"
        )
    values = values.reshape(shape)
    if dtype.kind == "f" and dtype.itemsize < 8:
        # the precision the client declared, as a binary tensor would carry it
        with np.errstate(over="ignore", invalid="ignore"):
            cast = values.astype(dtype, copy=False)
        if np.isinf(cast).any():  # JSON has no infinity: each one is an overflow
            i = int(np.argmax(np.isinf(cast.reshape(-1))))
            raise BadRequest(
                f"input {name!r}: {_v2_value(values.reshape(-1)[i])} at position {i} is out "
                f"of range for {datatype} (largest {float(np.finfo(dtype).max):g})"
            )
        return cast, 0
    if dtype.kind in "iu":
        _check_v2_integers(values, dtype, datatype, name)
    return values, 0  # the model computes in floating point; FP64 is used as decoded


def _decode_v2_bytes(tensor: Mapping[str, Any], name: str, shape: list) -> np.ndarray:
    """A BYTES input given as JSON data: strings (null: missing) as an object array."""
    parameters = _optional_object(tensor.get("parameters"), f"input {name!r}: 'parameters'")
    if "binary_data_size" in parameters or "data" not in tensor:
        raise BadRequest(f"input {name!r}: BYTES inputs must be JSON 'data' (strings), not "
                         "binary tensor data")
    data = _as_list(tensor["data"])
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: 'data' must be a list of strings")
    flat = data
    if flat and isinstance(flat[0], list):
        flat = [v for row in flat for v in (row if isinstance(row, list) else [row])]
    if len(flat) != math.prod(shape):
        raise BadRequest(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} values, 'data' has "
            f"{len(flat)}"
        )
    values = np.empty(len(flat), dtype=object)
    values[:] = flat
    return values.reshape(shape)


#: What a V2 input may be, in the order the errors list them (BYTES is refused).
_V2_INPUT_DATATYPES = (
    "FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8",
    "UINT64", "UINT32", "UINT16", "UINT8", "BOOL",
)  # fmt: skip


def _v2_value(value: Any) -> str:
    """A value as the client wrote it in JSON: whole numbers without '.0', NaN as null."""
    value = float(value)
    if math.isnan(value):
        return "null"
    if value.is_integer() and abs(value) < 1e20:  # as written, not 9.2e+18
        return str(int(value))
    return repr(value)


def _check_v2_booleans(data: Any, datatype: str, name: str) -> None:
    """BOOL data is only true/false, and only BOOL data holds true/false.

    json_decode packs a rectangular array as one ndarray (bool for all
    true/false), so the numeric fast path costs one dtype check here.
    """
    if type(data) is np.ndarray:
        is_bool = data.dtype.kind == "b"
        if datatype == "BOOL" and not is_bool and data.size:
            raise BadRequest(
                f"input {name!r}: BOOL data must be true or false, got "
                f"{_v2_value(data.reshape(-1)[0])}"
            )
        if datatype != "BOOL" and is_bool:
            raise BadRequest(
                f"input {name!r}: {datatype} data must be numbers, got true/false "
                "(only BOOL inputs take booleans)"
            )
        return
    stack = [data]  # nested lists (ragged or mixed): the slow path
    while stack:
        value = stack.pop()
        if isinstance(value, (list, tuple)):
            stack.extend(reversed(value))
        elif isinstance(value, np.ndarray):
            stack.extend(reversed(value.tolist()))
        elif datatype == "BOOL" and not isinstance(value, bool):
            shown = _v2_value(value) if isinstance(value, (int, float)) else repr(value)[:40]
            raise BadRequest(f"input {name!r}: BOOL data must be true or false, got {shown}")
        elif datatype != "BOOL" and isinstance(value, bool):
            raise BadRequest(
                f"input {name!r}: {datatype} data must be numbers, got "
                f"{'true' if value else 'false'} (only BOOL inputs take booleans)"
            )


def _check_v2_integers(values: np.ndarray, dtype: np.dtype, datatype: str, name: str) -> None:
    """Whole numbers within the datatype's range; never wrapped or truncated."""
    info = np.iinfo(dtype)
    flat = values.reshape(-1)
    # float(max) + 1 is exact as a bound (2**63 for INT64), float(max) alone is not
    fits = (flat >= float(info.min)) & (flat < float(info.max) + 1.0)  # NaN fails both
    if flat.dtype.kind == "f":
        fits &= flat == np.floor(flat)
    if fits.all():
        return
    i = int(np.argmin(fits))
    value = float(flat[i])
    if math.isnan(value):
        problem = f"null at position {i} is not a number, which {datatype} needs"
    elif value.is_integer():
        problem = (
            f"{_v2_value(value)} at position {i} is out of range for {datatype} "
            f"({info.min} to {info.max})"
        )
    else:
        problem = f"{value!r} at position {i} is not a whole number, which {datatype} needs"
    raise BadRequest(f"input {name!r}: {problem}")


def _shape_list(shape: Any) -> Any:
    """A V2 'shape' packed as a float ndarray, as a list of ints when every value is one."""
    if not isinstance(shape, np.ndarray):
        return shape
    if shape.ndim == 1 and shape.dtype.kind == "f" and bool(
        np.all((shape == np.floor(shape)) & (shape >= 0) & (shape < 2.0**53))
    ):
        return [int(s) for s in shape.tolist()]
    return shape.tolist()


def _v2_inputs_to_rows(arrays: list[tuple[str, np.ndarray]], loaded: LoadedModel) -> np.ndarray:
    """One input holds whole rows; several inputs are one feature column each, by name."""
    if is_pipeline(loaded):  # one input per column, BYTES for strings
        return v2_columns(arrays, loaded)
    if len(arrays) == 1:
        name, array = arrays[0]
        # one column named after one of several features: the others are missing
        named_column = (
            loaded.feature_names is not None and loaded.n_features > 1
            and name in loaded.feature_names
            and (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1))
        )  # fmt: skip
        if not named_column:
            return as_rows(array, loaded, f"input {name!r}")
    columns = {}
    for name, array in arrays:
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise BadRequest(
                f"with several inputs each is one feature column of shape [n] or [n, 1]; "
                f"input {name!r} has shape {list(array.shape)}"
            )
        if name in columns:
            raise BadRequest(f"input {name!r} appears twice")
        columns[name] = array
    return columns_to_rows(columns, loaded, "inputs", ordered=True)


def _optional_object(value: Any, what: str) -> Mapping[str, Any]:
    """A JSON object that may be absent (decoded arrays are ndarrays: never test truth)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be an object")
    return value


def _optional_flag(value: Any, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"'{what}' must be true or false")
    return value


def _v2_requested_outputs(
    header: Mapping[str, Any], loaded: LoadedModel
) -> tuple[list[V2Output], bool]:
    parameters = _optional_object(header.get("parameters"), "'parameters'")
    binary_default = _optional_flag(parameters.get("binary_data_output"), "binary_data_output")
    requested = _as_list(header.get("outputs"))
    if requested is None:
        return [V2Output(name, binary_default) for name in loaded.outputs], binary_default
    if not isinstance(requested, list):
        raise BadRequest("'outputs' must be a list of {\"name\": ...} objects")
    outputs = []
    for item in requested:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest("each requested output must be an object with a 'name'")
        name = item["name"]
        if name not in loaded.outputs:
            raise BadRequest(
                f"model {loaded.name!r} has no output {name!r}; "
                f"its outputs are {', '.join(loaded.outputs)}"
            )
        params = _optional_object(item.get("parameters"), f"output {name!r}: 'parameters'")
        if params.get("class_count") is not None:
            raise BadRequest("the classification extension (class_count) is not supported")
        binary = params.get("binary_data")
        outputs.append(
            V2Output(name, binary_default if binary is None else _optional_flag(binary, "binary_data"))
        )
    return outputs, binary_default


def _v2_bytes_tensor(array: np.ndarray) -> bytes:
    """BYTES elements in binary form: each a 4-byte little-endian length, then the bytes."""
    parts = []
    for value in array.ravel().tolist():
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def encode_v2(
    results: Mapping[str, np.ndarray], request: V2Request, name: str, version: int
) -> tuple[bytes, int | None]:
    """The V2 response body, and the JSON header length when binary tensors follow it."""
    outputs = []
    raw_parts: list[bytes] = []
    for output in request.outputs:
        array = results[output.name]
        datatype = v2_datatype(array.dtype)
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        if output.binary:
            if datatype == "BYTES":
                raw = _v2_bytes_tensor(array)
            else:
                raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            raw_parts.append(raw)
        else:
            tensor["data"] = _jsonable(array.ravel())
        outputs.append(tensor)
    response: dict[str, Any] = {"model_name": name, "model_version": str(version)}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = outputs
    header = encode_json(response)
    if not raw_parts:
        return header, None
    return header + b"".join(raw_parts), len(header)


# ------------------------------------------------------------------ MLflow

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def decode_mlflow_json(body: Mapping[str, Any], loaded: LoadedModel) -> np.ndarray:
    """MLflow's scoring protocol: exactly one of dataframe_split, dataframe_records, instances, inputs."""
    present = [key for key in MLFLOW_FORMATS if key in body]
    if len(present) != 1:
        raise BadRequest(
            "request must contain exactly one of "
            + ", ".join(repr(k) for k in MLFLOW_FORMATS)
            + (f"; got {', '.join(repr(k) for k in present)}" if present else "")
        )
    key = present[0]
    value = body[key]
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise BadRequest("'dataframe_split' must be an object with 'data' (and 'columns')")
        data = value["data"]
        if isinstance(data, (list, np.ndarray)) and len(data) == 0:
            raise BadRequest("'dataframe_split' data is empty: send at least one row")
        what = "dataframe_split data"
        if is_pipeline(loaded):
            return split_to_columns(value.get("columns"), data, loaded, what)
        rows = as_rows(to_numeric_array(data, what), loaded, what)
        columns = _as_list(value.get("columns"))
        if columns is not None:
            if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
                raise BadRequest("'dataframe_split' columns must be a list of strings")
            if len(columns) != rows.shape[1]:
                raise BadRequest(
                    f"dataframe_split has {len(columns)} columns but rows of {rows.shape[1]} values"
                )
            rows = _in_model_order(rows, columns, loaded, "dataframe_split columns")
        return rows
    if key == "dataframe_records":
        return records_to_rows(value, loaded, "dataframe_records")
    if key == "instances":
        return _instances_to_rows(value, loaded, "instances")
    return _inputs_to_rows(value, loaded, "inputs")


def decode_mlflow_csv(body: bytes, loaded: LoadedModel) -> np.ndarray:
    """A CSV body with a header row of feature names (as MLflow reads it with pandas)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("CSV body is not UTF-8 text") from None
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV: {exc}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise BadRequest("CSV body is empty; expected a header row and data rows")
    header, data = lines[0], lines[1:]
    if is_pipeline(loaded):
        return csv_to_columns(header, data, loaded)
    try:
        rows = (
            np.array(data, dtype=np.float64).reshape(len(data), -1)
            if data
            else np.empty((0, len(header)))
        )
    except ValueError as exc:
        raise BadRequest(f"CSV data must be numbers in rows of equal length: {exc}") from None
    if rows.shape[1] != len(header):
        raise BadRequest(f"CSV header has {len(header)} columns but rows have {rows.shape[1]}")
    rows = _in_model_order(rows, header, loaded, "CSV header")
    if not rows.shape[0]:
        raise BadRequest("CSV body has a header but no data rows: send at least one row")
    return rows


def _in_model_order(
    rows: np.ndarray, columns: list[str], loaded: LoadedModel, what: str
) -> np.ndarray:
    """``rows`` whose columns are named ``columns``, reordered to the model's features."""
    order = feature_order(columns, loaded, what)
    if order == columns:
        return rows
    position = {name: j for j, name in enumerate(columns)}
    return rows[:, [position[name] for name in order]]


def encode_mlflow(results: Mapping[str, np.ndarray]) -> dict[str, Any]:
    if len(results) == 1:
        return {"predictions": _jsonable(next(iter(results.values())))}
    return {"predictions": {name: _jsonable(a) for name, a in results.items()}}


# ------------------------------------------------------------------ simple


@dataclass
class SimpleRequest:
    rows: np.ndarray
    outputs: tuple[str, ...]
    single: bool


def decode_simple_json(body: Mapping[str, Any], loaded: LoadedModel) -> SimpleRequest:
    """``{"features": [...]}`` (one row, or an object of named features) or ``{"instances": [[...]]}``."""
    has_features, has_instances = "features" in body, "instances" in body
    if has_features == has_instances:
        raise BadRequest("request must contain exactly one of 'features' (one row) or 'instances'")
    outputs = outputs_for_return(body.get("return"), loaded)
    if has_instances:
        return SimpleRequest(
            _instances_to_rows(body["instances"], loaded, "instances"), outputs, False
        )
    features = body["features"]
    if isinstance(features, dict):
        return SimpleRequest(records_to_rows([features], loaded, "features"), outputs, True)
    row = to_numeric_array(features, "features")
    if row.ndim != 1:
        raise BadRequest(
            "'features' must be one row (a flat list of numbers); send several rows as 'instances'"
        )
    return SimpleRequest(row.reshape(1, -1), outputs, True)


def decode_npy(
    body: bytes, loaded: LoadedModel, outputs: tuple[str, ...], max_rows: int | None = None
) -> SimpleRequest:
    """A raw ``.npy`` body: one row (1-D) or a batch (2-D) of numbers; never unpickles.

    The header is read and checked first (dtype, dimensions, rows against
    ``max_rows``, and the size its shape claims against the bytes that follow),
    and the array is then a view of the body: nothing is allocated in
    proportion to a size the client claims (``np.load`` would allocate the
    claimed shape before reading the data).
    """
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except Exception as exc:  # noqa: BLE001  numpy parses the header with ast and tokenize,
        # which raise SyntaxError, tokenize.TokenError, RecursionError, ... (found by fuzzing)
        raise BadRequest(f"malformed .npy body: {exc}") from None
    if dtype.hasobject:
        raise BadRequest("malformed .npy body: object arrays are refused (reading them would unpickle)")
    if dtype.kind not in "biuf" or dtype.itemsize == 0:
        raise BadRequest("the .npy body must hold a numeric array")
    tensor = loaded.input_shape is not None and len(shape) == len(loaded.input_shape) + 1
    if len(shape) not in (1, 2) and not tensor:
        raise BadRequest(f"the .npy array must have 1 or 2 dimensions, got {len(shape)}")
    check_dimensions(shape, dtype.itemsize, "the .npy array")
    n_rows = shape[0] if len(shape) == 2 else 1
    if max_rows is not None and n_rows > max_rows:
        raise PayloadTooLarge(
            f"the request has {n_rows} rows; the limit is {max_rows} (MLSERVE_MAX_ROWS)"
        )
    offset = stream.tell()
    count = math.prod(shape)
    needed = count * dtype.itemsize
    if len(body) - offset != needed:
        raise BadRequest(
            f"malformed .npy body: the header declares shape {tuple(shape)} of {dtype} "
            f"({needed} bytes) but {len(body) - offset} bytes follow it"
        )
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape, order="F" if fortran_order else "C")
    if array.ndim == 1:
        return SimpleRequest(array.reshape(1, -1), outputs, True)
    if array.ndim > 2:  # a graph model's [N, *input_shape] tensor
        return SimpleRequest(as_rows(array, loaded, "the .npy array"), outputs, False)
    return SimpleRequest(array, outputs, False)


def encode_simple(
    results: Mapping[str, np.ndarray], request: SimpleRequest, name: str, version: int
) -> dict[str, Any]:
    response: dict[str, Any] = {"model": name, "version": version}
    for output, array in results.items():
        values = _jsonable(array)
        if output == PREDICT:
            response["prediction" if request.single else "predictions"] = (
                values[0] if request.single else values
            )
        elif output == TRANSFORM:  # k-means
            response["distances"] = values[0] if request.single else values
        else:
            response["probabilities"] = values[0] if request.single else values
    return response


def encode_npy(results: Mapping[str, np.ndarray]) -> bytes:
    array = next(iter(results.values()))
    if array.dtype.kind == "O":
        array = array.astype(str)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
