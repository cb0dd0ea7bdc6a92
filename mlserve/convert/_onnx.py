"""ONNX models -> the C graph family (``mlserve.from_onnx``).

The onnx package parses the model; this module walks its nodes and writes
plain arrays plus a layer table (csrc/mls_graph.h) into .mls sections, so C
only ever reads validated sections. This step covers sequential float32
networks of one input and one output: Gemm, MatMul (+ Add of a constant,
folded into the bias), Relu, Sigmoid, Tanh, Softmax/LogSoftmax on the last
axis, and Flatten/Reshape/Identity/Dropout, which do not move values in the
row-major per-sample layout. Anything else is a ConvertError naming the
node's op type and name.
"""
from __future__ import annotations

import os

import numpy as np

from .._errors import ConvertError
from .._graph import (
    OP_DENSE,
    OP_EXP,
    OP_IDENTITY,
    OP_LEAKYRELU,
    OP_LOGSOFTMAX,
    OP_RELU,
    OP_SIGMOID,
    OP_SOFTMAX,
    OP_TANH,
    make_network,
)
from ._common import source_info

_ELEMENTWISE = {"Relu": OP_RELU, "Sigmoid": OP_SIGMOID, "Tanh": OP_TANH, "Exp": OP_EXP}
_PASS_THROUGH = {"Identity", "Dropout", "Flatten", "Reshape"}


def _load(src):
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(src, onnx.ModelProto):
        return src
    try:
        if isinstance(src, (bytes, bytearray, memoryview)):
            model = onnx.load_from_string(bytes(src))
        elif isinstance(src, (str, os.PathLike)):
            with open(os.fspath(src), "rb") as f:
                model = onnx.load_from_string(f.read())
        else:
            raise ConvertError(
                f"from_onnx takes a path, bytes or an onnx.ModelProto, got {type(src).__name__}"
            )
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as exc:
        raise ConvertError(f"not a valid ONNX model: {exc}") from None
    if len(model.graph.node) == 0 or len(model.graph.input) == 0:
        raise ConvertError("not a valid ONNX model: the graph has no nodes or no inputs")
    return model


def _dims(value_info) -> list:
    t = value_info.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "N") for d in t.shape.dim]


def _attr(node, name, default):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _unsupported(node, why: str = "") -> ConvertError:
    return ConvertError(
        f"ONNX op {node.op_type!r} (node {node.name!r}) is not supported by mlserve"
        + (f": {why}" if why else "")
    )


def from_onnx(src):
    try:
        return _from_onnx(src)
    except ConvertError:
        raise
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        # a field the protobuf holds but that does not make sense (fuzzed or hand-built)
        raise ConvertError(f"malformed ONNX model: {type(exc).__name__}: {exc}") from None


from_onnx.__doc__ = """Convert an ONNX model (path, bytes or onnx.ModelProto) to an mlserve model.

    Returns
    -------
    mlserve NeuralNetwork with ``predict(x)``, ``run(feeds) -> dict``,
    ``input_names`` and ``output_names``; float32, computed in C.

    Raises
    ------
    mlserve.ConvertError
        For bytes that are not ONNX, or an op or configuration this version does
        not run (naming the op type and node name).
    """


def _from_onnx(src):
    import onnx
    from onnx import numpy_helper

    model = _load(src)
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ConvertError(
            f"mlserve runs ONNX models of one input and one output; this one has "
            f"{len(inputs)} inputs and {len(g.output)} outputs"
        )
    inp = inputs[0]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ConvertError(f"input {inp.name!r} must be float32")
    in_shape = _dims(inp)
    if len(in_shape) < 2 or not all(isinstance(d, int) and d > 0 for d in in_shape[1:]):
        raise ConvertError(f"input {inp.name!r} needs a batch dimension and fixed others, "
                           f"got {in_shape}")
    size = int(np.prod(in_shape[1:]))
    current = inp.name
    shape = list(in_shape[1:])  # per-sample shape of `current`
    layers: list = []
    for node in g.node:
        op = node.op_type
        if op == "Constant":
            value = _attr(node, "value", None)
            if value is None:
                raise _unsupported(node, "only a tensor 'value' is supported")
            consts[node.output[0]] = numpy_helper.to_array(value)
            continue
        data_inputs = [i for i in node.input if i and i not in consts]
        if data_inputs != [current] or (node.input and node.input[0] != current):
            raise _unsupported(node, "only sequential graphs (each node reads the previous "
                                     "node's output and constants) are supported in this version")
        if op == "Gemm":
            if _attr(node, "transA", 0):
                raise _unsupported(node, "transA=1")
            w = np.asarray(consts[node.input[1]], dtype=np.float64)
            if w.ndim != 2:
                raise _unsupported(node, "B must be 2-D")
            if _attr(node, "transB", 0):
                w = w.T
            w = w * float(_attr(node, "alpha", 1.0))
            if w.shape[0] != size:
                raise _unsupported(node, f"B takes {w.shape[0]} values, the input has {size}")
            b = np.zeros(w.shape[1])
            if len(node.input) > 2 and node.input[2]:
                c = np.asarray(consts[node.input[2]], dtype=np.float64)
                if c.size not in (1, w.shape[1]):
                    raise _unsupported(node, f"C of shape {c.shape} (per-row bias only)")
                b = b + float(_attr(node, "beta", 1.0)) * c.reshape(-1)
            if len(shape) != 1:
                raise _unsupported(node, f"A must be 2-D, got per-sample shape {shape}")
            layers.append([OP_DENSE, size, w.shape[1], w, b])
            size = w.shape[1]
            shape = [size]
        elif op == "MatMul":
            w = np.asarray(consts[node.input[1]], dtype=np.float64)
            if w.ndim != 2 or w.shape[0] != size:
                raise _unsupported(node, f"B must be 2-D taking {size} values, got {w.shape}")
            if len(shape) != 1:
                raise _unsupported(node, f"A must be 2-D, got per-sample shape {shape}")
            layers.append([OP_DENSE, size, w.shape[1], w, np.zeros(w.shape[1])])
            size = w.shape[1]
            shape = [size]
        elif op in ("Add", "Sub") and layers and layers[-1][0] == OP_DENSE:
            c = np.asarray(consts[node.input[1]], dtype=np.float64)
            if c.size not in (1, size):
                raise _unsupported(node, f"a constant of shape {c.shape} after a dense layer")
            layers[-1][4] = layers[-1][4] + (c.reshape(-1) if op == "Add" else -c.reshape(-1))
        elif op == "LeakyRelu":
            layers.append([OP_LEAKYRELU, size, size, float(_attr(node, "alpha", 0.01)), None])
        elif op in _ELEMENTWISE:
            layers.append([_ELEMENTWISE[op], size, size, None, None])
        elif op in ("Softmax", "LogSoftmax"):
            axis = _attr(node, "axis", -1)
            if axis not in (-1, 1) or len(shape) != 1:
                raise _unsupported(node, f"axis={axis} (the last axis of 2-D only)")
            layers.append([OP_SOFTMAX if op == "Softmax" else OP_LOGSOFTMAX, size, size,
                           None, None])
        elif op in _PASS_THROUGH:
            if op == "Flatten" and _attr(node, "axis", 1) != 1:
                raise _unsupported(node, "axis other than 1")
            if op == "Reshape":
                target = np.asarray(consts[node.input[1]]).reshape(-1).tolist()
                if len(target) != 2 or target[0] not in (0, -1) or target[1] not in (-1, size):
                    raise _unsupported(node, f"reshape to {target} (only to (N, -1))")
            if op in ("Flatten", "Reshape"):
                shape = [size]
        else:
            raise _unsupported(node)
        current = node.output[0]
    if current != g.output[0].name:
        raise ConvertError(f"output {g.output[0].name!r} is not computed by the graph's last node")
    if not layers:
        layers.append([OP_IDENTITY, size, size, None, None])
    out_shape = ["N", *shape]
    graph = {
        "source_kind": "onnx",
        "input_names": [inp.name],
        "output_names": [g.output[0].name],
        "input_shape": ["N", *in_shape[1:]],
        "output_shape": out_shape,
        "input_dtypes": ["float32"],
        "output_dtypes": ["float32"],
        "opset": [int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")][:1],
    }
    extra = {"task": "regression", "source": source_info("onnx", "onnx", "ModelProto")}
    return make_network([tuple(layer) for layer in layers], graph, extra)
