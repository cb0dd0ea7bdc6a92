"""mlserve.from_onnx against onnxruntime (real sessions), and bad input of every kind."""
from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import mlserve
from mlserve import _core


def _mlp_model(rng, batch="N", in_shape=(3, 4), hidden=20, out=5, final="Softmax"):
    d = int(np.prod(in_shape))
    w1 = (rng.normal(size=(hidden, d)) / np.sqrt(d)).astype(np.float32)  # transB layout
    b1 = rng.normal(size=hidden).astype(np.float32)
    w2 = (rng.normal(size=(hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    w3 = (rng.normal(size=(hidden, out)) / np.sqrt(hidden)).astype(np.float32)
    b3 = rng.normal(size=(1, out)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w1", "b1"], ["h1"], name="gemm1", transB=1, alpha=0.9,
                         beta=1.1),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("Dropout", ["r1"], ["d1"], name="dropout"),
        helper.make_node("MatMul", ["d1", "w2"], ["h2"], name="matmul2"),
        helper.make_node("LeakyRelu", ["h2"], ["l2"], name="leaky2", alpha=0.2),
        helper.make_node("Tanh", ["l2"], ["t2"], name="tanh2"),
        helper.make_node("MatMul", ["t2", "w3"], ["h3"], name="matmul3"),
        helper.make_node("Add", ["h3", "b3"], ["a3"], name="add3"),
        helper.make_node("Sigmoid", ["a3"], ["s3"], name="sigmoid3"),
        helper.make_node(final, ["s3"], ["y"], name="head", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, out])],
        [numpy_helper.from_array(a, n) for a, n in
         ((w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"), (b3, "b3"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ort(model, x):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("final", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_mlp_graph_matches_onnxruntime(batch, final):
    rng = np.random.default_rng(batch)
    model = _mlp_model(rng, final=final)
    x = rng.normal(size=(batch, 3, 4)).astype(np.float32)
    ref = _ort(model, x)
    net = mlserve.from_onnx(model)
    got = net.predict(x)
    assert got.shape == ref.shape
    assert _rel_err(got, ref) <= 1e-4
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    assert net.input_names == ["x"] and net.output_names == ["y"]
    assert set(net.run({"x": x})) == {"y"}
    assert net.metadata["graph"]["input_shape"] == ["N", 3, 4]


def test_path_bytes_and_proto_agree_and_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    model = _mlp_model(rng)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    x = rng.normal(size=(5, 3, 4)).astype(np.float32)
    outs = [mlserve.from_onnx(s).predict(x) for s in (model, model.SerializeToString(), path,
                                                       str(path))]
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    net = mlserve.from_onnx(model)
    mlserve.save(net, tmp_path / "m.mls")
    back = mlserve.load(tmp_path / "m.mls")
    assert type(back) is mlserve.NeuralNetwork
    assert np.array_equal(back.predict(x), net.predict(x))
    assert back.output_names == ["y"]


def test_wrong_input_shape_or_dtype_is_a_value_error():
    net = mlserve.from_onnx(_mlp_model(np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"\['N', 3, 4\].*\[2, 4, 3\]"):
        net.predict(np.zeros((2, 4, 3), np.float32))
    with pytest.raises(ValueError, match="must hold numbers"):
        net.predict(np.array([["a"] * 4] * 3, dtype=object).reshape(1, 3, 4))
    with pytest.raises(ValueError, match="exactly the inputs"):
        net.run({"z": np.zeros((1, 3, 4), np.float32)})
    with pytest.raises(ValueError, match="NaN"):
        net.predict(np.full((1, 3, 4), np.nan, np.float32))


def test_unsupported_op_names_op_type_and_node():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Cos", ["x"], ["y"], name="my_cos")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(mlserve.ConvertError, match=r"'Cos'.*'my_cos'"):
        mlserve.from_onnx(model)


def test_garbage_and_truncated_bytes_are_convert_errors():
    data = _mlp_model(np.random.default_rng(0)).SerializeToString()
    with pytest.raises(mlserve.ConvertError):
        mlserve.from_onnx(b"\xff\x00garbage" * 10)
    with pytest.raises(mlserve.ConvertError):
        mlserve.from_onnx(12)
    rng = np.random.default_rng(2)
    for cut in sorted(set(rng.integers(1, len(data), 60).tolist())):
        try:
            mlserve.from_onnx(data[:cut])
        except mlserve.ConvertError:
            pass
    for _ in range(60):
        b = bytearray(data)
        for i in rng.integers(0, len(b), 8):
            b[i] = int(rng.integers(0, 256))
        try:
            net = mlserve.from_onnx(bytes(b))
        except mlserve.ConvertError:
            continue
        out = net.predict(np.zeros((2, *net.input_shape[1:]), np.float32))
        assert out.shape[0] == 2


def _create(arrays):
    return _core.create("graph", arrays, '{"kind": "graph"}')


def test_corrupt_sections_are_rejected_with_the_reason():
    w = np.ones((4, 3), np.float32)
    b = np.zeros(3, np.float32)
    good = {"layers": np.array([[1, 4, 3, 0], [2, 3, 3, 0]], np.int64), "w0": w, "b0": b}
    assert _create(good).predict(np.ones((2, 4), np.float32)).shape == (2, 3)
    bad = [
        ({**good, "layers": np.array([[99, 4, 3, 0]], np.int64)}, "unknown op"),
        ({**good, "layers": np.array([[1, 4, 3, 0], [2, 5, 5, 0]], np.int64)}, "takes 5"),
        ({**good, "layers": np.array([[1, 4, 3, 0], [2, 3, 4, 0]], np.int64)}, "keep its size"),
        ({**good, "layers": np.array([[1, -4, 3, 0]], np.int64)}, "sizes"),
        ({**good, "layers": np.array([[1, 4, 1 << 40, 0]], np.int64)}, "sizes"),
        ({**good, "layers": np.zeros((0, 4), np.int64)}, "layers"),
        ({**good, "layers": np.array([[1, 4, 3]], np.int64)}, "shape"),
        ({**good, "layers": good["layers"].astype(np.int32)}, "int64"),
        ({"layers": good["layers"], "w0": w}, "b0"),
        ({**good, "w0": np.ones((3, 4), np.float32)}, "w0"),
        ({**good, "w0": w.astype(np.float64)}, "float32"),
        ({**good, "b0": np.full(3, np.nan, np.float32)}, "NaN"),
        ({"w0": w, "b0": b}, "layers"),
    ]
    for arrays, message in bad:
        with pytest.raises(ValueError, match=message):
            _create(arrays)


def test_corrupt_mls_file_is_rejected(tmp_path):
    net = mlserve.from_onnx(_mlp_model(np.random.default_rng(0)))
    path = tmp_path / "m.mls"
    mlserve.save(net, path)
    data = bytearray(path.read_bytes())
    for pos in (len(data) // 2, len(data) - 10):
        corrupt = bytearray(data)
        corrupt[pos] ^= 0xFF
        (tmp_path / "c.mls").write_bytes(bytes(corrupt))
        with pytest.raises(mlserve.ModelFormatError):
            mlserve.load(tmp_path / "c.mls")
    (tmp_path / "t.mls").write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(mlserve.ModelFormatError):
        mlserve.load(tmp_path / "t.mls")


_BACKEND = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
# the models of onnx's own backend test data that this step's ops cover (docs/ONNX.md)
_BACKEND_COVERED = [
    "pytorch-converted/test_Linear",
    "pytorch-converted/test_LeakyReLU",
    "pytorch-converted/test_LeakyReLU_with_negval",
    "pytorch-converted/test_LogSoftmax",
    "pytorch-converted/test_ReLU",
    "pytorch-converted/test_Sigmoid",
    "pytorch-converted/test_Softmax",
    "pytorch-converted/test_Tanh",
    "pytorch-converted/test_log_softmax_lastdim",
    "pytorch-converted/test_softmax_lastdim",
    "pytorch-operator/test_operator_exp",
    "pytorch-operator/test_operator_flatten",
    "simple/test_single_relu_model",
]


@pytest.mark.parametrize("name", _BACKEND_COVERED)
def test_onnx_backend_data_models(name):
    folder = os.path.join(_BACKEND, name)
    net = mlserve.from_onnx(os.path.join(folder, "model.onnx"))
    sets = sorted(glob.glob(os.path.join(folder, "test_data_set_*")))
    assert sets
    for data in sets:
        (x,) = [numpy_helper.to_array(onnx.load_tensor(f))
                for f in sorted(glob.glob(os.path.join(data, "input_*.pb")))]
        (y,) = [numpy_helper.to_array(onnx.load_tensor(f))
                for f in sorted(glob.glob(os.path.join(data, "output_*.pb")))]
        got = net.predict(x)
        assert got.shape == y.shape
        assert _rel_err(got, y) <= 1e-4  # the expected output onnx ships (old opsets: no ort)


def test_concurrent_predict_is_identical():
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    net = mlserve.from_onnx(_mlp_model(rng))
    xs = [rng.normal(size=(int(rng.integers(1, 40)), 3, 4)).astype(np.float32) for _ in range(16)]
    expected = [net.predict(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(net.predict, xs))
            assert all(np.array_equal(a, b) for a, b in zip(got, expected))
