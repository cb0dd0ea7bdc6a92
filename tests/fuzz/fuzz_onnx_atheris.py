"""atheris target for mlserve.from_onnx: mutated ONNX bytes must load or raise ConvertError.

    python tests/fuzz/fuzz_onnx_atheris.py -max_total_time=60 [corpus_dir]

The property (check below): for any bytes, from_onnx returns a model or raises
mlserve.ConvertError; a model that loads predicts on zeros of its declared input
shape (or refuses the shape with a ValueError). Any other exception, a crash in
the C planner or a sanitizer report is a finding. Half of the inputs are the
fuzzer's raw bytes; the other half take one of the seed graphs (small models the
onnx package ships, a small CNN) and change one field the fuzzer picks (a dim,
an attribute, an op type, an edge, an initializer's shape) before serializing,
so the checks behind protobuf parsing are reached. The converter
(mlserve.convert) is instrumented for coverage.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys

import atheris
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: graph_support

import onnx  # noqa: E402  (not instrumented: large and not under test)
from onnx import helper, numpy_helper  # noqa: E402

with atheris.instrument_imports(include=["mlserve.convert", "mlserve._graph"]):
    import mlserve  # noqa: E402

MAX_INPUT_CELLS = 1 << 16
_DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def _tiny_cnn() -> onnx.ModelProto:
    """Conv-BN-Relu-MaxPool-Flatten-Gemm on 8x8x1: the small CNN's ops in a few hundred bytes."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w", rng.normal(size=(2, 1, 3, 3))), ("b", rng.normal(size=2)),
        ("g", np.ones(2)), ("be", np.zeros(2)), ("m", np.zeros(2)), ("v", np.ones(2)),
        ("wd", rng.normal(size=(32, 3))), ("bd", rng.normal(size=3))]]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["y"]),
        helper.make_node("Softmax", ["y"], ["s"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, ["N", 3])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def seeds() -> list[bytes]:
    """The seed graphs' bytes: the tiny CNN and the onnx package's small converted models."""
    out = [_tiny_cnn().SerializeToString()]
    for path in sorted(glob.glob(os.path.join(_DATA, "pytorch-*", "*", "model.onnx"))):
        if os.path.getsize(path) <= 8192:
            with open(path, "rb") as f:
                out.append(f.read())
    return out


SEEDS = seeds()
OPS = ["Conv", "Gemm", "MatMul", "Relu", "MaxPool", "AveragePool", "Flatten", "Reshape", "Concat",
       "Add", "Mul", "Softmax", "BatchNormalization", "Transpose", "Gather", "Pad", "Split", "X"]


def _mutate(fdp, model: onnx.ModelProto) -> None:
    """Change one field of ``model`` in place."""
    graph = model.graph
    what = fdp.ConsumeIntInRange(0, 7)
    if what == 0 and graph.input:  # an input dim
        dims = graph.input[0].type.tensor_type.shape.dim
        if dims:
            d = dims[fdp.ConsumeIntInRange(0, len(dims) - 1)]
            d.dim_value = fdp.ConsumeIntInRange(-2, 70000) if fdp.ConsumeBool() else 0
    elif what == 1 and graph.node:  # an attribute's ints / int
        node = graph.node[fdp.ConsumeIntInRange(0, len(graph.node) - 1)]
        if node.attribute:
            a = node.attribute[fdp.ConsumeIntInRange(0, len(node.attribute) - 1)]
            if a.ints:
                a.ints[fdp.ConsumeIntInRange(0, len(a.ints) - 1)] = fdp.ConsumeIntInRange(-5, 1 << 20)
            else:
                a.i = fdp.ConsumeIntInRange(-5, 1 << 20)
                a.f = fdp.ConsumeRegularFloat()
    elif what == 2 and graph.node:  # an op type
        graph.node[fdp.ConsumeIntInRange(0, len(graph.node) - 1)].op_type = OPS[
            fdp.ConsumeIntInRange(0, len(OPS) - 1)]
    elif what == 3 and graph.node:  # an edge
        node = graph.node[fdp.ConsumeIntInRange(0, len(graph.node) - 1)]
        names = [i.name for i in graph.input] + [o for n in graph.node for o in n.output] + ["", "?"]
        pick = names[fdp.ConsumeIntInRange(0, len(names) - 1)]
        if node.input and fdp.ConsumeBool():
            node.input[fdp.ConsumeIntInRange(0, len(node.input) - 1)] = pick
        else:
            node.input.append(pick)
    elif what == 4 and graph.initializer:  # an initializer's shape (its data stays)
        t = graph.initializer[fdp.ConsumeIntInRange(0, len(graph.initializer) - 1)]
        if t.dims:
            t.dims[fdp.ConsumeIntInRange(0, len(t.dims) - 1)] = fdp.ConsumeIntInRange(-1, 1 << 16)
        else:
            t.dims.append(fdp.ConsumeIntInRange(0, 9))
    elif what == 5 and graph.node:  # drop or duplicate a node
        i = fdp.ConsumeIntInRange(0, len(graph.node) - 1)
        if fdp.ConsumeBool():
            del graph.node[i]
        else:
            graph.node.append(graph.node[i])
    elif what == 6:
        model.opset_import[0].version = fdp.ConsumeIntInRange(-1, 30)
    elif graph.output:
        graph.output[0].name = ["", "?", graph.output[0].name + "x"][fdp.ConsumeIntInRange(0, 2)]


def make_input(data: bytes) -> bytes:
    if data[:1] == b"\x00" or not data:
        return data[1:]
    fdp = atheris.FuzzedDataProvider(data)
    model = onnx.ModelProto.FromString(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        _mutate(fdp, model)
    return model.SerializeToString()


def check(body: bytes) -> None:
    try:
        net = mlserve.from_onnx(body)
    except mlserve.ConvertError as exc:
        assert str(exc), "a ConvertError without a message"
        return
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in net.input_shape]
    shape[0] = 1
    if int(np.prod(shape)) > MAX_INPUT_CELLS:
        return
    try:
        out = net.predict(np.zeros(shape, dtype=np.float32))
    except ValueError as exc:  # e.g. a dynamic dim other than the batch that the graph fixes
        assert str(exc), "a ValueError without a message"
        return
    assert isinstance(out, np.ndarray) and out.ndim >= 1 and out.shape[0] == 1, out.shape


def main() -> None:
    def one_input(data: bytes) -> None:
        body = make_input(data)
        try:
            check(body)
        except BaseException:
            name = f"crash-onnx-{hashlib.sha1(body).hexdigest()[:16]}.onnx"
            with open(name, "wb") as f:
                f.write(body)
            print(f"fuzz_onnx: ONNX bytes saved as {name}", file=sys.stderr)
            raise

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
