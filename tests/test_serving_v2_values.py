"""KServe V2 values are checked against their datatype (issue 12, part 5).

A value outside its datatype's range is a 400 naming the input, the datatype
and the value (never wrapped or truncated); BOOL takes only true/false; binary
tensors must be exactly as long as their shape and datatype say.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from flask import Flask

from mlserve.serving import blueprint
from mlserve.store import ModelStore
from serving_support import fit_regressor, training_data

X, _ = training_data(seed=4, n=2)


@pytest.fixture(scope="module")
def model():
    return fit_regressor()


@pytest.fixture
def client(tmp_path, model):
    store = ModelStore(tmp_path / "models")
    store.publish("reg", model, alias="production")
    app = Flask("host")
    app.register_blueprint(blueprint(store, reload_interval=0))
    return app.test_client()


def _infer(client, datatype, data, shape=(1, 4), name="x"):
    tensor = {"name": name, "shape": list(shape), "data": data}
    if datatype is not None:
        tensor["datatype"] = datatype
    return client.post("/v2/models/reg/infer", json={"inputs": [tensor]})


def _error(response):
    assert response.status_code == 400, response.get_data(as_text=True)
    assert set(response.json) == {"error"}
    return response.json["error"]


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        ("INT8", 1000, "input 'x': 1000 at position 3 is out of range for INT8 (-128 to 127)"),
        ("INT8", -129, "input 'x': -129 at position 3 is out of range for INT8 (-128 to 127)"),
        ("UINT8", -1, "input 'x': -1 at position 3 is out of range for UINT8 (0 to 255)"),
        ("UINT8", 256, "input 'x': 256 at position 3 is out of range for UINT8 (0 to 255)"),
        ("INT16", 32768, "input 'x': 32768 at position 3 is out of range for INT16"),
        ("UINT16", 65536, "input 'x': 65536 at position 3 is out of range for UINT16"),
        ("INT32", 2**31, "input 'x': 2147483648 at position 3 is out of range for INT32"),
        ("UINT32", -5, "input 'x': -5 at position 3 is out of range for UINT32"),
        ("INT64", 2**63, "input 'x': 9223372036854775808 at position 3 is out of range for INT64"),
        ("UINT64", -1, "input 'x': -1 at position 3 is out of range for UINT64"),
        ("UINT64", 2**64, "is out of range for UINT64"),
        ("INT32", 1.5, "input 'x': 1.5 at position 3 is not a whole number, which INT32 needs"),
        ("INT8", None, "input 'x': null at position 3 is not a number, which INT8 needs"),
        ("FP16", 65520, "input 'x': 65520 at position 3 is out of range for FP16 (largest 65504)"),
        ("FP16", -1e6, "input 'x': -1000000 at position 3 is out of range for FP16"),
        ("FP32", 1e39, "input 'x': 1e+39 at position 3 is out of range for FP32 (largest 3.40282e+38)"),
    ],
)
def test_values_out_of_range_are_refused(client, datatype, value, message):
    error = _error(_infer(client, datatype, [1, 2, 3, value]))
    assert error.startswith(message) or message in error, error


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        ("INT8", -128), ("INT8", 127), ("UINT8", 0), ("UINT8", 255), ("INT16", -32768),
        ("UINT16", 65535), ("INT32", 2**31 - 1), ("UINT32", 2**32 - 1), ("INT64", -(2**63)),
        ("FP16", 65504), ("FP32", 3.0e38), ("FP64", 1e300), ("INT32", 7.0),
    ],
)  # fmt: skip
def test_values_at_the_edge_of_the_range_are_accepted(client, model, datatype, value):
    response = _infer(client, datatype, [1, 2, 3, value])
    assert response.status_code == 200, response.get_data(as_text=True)
    row = np.array([[1, 2, 3, value]], dtype=np.float64)
    if datatype == "FP32":
        row = row.astype(np.float32)
    np.testing.assert_allclose(response.json["outputs"][0]["data"], model.predict(row), rtol=1e-6)


def test_nested_and_mixed_integer_data(client):
    message = _error(_infer(client, "INT8", [[1, 2], [3, 300]], shape=(1, 4)))
    assert message == "input 'x': 300 at position 3 is out of range for INT8 (-128 to 127)"


def test_bool_takes_only_true_and_false(client, model):
    response = _infer(client, "BOOL", [True, False, True, True])
    assert response.status_code == 200
    np.testing.assert_allclose(
        response.json["outputs"][0]["data"], model.predict(np.array([[1.0, 0.0, 1.0, 1.0]]))
    )
    assert _error(_infer(client, "BOOL", [0, 1, 1, 0])) == (
        "input 'x': BOOL data must be true or false, got 0"
    )
    assert _error(_infer(client, "BOOL", [True, False, True, 1])) == (
        "input 'x': BOOL data must be true or false, got 1"
    )
    assert _error(_infer(client, "BOOL", [True, False, True, "true"])) == (
        "input 'x': BOOL data must be true or false, got 'true'"
    )
    assert _error(_infer(client, "BOOL", [True, False, True, None])) == (
        "input 'x': BOOL data must be true or false, got None"
    )


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT32", "UINT8"])
def test_numeric_datatypes_refuse_booleans(client, datatype):
    for data in ([True, False, True, True], [1, 2, 3, False]):
        assert _error(_infer(client, datatype, data)).startswith(
            f"input 'x': {datatype} data must be numbers, got "
        )


def test_missing_and_unknown_datatype(client):
    expected = (
        "expected one of FP64, FP32, FP16, INT64, INT32, INT16, INT8, UINT64, UINT32, UINT16, "
        "UINT8, BOOL"
    )
    assert _error(_infer(client, None, [1, 2, 3, 4])) == f"input 'x' has no 'datatype'; {expected}"
    assert _error(_infer(client, "FLOAT", [1, 2, 3, 4])) == (
        f"input 'x': unknown datatype 'FLOAT'; {expected}"
    )


def _binary(client, datatype, raw, shape=(1, 4), size=None):
    header = {
        "inputs": [
            {
                "name": "x",
                "datatype": datatype,
                "shape": list(shape),
                "parameters": {"binary_data_size": len(raw) if size is None else size},
            }
        ]
    }
    head = json.dumps(header).encode()
    return client.post(
        "/v2/models/reg/infer",
        data=head + raw,
        headers={"Inference-Header-Content-Length": str(len(head))},
        content_type="application/octet-stream",
    )


def test_binary_tensors(client, model):
    raw = np.array([[1, -2, 3, 127]], dtype="<i1").tobytes()
    response = _binary(client, "INT8", raw)
    assert response.status_code == 200
    np.testing.assert_allclose(
        response.json["outputs"][0]["data"], model.predict(np.array([[1.0, -2.0, 3.0, 127.0]]))
    )
    raw = np.array([[1, 2, 3, 4]], dtype="<i4").tobytes()
    assert _error(_binary(client, "INT32", raw[:-4], size=12)) == (
        "input 'x': binary_data_size is 12 bytes but shape [1, 4] of INT32 needs 16"
    )
    assert _error(_binary(client, "INT16", raw)) == (
        "input 'x': binary_data_size is 16 bytes but shape [1, 4] of INT16 needs 8"
    )
    assert "runs past the end of the body" in _error(_binary(client, "INT32", raw[:-4], size=16))


def test_binary_bool_bytes_are_0_or_1(client):
    assert _binary(client, "BOOL", bytes([1, 0, 1, 1])).status_code == 200
    assert _error(_binary(client, "BOOL", bytes([1, 0, 2, 1]))) == (
        "input 'x': BOOL binary data holds byte 2 at position 2; expected 0 (false) or 1 (true)"
    )
