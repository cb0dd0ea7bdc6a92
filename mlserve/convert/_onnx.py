"""ONNX models -> the C graph family (``mlserve.from_onnx``).

The onnx package parses the model; this module walks its nodes in order and
writes a node table, constant tensors and per-sample shapes into .mls
sections (csrc/graph/graph_internal.h), so C only ever reads validated
sections and never protobuf. Along the way, at load:

- nodes whose inputs are all constants (Shape/Gather/Unsqueeze/Concat/Slice/
  ConstantOfShape/... chains, Constant) are evaluated once with the onnx
  package's reference evaluator; ``Shape`` of a batched tensor gives its
  dimensions with a marker for the batch, which a later Reshape reads as "N";
- BatchNormalization after a Conv/Gemm is folded into its weights and bias
  (standalone it becomes a per-channel affine), an Add of a constant bias
  after a Gemm/MatMul joins its bias, and Relu/Clip/LeakyRelu join the
  preceding Conv/Gemm/elementwise op;
- Identity, Dropout and float Casts disappear.

The batch is the first axis of the graph's one input and stays the first axis
of every batched tensor: an op that would move or mix it is refused. Anything
not supported is a ConvertError naming the node's op type and name.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .._errors import ConvertError
from ._common import source_info

BATCH = np.int64(-(2**62) + 7)  # the batch dimension inside a folded shape tensor
_MAX_CONST = 1 << 28            # elements a folded constant may have

# op codes of csrc/graph/graph_internal.h (stored in .mls files: never renumber)
CONV, GEMM = 20, 21
UNARY = {n: 30 + i for i, n in enumerate(
    ["Relu", "LeakyRelu", "Sigmoid", "Tanh", "Exp", "Erf", "Gelu", "Clip", "Identity", "Neg",
     "Abs", "Sqrt", "Elu", "Softplus", "Selu", "Reshape", "HardSigmoid", "HardSwish",
     "Reciprocal", "Log"])}
RESHAPE = UNARY["Reshape"]
BINARY = {n: 50 + i for i, n in enumerate(["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min",
                                           "PRelu"])}
AFFINE, SOFTMAX, LOGSOFTMAX = 60, 61, 62
MAXPOOL, AVGPOOL, GAP, GMP = 70, 71, 72, 73
CONCAT, TRANSPOSE, PAD, LRN, RMEAN, RSUM, RMAX, LAYERNORM, SLICE = range(80, 89)
ACT_RELU, ACT_CLIP, ACT_LEAKY = 1, 2, 3
# ONNX ops that run on a batched tensor (others are evaluated at load on constants only)
SUPPORTED_OPS = frozenset(
    [*(n for n in UNARY if n != "Reshape"), *BINARY, "Sum", "Conv", "Gemm", "MatMul",
     "BatchNormalization", "Softmax", "LogSoftmax", "MaxPool", "AveragePool",
     "GlobalAveragePool", "GlobalMaxPool", "LRN", "Flatten", "Reshape", "Squeeze", "Unsqueeze",
     "Transpose", "Concat", "Pad", "ReduceMean", "ReduceSum", "ReduceMax",
     "LayerNormalization", "Slice", "Dropout", "Cast", "Shape", "Constant", "Softsign"])
_FUSE_TARGETS = {CONV, GEMM, AFFINE, *BINARY.values()}


def _f(v) -> int:
    """float64 bits as an int64 attribute."""
    return int(np.array([float(v)], dtype=np.float64).view(np.int64)[0])


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
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, OverflowError,
            ZeroDivisionError, MemoryError) as exc:
        # a field the protobuf holds but that does not make sense (fuzzed or hand-built)
        raise ConvertError(f"malformed ONNX model: {type(exc).__name__}: {exc}") from None


from_onnx.__doc__ = """Convert an ONNX model (path, bytes or onnx.ModelProto) to an mlserve model.

    Returns
    -------
    mlserve NeuralNetwork with ``predict(x)`` (the first output), ``run(feeds) -> dict``
    (every output), ``input_names`` and ``output_names``; float32, computed in C.
    The input's first dimension is the batch (any size at predict time).

    Raises
    ------
    mlserve.ConvertError
        For bytes that are not ONNX, or an op or configuration this version does
        not run (naming the op type and node name).
    """


class _Dyn:
    """A batched tensor: its id in the C tensor table and its per-sample shape."""

    __slots__ = ("id", "shape")

    def __init__(self, tid: int, shape: list):
        self.id = tid
        self.shape = list(shape)


class _Builder:
    def __init__(self):
        self.tensors: list = []      # (kind, per-sample or full shape)
        self.consts: dict = {}       # tensor id -> float32 array
        self.const_ids: dict = {}    # id(array) -> tensor id
        self.nodes: list = []        # dicts: op, out, ins, attrs, act, act_a, act_b
        self.producer: dict = {}     # tensor id -> node index

    def tensor(self, kind: int, shape) -> int:
        self.tensors.append((kind, [int(d) for d in shape]))
        return len(self.tensors) - 1

    def const(self, arr) -> int:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        tid = self.tensor(1, arr.shape)
        self.consts[tid] = arr
        return tid

    def node(self, op, ins, shape, attrs=()) -> _Dyn:
        out = self.tensor(2, shape)
        self.nodes.append({"op": op, "out": out, "ins": list(ins), "attrs": list(attrs),
                           "act": 0, "act_a": 0.0, "act_b": 0.0})
        self.producer[out] = len(self.nodes) - 1
        return _Dyn(out, shape)

    def arrays(self, input_id: int, outputs: list) -> dict:
        tens = np.zeros((len(self.tensors), 10), dtype=np.int64)
        for i, (kind, shape) in enumerate(self.tensors):
            if len(shape) > (8 if kind == 1 else 7):
                raise ConvertError(f"a tensor of rank {len(shape)} (at most 7 besides the batch)")
            tens[i, 0], tens[i, 1] = kind, len(shape)
            tens[i, 2:2 + len(shape)] = shape
        nodes = np.zeros((len(self.nodes), 10), dtype=np.int64)
        ins, attrs = [], []
        for i, n in enumerate(self.nodes):
            nodes[i] = (n["op"], n["out"], len(ins), len(n["ins"]), len(attrs), len(n["attrs"]),
                        n["act"], _f(n["act_a"]), _f(n["act_b"]), 0)
            ins += n["ins"]
            attrs += n["attrs"]
        arrays = {"tensors": tens, "nodes": nodes,
                  "node_inputs": np.array(ins or [0], dtype=np.int64),
                  "node_attrs": np.array(attrs or [0], dtype=np.int64),
                  "io": np.array([input_id, len(outputs), *outputs], dtype=np.int64)}
        for tid, arr in self.consts.items():
            arrays[f"c{tid}"] = arr
        return arrays


def _fold(node, values: list, opset: int):
    """Evaluate a node whose inputs are all constants (onnx's reference evaluator)."""
    from onnx.reference import ReferenceEvaluator

    op = node.op_type
    if op in ("ConstantOfShape", "Expand", "Tile", "Range"):
        shape_like = values[0] if op == "ConstantOfShape" else values[-1]
        if np.any(np.asarray(shape_like) == BATCH):
            raise _unsupported(node, "a constant sized by the batch")
        if op in ("ConstantOfShape", "Expand") and (
                np.any(np.asarray(shape_like) < 0) or
                math.prod(int(v) for v in np.asarray(shape_like).reshape(-1)) > _MAX_CONST):
            raise _unsupported(node, "a constant larger than 2^28 values")
        if op == "Tile" and math.prod(int(v) for v in np.asarray(values[1]).reshape(-1)) * \
                np.asarray(values[0]).size > _MAX_CONST:
            raise _unsupported(node, "a constant larger than 2^28 values")
        if op == "Range":
            start, limit, delta = (float(np.asarray(v)) for v in values)
            if delta == 0 or abs((limit - start) / delta) > _MAX_CONST:
                raise _unsupported(node, "a range larger than 2^28 values")
    import onnx
    from onnx import helper

    feeds = {name: np.asarray(v) for name, v in zip(node.input, values) if name}
    try:
        # a one-node model, so the evaluator uses the graph's opset for this node
        graph = helper.make_graph(
            [node], "fold",
            [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), None)
             for k, v in feeds.items()],
            [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
             for o in node.output if o])
        one = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        with np.errstate(all="ignore"):
            outs = ReferenceEvaluator(one).run(None, feeds)
    except ConvertError:
        raise
    except Exception as exc:  # noqa: BLE001 - the reference evaluator raises many kinds
        raise _unsupported(node, f"cannot evaluate it on its constant inputs: {exc}") from None
    for o in outs:
        if isinstance(o, np.ndarray) and o.size > _MAX_CONST:
            raise _unsupported(node, "a constant larger than 2^28 values")
    return [np.asarray(o) for o in outs]


def _axis(node, a, rank: int, what: str = "axis") -> int:
    """A full-rank axis (batch = 0) as a per-sample axis; the batch axis is refused."""
    a = int(a)
    if a < -rank or a >= rank:
        raise _unsupported(node, f"{what} {a} outside rank {rank}")
    a = a % rank
    if a == 0:
        raise _unsupported(node, f"{what} 0 is the batch axis")
    return a - 1


def _spatial(node, x: _Dyn, kernel: list):
    """strides, dilations, pads (begin/end per spatial axis) with auto_pad resolved."""
    k = len(kernel)
    strides = list(_attr(node, "strides", [1] * k))
    dil = list(_attr(node, "dilations", [1] * k))
    pads = list(_attr(node, "pads", [0] * (2 * k)))
    auto = _attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if len(strides) != k or len(dil) != k or len(pads) != 2 * k:
        raise _unsupported(node, "strides, dilations or pads of the wrong length")
    if any(int(v) < 1 for v in [*strides, *dil, *kernel]):
        raise _unsupported(node, "strides, dilations and kernel sizes must be positive")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * k)
        for i in range(k):
            size = x.shape[1 + i]
            out = -(-size // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - size)
            small = total // 2
            pads[i], pads[k + i] = (small, total - small) if auto == "SAME_UPPER" \
                else (total - small, small)
    elif auto == "VALID":
        pads = [0] * (2 * k)
    elif auto != "NOTSET":
        raise _unsupported(node, f"auto_pad={auto}")
    if any(int(v) < 0 for v in pads):
        raise _unsupported(node, "negative pads")
    return [int(v) for v in strides], [int(v) for v in dil], [int(v) for v in pads]


def _as_2d(vals: list, k: int, fill: int) -> list:
    """(h, w) for a 1-D (w) or 2-D (h, w) spatial attribute."""
    return [fill, *vals] if k == 1 else list(vals)


def _out_dim(size, pa, pb, k, s, d, ceil_mode=False):
    span = size + pa + pb - d * (k - 1) - 1
    if span < 0:
        return 0
    o = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (o - 1) * s >= size + pa:
        o -= 1
    return o


def _from_onnx(src):
    import onnx
    from onnx import numpy_helper

    model = _load(src)
    g = model.graph
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    env: dict = {}
    for t in g.initializer:
        env[t.name] = numpy_helper.to_array(t)
    read = {name for n in g.node for name in n.input} | {o.name for o in g.output}
    inputs = [i for i in g.input if i.name not in env and i.name in read]  # unused: ignored
    if len(inputs) != 1:
        raise ConvertError(f"mlserve runs ONNX models of one input; this one has {len(inputs)}")
    inp = inputs[0]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ConvertError(f"input {inp.name!r} must be float32")
    in_shape = _dims(inp)
    if len(in_shape) < 1 or len(in_shape) > 8 or \
            not all(isinstance(d, int) and d > 0 for d in in_shape[1:]):
        raise ConvertError(f"input {inp.name!r} needs a batch dimension and fixed others, "
                           f"got {in_shape}")
    static_batch = in_shape[0] if isinstance(in_shape[0], int) else None
    b = _Builder()
    input_id = b.tensor(0, in_shape[1:])
    env[inp.name] = _Dyn(input_id, in_shape[1:])
    uses: dict = {}
    for node in g.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1

    def value(node, i):
        name = node.input[i] if i < len(node.input) else ""
        if not name:
            return None
        if name not in env:
            raise _unsupported(node, f"input {name!r} is not computed before it")
        return env[name]

    def const(node, i, what="input"):
        v = value(node, i)
        if isinstance(v, _Dyn):
            raise _unsupported(node, f"{what} {i} must be a constant")
        return v

    def dyn_id(v) -> int:
        if isinstance(v, _Dyn):
            return v.id
        return b.const(np.asarray(v, dtype=np.float32))

    def fusable(v: _Dyn, name: str):
        """The node that produced v, when v feeds only this one consumer."""
        i = b.producer.get(v.id)
        if i is None or uses.get(name, 0) != 1 or v.id in out_ids_pending:
            return None
        return b.nodes[i]

    out_ids_pending: set = set()
    for node in g.node:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise _unsupported(node, f"domain {node.domain!r}")
        vals = [value(node, i) for i in range(len(node.input))]
        present = [v for v in vals if v is not None]
        if op == "Shape" and isinstance(vals[0], _Dyn):
            full = np.array([BATCH, *vals[0].shape], dtype=np.int64)
            start, end = _attr(node, "start", 0), _attr(node, "end", None)
            env[node.output[0]] = full[start:end]
            continue
        if op == "Size" and isinstance(vals[0], _Dyn):
            raise _unsupported(node, "the size of a batched tensor")
        if not any(isinstance(v, _Dyn) for v in present):
            outs = _fold(node, vals, opset)
            for name, v in zip(node.output, outs):
                env[name] = v
            continue
        res = _convert_node(node, op, vals, b, const, dyn_id, fusable, opset, static_batch)
        if not isinstance(res, (list, tuple)):
            res = [res]
        for k, name in enumerate(node.output):
            if not name:
                continue
            if k >= len(res):
                if uses.get(name, 0):
                    raise _unsupported(node, f"output {k} ({name!r}) is not supported")
                continue
            env[name] = res[k]
    outputs, out_shapes = [], []
    for o in g.output:
        v = env.get(o.name)
        if not isinstance(v, _Dyn):
            raise ConvertError(f"output {o.name!r} does not depend on the input")
        if v.id == input_id or v.id in outputs:
            v = b.node(UNARY["Identity"], [v.id], v.shape)
        outputs.append(v.id)
        out_shapes.append(["N", *v.shape])
    arrays = b.arrays(input_id, outputs)
    graph = {
        "source_kind": "onnx",
        "input_names": [inp.name],
        "output_names": [o.name for o in g.output],
        "input_shape": ["N", *in_shape[1:]],
        "output_shape": out_shapes[0],
        "output_shapes": out_shapes,
        "input_dtypes": ["float32"],
        "output_dtypes": ["float32"] * len(outputs),
        "opset": [opset],
        "n_nodes": len(b.nodes),
    }
    extra = {"task": "regression", "source": source_info("onnx", "onnx", "ModelProto")}
    from .._graph import make_graph_network

    n_out = int(sum(math.prod(s[1:]) for s in out_shapes))
    return make_graph_network(arrays, int(math.prod(in_shape[1:])), n_out, graph, extra)


def _convert_node(node, op, vals, b, const, dyn_id, fusable, opset, static_batch):
    x = vals[0]
    if op == "Dropout" and len(vals) > 2 and vals[2] is not None:
        training = const(node, 2, "training_mode")
        ratio = float(np.asarray(const(node, 1, "ratio"))) if vals[1] is not None else 0.5
        if bool(np.asarray(training)) and ratio != 0:
            raise _unsupported(node, "training_mode=1 (random)")
    if op in ("Identity", "Dropout"):
        if op == "Dropout" and len(node.output) > 1 and node.output[1]:
            return [x]  # the mask output stays unsupported (checked by the caller)
        return x
    if op == "Cast":
        if _attr(node, "to", 1) != 1:
            raise _unsupported(node, "a batched tensor cast to a type other than float32")
        return x
    if not isinstance(x, _Dyn) and op not in BINARY and op not in ("Sum", "Concat"):
        raise _unsupported(node, "its first input must be the batched tensor")
    rank = len(x.shape) + 1 if isinstance(x, _Dyn) else 0

    if op == "Conv":
        w = np.asarray(const(node, 1, "weights"), dtype=np.float32)
        bias = vals[2] if len(vals) > 2 else None
        if bias is not None and isinstance(bias, _Dyn):
            raise _unsupported(node, "the bias must be a constant")
        k = w.ndim - 2
        if k not in (1, 2) or len(x.shape) != k + 1:
            raise _unsupported(node, f"{k}-D convolution (1-D and 2-D are supported)")
        kernel = list(_attr(node, "kernel_shape", list(w.shape[2:])))
        if kernel != list(w.shape[2:]):
            raise _unsupported(node, f"kernel_shape {kernel} differs from the weights' "
                                     f"{list(w.shape[2:])}")
        strides, dil, pads = _spatial(node, x, kernel)
        group = int(_attr(node, "group", 1))
        C, M = x.shape[0], w.shape[0]
        if group < 1 or C % group or M % group or w.shape[1] != C // group:
            raise _unsupported(node, f"weights {list(w.shape)} do not fit {C} channels in "
                                     f"{group} groups")
        kh, kw = _as_2d(kernel, k, 1)
        sh, sw = _as_2d(strides, k, 1)
        dh, dw = _as_2d(dil, k, 1)
        pt, pl, pb, pr = (0, pads[0], 0, pads[1]) if k == 1 else pads
        H, W = (1, x.shape[1]) if k == 1 else x.shape[1:]
        OH, OW = _out_dim(H, pt, pb, kh, sh, dh), _out_dim(W, pl, pr, kw, sw, dw)
        if OH < 1 or OW < 1:
            raise _unsupported(node, "the kernel is larger than the padded input")
        bvec = np.zeros(M) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
        if bvec.size != M:
            raise _unsupported(node, f"a bias of {bvec.size} values for {M} channels")
        ins = [None, b.const(w), b.const(bvec)]
        ins[0] = x.id
        return b.node(CONV, ins, [M, OW] if k == 1 else [M, OH, OW],
                      [group, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr])

    if op in ("Gemm", "MatMul"):
        wv = vals[1]
        if isinstance(wv, _Dyn):
            raise _unsupported(node, "a product of two batched tensors")
        w = np.asarray(wv, dtype=np.float32)
        trans_b = 0
        if op == "Gemm":
            if _attr(node, "transA", 0):
                raise _unsupported(node, "transA=1 (the batch must stay first)")
            if len(x.shape) != 1 or w.ndim != 2:
                raise _unsupported(node, "A must be (N, K) and B 2-D")
            trans_b = int(bool(_attr(node, "transB", 0)))
            alpha = float(_attr(node, "alpha", 1.0))
            if alpha != 1.0:
                w = w.astype(np.float64) * alpha
        elif w.ndim != 2:
            raise _unsupported(node, f"B of rank {w.ndim} (a 2-D constant is supported)")
        K = x.shape[-1]
        if w.shape[trans_b] != K:
            raise _unsupported(node, f"B takes {w.shape[trans_b]} values, the input has {K}")
        M = w.shape[1 - trans_b]
        bias = np.zeros(M)
        if op == "Gemm" and len(vals) > 2 and vals[2] is not None:
            c = vals[2]
            if isinstance(c, _Dyn):
                raise _unsupported(node, "C must be a constant")
            c = np.asarray(c, dtype=np.float64)
            if c.size not in (1, M) or (c.ndim == 2 and c.shape[0] != 1):
                raise _unsupported(node, f"C of shape {list(c.shape)} (a per-column bias only)")
            bias = bias + float(_attr(node, "beta", 1.0)) * np.broadcast_to(c.reshape(-1), (M,))
        return b.node(GEMM, [x.id, b.const(w), b.const(bias)], [*x.shape[:-1], M], [trans_b])

    if op == "BatchNormalization":
        if _attr(node, "training_mode", 0):
            raise _unsupported(node, "training_mode=1")
        scale, beta, mean, var = (np.asarray(const(node, i), dtype=np.float64).reshape(-1)
                                  for i in range(1, 5))
        C = x.shape[0] if x.shape else 0
        if not all(a.size == C for a in (scale, beta, mean, var)) or C == 0:
            raise _unsupported(node, f"per-channel parameters must have {C} values")
        s = scale / np.sqrt(var + float(_attr(node, "epsilon", 1e-5)))
        shift = beta - mean * s
        prod = fusable(x, node.input[0])
        if prod is not None and prod["op"] in (CONV, GEMM) and prod["act"] == 0:
            wid, bid = prod["ins"][1], prod["ins"][2]
            w = b.consts[wid].astype(np.float64)
            if prod["op"] == CONV:
                w = w * s.reshape(-1, *([1] * (w.ndim - 1)))
            elif len(x.shape) == 1:
                w = w * (s.reshape(-1, 1) if prod["attrs"][0] else s.reshape(1, -1))
            else:
                prod = None
            if prod is not None:
                b.consts[wid] = w.astype(np.float32)
                b.consts[bid] = (b.consts[bid].astype(np.float64) * s + shift).astype(np.float32)
                return x
        return b.node(AFFINE, [x.id, b.const(s), b.const(shift)], x.shape)

    if op in ("Relu", "Clip", "LeakyRelu"):
        if op == "Clip":
            if opset < 11:
                lo, hi = _attr(node, "min", -3.4e38), _attr(node, "max", 3.4e38)
            else:
                lo = const(node, 1) if len(vals) > 1 and vals[1] is not None else -3.4e38
                hi = const(node, 2) if len(vals) > 2 and vals[2] is not None else 3.4e38
            lo, hi = float(np.asarray(lo)), float(np.asarray(hi))
            act, a1, a2 = ACT_CLIP, max(lo, -3.4e38), min(hi, 3.4e38)
        elif op == "LeakyRelu":
            act, a1, a2 = ACT_LEAKY, float(_attr(node, "alpha", 0.01)), 0.0
        else:
            act, a1, a2 = ACT_RELU, 0.0, 0.0
        prod = fusable(x, node.input[0])
        if prod is not None and prod["op"] in _FUSE_TARGETS and prod["act"] == 0:
            prod["act"], prod["act_a"], prod["act_b"] = act, a1, a2
            return x
        attrs = {"Relu": [], "Clip": [_f(a1), _f(a2)], "LeakyRelu": [_f(a1)]}[op]
        return b.node(UNARY[op], [x.id], x.shape, attrs)

    if op == "Softsign":  # x / (1 + |x|) from Abs, Add, Div: the unary op codes 30-49 are all taken
        den = _binary(node, "Add", [b.node(UNARY["Abs"], [x.id], x.shape, []), np.float32(1.0)],
                      b, dyn_id, fusable)
        return _binary(node, "Div", [x, den], b, dyn_id, fusable)

    if op in UNARY and op not in ("Identity", "Reshape"):
        attrs = []
        if op == "Elu":
            attrs = [_f(_attr(node, "alpha", 1.0))]
        elif op == "Selu":
            attrs = [_f(_attr(node, "alpha", 1.67326319217681884765625)),
                     _f(_attr(node, "gamma", 1.05070102214813232421875))]
        elif op == "HardSigmoid":
            attrs = [_f(_attr(node, "alpha", 0.2)), _f(_attr(node, "beta", 0.5))]
        elif op == "Gelu":
            approx = _attr(node, "approximate", b"none")
            approx = approx.decode() if isinstance(approx, bytes) else str(approx)
            if approx not in ("none", "tanh"):
                raise _unsupported(node, f"approximate={approx!r}")
            attrs = [int(approx == "tanh")]
        return b.node(UNARY[op], [x.id], x.shape, attrs)

    if op in BINARY or op == "Sum":
        if op == "Sum":
            acc = vals[0]
            for v in vals[1:]:
                acc = _binary(node, "Add", [acc, v], b, dyn_id, fusable)
            if not isinstance(acc, _Dyn):
                raise _unsupported(node, "a sum of constants only")
            return acc
        if op in ("Max", "Min") and len(vals) != 2:
            raise _unsupported(node, "Max/Min of other than 2 inputs")
        if op == "PRelu" and not isinstance(vals[1], _Dyn) and isinstance(x, _Dyn) and \
                np.ndim(vals[1]) == 1 and x.shape and np.size(vals[1]) == x.shape[0] and \
                x.shape[-1] != x.shape[0]:
            # a per-channel slope of the opsets before numpy broadcasting (pytorch exports)
            vals = [x, np.asarray(vals[1]).reshape(-1, *([1] * (len(x.shape) - 1)))]
        return _binary(node, op, vals, b, dyn_id, fusable)

    if op in ("Softmax", "LogSoftmax"):
        default = -1 if opset >= 13 else 1
        a = _axis(node, _attr(node, "axis", default), rank)
        end = a + 1 if opset >= 13 else rank - 1
        return b.node(SOFTMAX if op == "Softmax" else LOGSOFTMAX, [x.id], x.shape, [a, end])

    if op in ("MaxPool", "AveragePool"):
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            raise _unsupported(node, "the Indices output")
        if _attr(node, "storage_order", 0):
            raise _unsupported(node, "storage_order=1")
        kernel = list(_attr(node, "kernel_shape", []))
        k = len(kernel)
        if k not in (1, 2) or len(x.shape) != k + 1:
            raise _unsupported(node, f"{k}-D pooling (1-D and 2-D are supported)")
        strides, dil, pads = _spatial(node, x, kernel)
        ceil_mode = int(_attr(node, "ceil_mode", 0))
        incl = int(_attr(node, "count_include_pad", 0)) if op == "AveragePool" else 0
        kh, kw = _as_2d(kernel, k, 1)
        sh, sw = _as_2d(strides, k, 1)
        dh, dw = _as_2d(dil, k, 1)
        pt, pl, pb, pr = (0, pads[0], 0, pads[1]) if k == 1 else pads
        H, W = (1, x.shape[1]) if k == 1 else x.shape[1:]
        OH = _out_dim(H, pt, pb, kh, sh, dh, ceil_mode)
        OW = _out_dim(W, pl, pr, kw, sw, dw, ceil_mode)
        if OH < 1 or OW < 1:
            raise _unsupported(node, "the kernel is larger than the padded input")
        if max(pt, pb) >= kh * dh or max(pl, pr) >= kw * dw:
            raise _unsupported(node, "pads as large as the kernel")
        C = x.shape[0]
        return b.node(MAXPOOL if op == "MaxPool" else AVGPOOL, [x.id],
                      [C, OW] if k == 1 else [C, OH, OW],
                      [kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, ceil_mode, incl])

    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        if len(x.shape) not in (2, 3):
            raise _unsupported(node, "1-D and 2-D inputs only")
        return b.node(GAP if op == "GlobalAveragePool" else GMP, [x.id],
                      [x.shape[0]] + [1] * (len(x.shape) - 1))

    if op == "LRN":
        if len(x.shape) not in (2, 3):
            raise _unsupported(node, "1-D and 2-D inputs only")
        size = int(_attr(node, "size", 0))
        if size < 1:
            raise _unsupported(node, "size must be positive")
        return b.node(LRN, [x.id], x.shape,
                      [size, _f(_attr(node, "alpha", 1e-4)), _f(_attr(node, "beta", 0.75)),
                       _f(_attr(node, "bias", 1.0))])

    if op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze"):
        size = math.prod(x.shape)
        if op == "Flatten":
            if _axis(node, _attr(node, "axis", 1), rank) != 0:
                raise _unsupported(node, "axis other than 1 (it would merge the batch)")
            shape = [size]
        elif op == "Reshape":
            target = [int(v) for v in np.asarray(const(node, 1, "shape")).reshape(-1)]
            shape = _reshape_target(node, target, x.shape, static_batch,
                                    bool(_attr(node, "allowzero", 0)))
        else:
            axes = _attr(node, "axes", None)
            if axes is None and len(vals) > 1 and vals[1] is not None:
                axes = [int(v) for v in np.asarray(const(node, 1, "axes")).reshape(-1)]
            if op == "Squeeze":
                if axes is None:
                    shape = [d for d in x.shape if d != 1]
                else:
                    ax = {_axis(node, a, rank) for a in axes}
                    if any(x.shape[a] != 1 for a in ax):
                        raise _unsupported(node, "squeezing an axis of size other than 1")
                    shape = [d for i, d in enumerate(x.shape) if i not in ax]
            else:
                if axes is None:
                    raise _unsupported(node, "no axes")
                out_rank = rank + len(axes)
                ax = sorted(_axis(node, a, out_rank) for a in axes)
                shape = list(x.shape)
                for a in ax:
                    shape.insert(a, 1)
        if shape == x.shape:
            return x
        return b.node(RESHAPE, [x.id], shape)

    if op == "Transpose":
        perm = _attr(node, "perm", None)
        perm = list(reversed(range(rank))) if perm is None else [int(p) for p in perm]
        if sorted(perm) != list(range(rank)) or perm[0] != 0:
            raise _unsupported(node, f"perm {perm} (the batch must stay first)")
        p = [q - 1 for q in perm[1:]]
        if p == list(range(len(p))):
            return x
        return b.node(TRANSPOSE, [x.id], [x.shape[q] for q in p], p)

    if op == "Concat":
        if not all(isinstance(v, _Dyn) for v in vals if v is not None):
            raise _unsupported(node, "a concat of batched tensors and constants")
        vs = [v for v in vals if v is not None]
        a = _axis(node, _attr(node, "axis", 1), len(vs[0].shape) + 1)
        if any(len(v.shape) != len(vs[0].shape) or
               any(d != e for i, (d, e) in enumerate(zip(v.shape, vs[0].shape)) if i != a)
               for v in vs):
            raise _unsupported(node, "inputs whose shapes differ outside the axis")
        if len(vs) == 1:
            return vs[0]
        shape = list(vs[0].shape)
        shape[a] = sum(v.shape[a] for v in vs)
        return b.node(CONCAT, [v.id for v in vs], shape, [a])

    if op == "Pad":
        mode = _attr(node, "mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode not in ("constant", "reflect", "edge"):
            raise _unsupported(node, f"mode={mode!r}")
        if opset < 11:
            pads, cval = list(_attr(node, "pads", [])), float(_attr(node, "value", 0.0))
        else:
            pads = [int(v) for v in np.asarray(const(node, 1, "pads")).reshape(-1)]
            cv = vals[2] if len(vals) > 2 else None
            if isinstance(cv, _Dyn):
                raise _unsupported(node, "constant_value must be a constant")
            cval = 0.0 if cv is None or np.asarray(cv).size == 0 else float(np.asarray(cv))
            if len(vals) > 3 and vals[3] is not None:
                axes = [int(a) % rank for a in np.asarray(const(node, 3, "axes")).reshape(-1)]
                full = [0] * (2 * rank)
                for i, a in enumerate(axes):
                    full[a], full[rank + a] = pads[i], pads[len(axes) + i]
                pads = full
        if len(pads) != 2 * rank:
            raise _unsupported(node, f"{len(pads)} pads for rank {rank}")
        if pads[0] or pads[rank]:
            raise _unsupported(node, "padding the batch axis")
        if any(p < 0 for p in pads):
            raise _unsupported(node, "negative pads")
        r = rank - 1
        begins, ends = pads[1:rank], pads[rank + 1:]
        if mode == "reflect" and any(bg >= d or e >= d
                                     for bg, e, d in zip(begins, ends, x.shape)):
            raise _unsupported(node, "reflect pads as large as the axis")
        shape = [d + bg + e for d, bg, e in zip(x.shape, begins, ends)]
        assert len(shape) == r
        return b.node(PAD, [x.id], shape,
                      [["constant", "reflect", "edge"].index(mode), _f(cval), *begins, *ends])

    if op in ("ReduceMean", "ReduceSum", "ReduceMax"):
        keep = int(_attr(node, "keepdims", 1))
        axes = _attr(node, "axes", None)
        if axes is None and len(vals) > 1 and vals[1] is not None:
            axes = [int(v) for v in np.asarray(const(node, 1, "axes")).reshape(-1)]
        if not axes:
            if _attr(node, "noop_with_empty_axes", 0):
                return x
            raise _unsupported(node, "reducing every axis (the batch too)")
        ax = sorted({_axis(node, a, rank) for a in axes})
        if ax != list(range(ax[0], ax[-1] + 1)):
            raise _unsupported(node, f"axes {axes} that are not adjacent")
        lo, hi = ax[0], ax[-1] + 1
        shape = list(x.shape)
        shape = shape[:lo] + [1] * (hi - lo) + shape[hi:] if keep else shape[:lo] + shape[hi:]
        code = {"ReduceMean": RMEAN, "ReduceSum": RSUM, "ReduceMax": RMAX}[op]
        return b.node(code, [x.id], shape, [keep, lo, hi])

    if op == "LayerNormalization":
        a = _axis(node, _attr(node, "axis", -1), rank)
        norm = x.shape[a:]
        ins = [x.id]
        for i in (1, 2):
            if len(vals) > i and vals[i] is not None:
                v = np.asarray(const(node, i), dtype=np.float64)
                ins.append(b.const(np.broadcast_to(v, norm).copy()))
        if len(ins) == 1:
            raise _unsupported(node, "no scale")
        eps = float(_attr(node, "epsilon", 1e-5))
        if not 0 < eps < 1:
            raise _unsupported(node, f"epsilon={eps}")
        y = b.node(LAYERNORM, ins, x.shape, [a, _f(eps)])
        if not any(node.output[1:]):
            return y
        # Mean and InvStdDev outputs, from the ops above (keepdims shapes)
        R = len(x.shape)
        kept = x.shape[:a] + [1] * (R - a)
        mean = b.node(RMEAN, [x.id], kept, [1, a, R])
        d = b.node(BINARY["Sub"], [x.id, mean.id], x.shape)
        var = b.node(RMEAN, [b.node(BINARY["Mul"], [d.id, d.id], x.shape).id], kept, [1, a, R])
        std = b.node(UNARY["Sqrt"], [b.node(BINARY["Add"], [var.id, b.const(np.float32(eps))],
                                            kept).id], kept)
        return [y, mean, b.node(UNARY["Reciprocal"], [std.id], kept)]

    if op == "Slice":
        if opset < 10:
            starts, ends = list(_attr(node, "starts", [])), list(_attr(node, "ends", []))
            axes = _attr(node, "axes", None)
            steps = None
        else:
            starts = [int(v) for v in np.asarray(const(node, 1)).reshape(-1)]
            ends = [int(v) for v in np.asarray(const(node, 2)).reshape(-1)]
            axes = [int(v) for v in np.asarray(const(node, 3)).reshape(-1)] \
                if len(vals) > 3 and vals[3] is not None else None
            steps = [int(v) for v in np.asarray(const(node, 4)).reshape(-1)] \
                if len(vals) > 4 and vals[4] is not None else None
        axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
        steps = [1] * len(starts) if steps is None else steps
        st = [0] * (rank - 1)
        sp = [1] * (rank - 1)
        shape = list(x.shape)
        for a, s0, e0, k in zip(axes, starts, ends, steps):
            a = int(a) % rank if -rank <= int(a) < rank else None
            if a is None:
                raise _unsupported(node, "an axis outside the rank")
            if a == 0:
                if not (s0 == 0 and k == 1 and e0 >= 2**31 - 1):
                    raise _unsupported(node, "slicing the batch axis")
                continue
            if k == 0:
                raise _unsupported(node, "step 0")
            d = x.shape[a - 1]
            r = range(*slice(int(max(min(s0, 2**62), -2**62)), int(max(min(e0, 2**62), -2**62)),
                             int(k)).indices(d))
            if len(r) == 0:
                raise _unsupported(node, "an empty slice")
            st[a - 1], sp[a - 1], shape[a - 1] = r.start, r.step, len(r)
        if shape == x.shape and all(s == 1 for s in sp):
            return x
        return b.node(SLICE, [x.id], shape, [*st, *sp])

    raise _unsupported(node)


def _reshape_target(node, target, shape, static_batch, allowzero):
    size = math.prod(shape)
    full = list(target)
    if not full:
        raise _unsupported(node, "reshape to a scalar")
    first = full[0]
    if first == BATCH or (first == 0 and not allowzero) or first == -1 and -1 not in full[1:] and not (0 in full[1:] and allowzero) and \
            math.prod(v if v != 0 else (shape[i] if i < len(shape) else 0)
                      for i, v in enumerate(full[1:])) == size or static_batch is not None and first == static_batch:
        rest = full[1:]
    else:
        raise _unsupported(node, f"reshape to {target} (the batch must stay first)")
    out = []
    for i, v in enumerate(rest):
        if v == BATCH:
            raise _unsupported(node, f"reshape to {target} (the batch must stay first)")
        if v == 0 and not allowzero:
            if i + 1 > len(shape):
                raise _unsupported(node, f"reshape to {target}: 0 copies a missing axis")
            v = shape[i]
        out.append(v)
    if out.count(-1) > 1 or any(v < -1 or v == 0 for v in out):
        raise _unsupported(node, f"reshape to {target}")
    if -1 in out:
        known = math.prod(v for v in out if v != -1)
        if known == 0 or size % known:
            raise _unsupported(node, f"reshape of {size} values to {target}")
        out[out.index(-1)] = size // known
    if math.prod(out) != size:
        raise _unsupported(node, f"reshape of {size} values per sample to {target}")
    return out


def _binary(node, op, vals, b, dyn_id, fusable):
    xa, xb = vals[0], vals[1]
    if xa is None or xb is None:
        raise _unsupported(node, "a missing input")
    if not isinstance(xa, _Dyn) and not isinstance(xb, _Dyn):
        with np.errstate(all="ignore"):
            return np.asarray({"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                               "Div": np.divide}[op](xa, xb))
    sa = ["N", *xa.shape] if isinstance(xa, _Dyn) else list(np.shape(xa))
    sb = ["N", *xb.shape] if isinstance(xb, _Dyn) else list(np.shape(xb))
    R = max(len(sa), len(sb))
    if (isinstance(xa, _Dyn) and len(sa) != R) or (isinstance(xb, _Dyn) and len(sb) != R):
        raise _unsupported(node, "a constant of higher rank than the batched input")
    pa, pb = [1] * (R - len(sa)) + sa, [1] * (R - len(sb)) + sb
    out = []
    for i, (d, e) in enumerate(zip(pa, pb)):
        if i == 0:
            if (d not in ("N", 1)) or (e not in ("N", 1)):
                raise _unsupported(node, "a constant whose first dimension is not 1 (the batch)")
            continue
        if d != e and d != 1 and e != 1:
            raise _unsupported(node, f"shapes {sa} and {sb} do not broadcast")
        out.append(e if d == 1 else d)
    # a constant bias after a Gemm/Conv joins its bias
    if op in ("Add", "Sub") and isinstance(xa, _Dyn) and not isinstance(xb, _Dyn) and \
            out == xa.shape:
        prod = fusable(xa, node.input[0])
        c = np.asarray(xb, dtype=np.float64)
        if prod is not None and prod["act"] == 0 and prod["op"] in (GEMM, CONV):
            M = xa.shape[-1] if prod["op"] == GEMM else xa.shape[0]
            per = None
            if c.size == 1:
                per = np.full(M, float(c.reshape(-1)[0]))
            elif prod["op"] == GEMM and c.shape[-1:] == (M,) and c.size == M or prod["op"] == CONV and c.size == M and \
                    np.shape(c)[-len(xa.shape):][:1] in ((M,),) and \
                    all(d == 1 for d in np.shape(c)[-len(xa.shape) + 1:]):
                per = c.reshape(-1)
            if per is not None:
                bid = prod["ins"][2]
                sign = 1.0 if op == "Add" else -1.0
                b.consts[bid] = (b.consts[bid].astype(np.float64) + sign * per).astype(np.float32)
                return xa
    return b.node(BINARY[op], [dyn_id(xa), dyn_id(xb)], out)
