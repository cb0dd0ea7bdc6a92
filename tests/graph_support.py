"""Models for the graph tests and benchmarks: the articles' small CNN built
with onnx.helper, and the onnx package's light zoo with its weights filled in."""
from __future__ import annotations

import glob
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ONNX_DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
LIGHT = sorted(glob.glob(os.path.join(ONNX_DATA, "light", "light_*.onnx")))


def small_cnn(rng, batch="N", opset=17):
    """28x28x1 -> two blocks Conv(3x3)-BN-Relu-MaxPool(2) -> Flatten -> Dense(64) -> Relu
    -> Dense(10), random weights of the right scale."""
    inits, nodes = [], []

    def const(name, a):
        inits.append(numpy_helper.from_array(np.asarray(a, dtype=np.float32), name))

    c_in = 1
    x = "x"
    for i, c in enumerate((16, 32), 1):
        const(f"w{i}", rng.normal(size=(c, c_in, 3, 3)) * np.sqrt(2.0 / (9 * c_in)))
        const(f"b{i}", rng.normal(size=c) * 0.1)
        const(f"g{i}", rng.uniform(0.5, 1.5, c))
        const(f"be{i}", rng.normal(size=c) * 0.1)
        const(f"m{i}", rng.normal(size=c) * 0.1)
        const(f"v{i}", rng.uniform(0.5, 1.5, c))
        nodes += [
            helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}",
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", [f"c{i}", f"g{i}", f"be{i}", f"m{i}", f"v{i}"],
                             [f"n{i}"], name=f"bn{i}", epsilon=1e-3),
            helper.make_node("Relu", [f"n{i}"], [f"r{i}"], name=f"relu{i}"),
            helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], name=f"pool{i}",
                             kernel_shape=[2, 2], strides=[2, 2]),
        ]
        x, c_in = f"p{i}", c
    const("wd", rng.normal(size=(32 * 7 * 7, 64)) * np.sqrt(2.0 / (32 * 49)))
    const("bd", rng.normal(size=64) * 0.1)
    const("wo", rng.normal(size=(64, 10)) * np.sqrt(1.0 / 64))
    const("bo", rng.normal(size=10) * 0.1)
    nodes += [
        helper.make_node("Flatten", [x], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["d"], name="dense"),
        helper.make_node("Relu", ["d"], ["dr"], name="relu3"),
        helper.make_node("Gemm", ["dr", "wo", "bo"], ["y"], name="logits"),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def fill_light(path, seed=0):
    """The light zoo model at ``path`` with every ConstantOfShape weight replaced by a
    seeded random initializer of a scale that keeps activations O(1)."""
    model = onnx.load(path, load_external_data=False)
    g = model.graph
    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers = {}
    for n in g.node:
        for k, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, k))
    keep, new_inits = [], []
    for n in g.node:
        if n.op_type != "ConstantOfShape" or n.input[0] not in inits:
            keep.append(n)
            continue
        shape = [int(v) for v in inits[n.input[0]].reshape(-1)]
        out = n.output[0]
        use, k = consumers.get(out, [(None, 0)])[0]
        op = use.op_type if use is not None else ""
        if op == "Unsqueeze":  # densenet/inception-v2 scale layers: Unsqueeze -> Mul/Add
            nxt, _ = consumers.get(use.output[0], [(None, 0)])[0]
            op = "Scale" + (nxt.op_type if nxt is not None else "")
        if op == "Conv" and k == 1:
            fan_in = int(np.prod(shape[1:]))
            a = rng.normal(size=shape) * np.sqrt(2.0 / fan_in)
        elif op == "Gemm" and k == 1:
            trans_b = any(at.name == "transB" and at.i for at in use.attribute)
            fan_in = shape[1] if trans_b else shape[0]
            a = rng.normal(size=shape) * np.sqrt(1.0 / fan_in)
        elif op == "BatchNormalization" and k in (1, 4) or op == "ScaleMul":
            a = rng.uniform(0.5, 1.5, shape)
        else:  # biases, BN shift and mean, scale-layer shifts
            a = rng.normal(size=shape) * 0.1
        new_inits.append(numpy_helper.from_array(a.astype(np.float32), out))
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(new_inits)
    used = {name for n in g.node for name in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    names = {t.name for t in kept}
    inputs = [i for i in g.input if i.name in used and i.name not in names]
    del g.input[:]
    g.input.extend(inputs)
    return model


def logits_model(model):
    """The model with the input of its final Softmax as its output (the logits)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    last = m.graph.node[-1]
    if last.op_type == "Softmax":
        name = last.input[0]
        m.graph.node.pop()
        del m.graph.output[:]
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return m


def zoo_input(model, rng, batch=1):
    inits = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return inp.name, rng.normal(size=(batch, *shape[1:])).astype(np.float32)
