"""Keras 3 models -> a standard ONNX graph -> the C graph family.

``mlserve.from_keras(path)`` reads a ``.keras`` file (a zip of config.json and
model.weights.h5) or a legacy ``.h5`` file with ``json`` and ``h5py`` only:
nothing from the file is executed (``keras.models.load_model`` would import
and call the classes the file names, and Lambda layers are pickled Python
code). ``mlserve.convert(keras_model)`` takes a model in memory the same way,
from its serialized config and its layers' weights.

The config's layers become ONNX nodes built with ``onnx.helper`` (opset 17),
which ``mlserve.from_onnx`` then compiles, so Keras, PyTorch (via
``torch.onnx.export``) and hand-made ONNX all meet in one runtime.

Layout: the model takes its input as Keras does (channels last, NHWC). A
tensor of rank 4 is moved to NCHW once, where the first op that needs it
(Conv, pools, BatchNormalization over channels) reads it, and stays NCHW
until an op needs Keras's order again (Flatten, Reshape, Dense,
LayerNormalization, the model's outputs): Flatten after a conv then matches
Keras's NHWC flatten order. Each tensor's two layouts are built at most once.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile

import numpy as np

from .._errors import ConvertError

OPSET = 17
IR_VERSION = 8
#: the largest config.json / weights member of a .keras file read (declared sizes)
MAX_CONFIG_BYTES = 64 << 20
MAX_WEIGHTS_BYTES = 16 << 30

_TO_NCHW = [0, 3, 1, 2]
_TO_NHWC = [0, 2, 3, 1]
_NESTED = {"Sequential", "Functional", "Model"}
_PASS = {"Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
         "ActivityRegularization"}  # identity at inference


# --------------------------------------------------------------- reading files


def _read_keras_zip(path: str) -> tuple[dict, dict]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConvertError(f"{path}: not a .keras file (a zip archive): {exc}") from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        for name, limit in (("config.json", MAX_CONFIG_BYTES),
                            ("model.weights.h5", MAX_WEIGHTS_BYTES)):
            if name not in members:
                raise ConvertError(f"{path}: not a .keras file: it has no {name}")
            if members[name].file_size > limit:
                raise ConvertError(f"{path}: {name} is {members[name].file_size} bytes; "
                                   f"the limit is {limit}")
        try:
            config = json.loads(archive.read("config.json"))
            raw = archive.read("model.weights.h5")
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise ConvertError(f"{path}: damaged .keras file: {exc}") from None
    by_position = _weights_from_h5(io.BytesIO(raw), path, legacy=False)
    return config, _by_layer_name(config, by_position)


def _snake(name: str) -> str:
    """keras.src.utils.naming.to_snake_case, which names the groups of model.weights.h5."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _by_layer_name(config: dict, by_position: dict) -> dict:
    """A .keras file's weights by layer name: its groups are named by class and position
    (the i-th Dense is ``dense_i``), in the order of the config's layers."""
    layers = (config.get("config") or {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        return {}
    if config.get("class_name") == "Sequential":
        layers = [la for la in layers if la.get("class_name") != "InputLayer"]
    used: dict = {}
    weights = {}
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        key = _snake(str(layer.get("class_name")))
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        name = (layer.get("config") or {}).get("name") or layer.get("name")
        weights[name] = by_position.get(key, [])
    return weights


def _read_legacy_h5(path: str) -> tuple[dict, dict]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ConvertError(f"{path}: not an HDF5 file: {exc}") from None
    with f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise ConvertError(f"{path}: the HDF5 file holds no model config (weights only?); "
                               "save the whole model with model.save(...)")
        try:
            config = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        except ValueError as exc:
            raise ConvertError(f"{path}: the model config is not JSON: {exc}") from None
    return config, _weights_from_h5(path, path, legacy=True)


def _weights_from_h5(source, path: str, legacy: bool) -> dict:
    """{layer name: [arrays in the layer's weight order]} of a weights HDF5 file."""
    import h5py

    weights: dict = {}
    try:
        with h5py.File(source, "r") as f:
            if legacy:
                group = f.get("model_weights", f)
                for name in group:
                    layer = group[name]
                    if not isinstance(layer, h5py.Group):
                        continue
                    names = [n.decode() if isinstance(n, bytes) else str(n)
                             for n in layer.attrs.get("weight_names", [])]
                    weights[name] = [_dataset(layer[n], path) for n in names]
            else:
                layers = f.get("layers", {})
                for name in layers:
                    vars_ = layers[name].get("vars", {})
                    weights[name] = [_dataset(vars_[str(i)], path) for i in range(len(vars_))]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ConvertError(f"{path}: cannot read the weights: {exc}") from None
    return weights


def _dataset(ds, path: str) -> np.ndarray:
    import h5py

    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiu":
        raise ConvertError(f"{path}: weight {getattr(ds, 'name', ds)!r} is not a numeric array")
    return np.asarray(ds[()], dtype=np.float32)


def _in_memory(model) -> tuple[dict, dict]:
    import keras

    config = keras.saving.serialize_keras_object(model)
    weights = {}
    for layer in model.layers:
        weights[layer.name] = [np.asarray(keras.ops.convert_to_numpy(v.value), dtype=np.float32)
                               for v in layer.weights]
    return config, weights


# ------------------------------------------------------------------ the graph


class _Tensor:
    """An ONNX value: its name, its Keras per-sample shape, and whether it is NCHW."""

    __slots__ = ("name", "nchw", "other", "shape")

    def __init__(self, name: str, shape: tuple, nchw: bool = False):
        self.name, self.shape, self.nchw, self.other = name, tuple(shape), nchw, None


class _Builder:
    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []
        self._names: set = set()

    def _unique(self, hint: str) -> str:
        base = "".join(c if c.isalnum() or c in "_./" else "_" for c in hint) or "t"
        name, k = base, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def const(self, array, hint: str) -> str:
        from onnx import numpy_helper

        name = self._unique(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list, hint: str, **attrs) -> str:
        from onnx import helper

        out = self._unique(hint)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    # layouts
    def nchw(self, t: _Tensor) -> str:
        if t.nchw:
            return t.name
        if len(t.shape) != 3:
            raise ValueError(f"needs an image tensor (H, W, C), got shape {t.shape}")
        if t.other is None:
            t.other = self.node("Transpose", [t.name], t.name + "/nchw", perm=_TO_NCHW)
        return t.other

    def keras(self, t: _Tensor) -> str:
        if not t.nchw:
            return t.name
        if t.other is None:
            t.other = self.node("Transpose", [t.name], t.name + "/nhwc", perm=_TO_NHWC)
        return t.other

    def axis(self, t: _Tensor, axis: int) -> int:
        """The ONNX axis of Keras axis ``axis`` (counted with the batch) of ``t``."""
        rank = len(t.shape) + 1
        a = int(axis) + rank if int(axis) < 0 else int(axis)
        if not 1 <= a < rank:
            raise ValueError(f"axis {axis} of a tensor of rank {rank} (the batch axis "
                             "cannot be used)")
        return {1: 2, 2: 3, 3: 1}[a] if t.nchw else a


def _activation(b: _Builder, t: _Tensor, spec, hint: str) -> _Tensor:
    if isinstance(spec, dict):  # a serialized built-in: {"class_name": "function", "config": "relu"}
        spec = spec.get("config") if isinstance(spec.get("config"), str) else spec.get("class_name")
    if spec in (None, "linear"):
        return t
    if not isinstance(spec, str):
        raise TypeError(f"activation {spec!r} is not a built-in Keras activation")
    x, h = t.name, f"{hint}/{spec}"

    def out(name):
        return _Tensor(name, t.shape, t.nchw)

    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
              "softsign": "Softsign", "selu": "Selu", "exponential": "Exp", "elu": "Elu"}
    if spec in simple:
        return out(b.node(simple[spec], [x], h))
    if spec in ("softmax", "log_softmax"):
        op = "Softmax" if spec == "softmax" else "LogSoftmax"
        return out(b.node(op, [x], h, axis=b.axis(t, -1)))
    if spec in ("swish", "silu"):
        return out(b.node("Mul", [x, b.node("Sigmoid", [x], h + "/sigmoid")], h))
    if spec == "hard_sigmoid":
        return out(b.node("HardSigmoid", [x], h, alpha=1.0 / 6.0, beta=0.5))
    if spec in ("hard_silu", "hard_swish"):
        hs = b.node("HardSigmoid", [x], h + "/hs", alpha=1.0 / 6.0, beta=0.5)
        return out(b.node("Mul", [x, hs], h))
    if spec == "leaky_relu":
        return out(b.node("LeakyRelu", [x], h, alpha=0.2))
    if spec == "relu6":
        return out(_clip(b, x, 0.0, 6.0, h))
    if spec == "gelu":  # keras.activations.gelu(approximate=False): x/2 (1 + erf(x / sqrt 2))
        scaled = b.node("Mul", [x, b.const(np.float32(1 / math.sqrt(2)), h + "/c")], h + "/s")
        erf = b.node("Erf", [scaled], h + "/erf")
        one = b.node("Add", [erf, b.const(np.float32(1.0), h + "/one")], h + "/1p")
        half = b.node("Mul", [x, b.const(np.float32(0.5), h + "/half")], h + "/hx")
        return out(b.node("Mul", [half, one], h))
    if spec == "mish":
        sp = b.node("Softplus", [x], h + "/softplus")
        return out(b.node("Mul", [x, b.node("Tanh", [sp], h + "/tanh")], h))
    raise ValueError(f"activation {spec!r} is not supported")


def _clip(b: _Builder, x: str, lo: float, hi: float | None, hint: str) -> str:
    inputs = [x, b.const(np.float32(lo), hint + "/min")]
    if hi is not None:
        inputs.append(b.const(np.float32(hi), hint + "/max"))
    return b.node("Clip", inputs, hint)


def _pair(value, what: str) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(f"{what} must be one or two positive integers, got {value!r}")
    return value


def _spatial(shape, kernel, strides, dilation, padding: str):
    """(output H, W, ONNX pads) of a Keras 'valid' / 'same' window (TensorFlow's rule)."""
    out, begin, end = [], [], []
    for size, k, s, d in zip(shape[:2], kernel, strides, dilation):
        eff = (k - 1) * d + 1
        if padding == "valid":
            if size < eff:
                raise ValueError(f"a window of {eff} does not fit an input of {size}")
            out.append((size - eff) // s + 1)
            begin.append(0)
            end.append(0)
        elif padding == "same":
            n = -(-size // s)
            total = max((n - 1) * s + eff - size, 0)
            out.append(n)
            begin.append(total // 2)
            end.append(total - total // 2)
        else:
            raise ValueError(f"padding {padding!r} (valid or same only)")
    return out[0], out[1], begin + end


def _weights(w: list, n: int, name: str, cls: str) -> list:
    if len(w) != n:
        raise ConvertError(f"Keras layer {name!r} ({cls}) has {len(w)} weight arrays; "
                           f"expected {n}")
    return w


def _check_shape(array, expected: tuple, what: str):
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{what} has shape {tuple(array.shape)}, expected {tuple(expected)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinity")
    return array


def _channels_last(cfg: dict) -> None:
    fmt = cfg.get("data_format") or "channels_last"
    if fmt != "channels_last":
        raise ValueError(f"data_format {fmt!r} (mlserve imports channels_last models)")


def _conv_layer(b, cls, name, cfg, t, w):
    _channels_last(cfg)
    if len(t.shape) != 3:
        raise ValueError(f"needs an input of shape (H, W, C), got {t.shape}")
    cin = t.shape[2]
    kernel = _pair(cfg.get("kernel_size"), "kernel_size")
    strides = _pair(cfg.get("strides", 1), "strides")
    dilation = _pair(cfg.get("dilation_rate", 1), "dilation_rate")
    if dilation != (1, 1) and strides != (1, 1):
        raise ValueError("dilation_rate and strides both above 1")
    ho, wo, pads = _spatial(t.shape, kernel, strides, dilation, cfg.get("padding", "valid"))
    bias = cfg.get("use_bias", True)
    x = b.nchw(t)
    attrs = {"kernel_shape": list(kernel), "strides": list(strides), "dilations": list(dilation),
                 "pads": pads}
    if cls == "Conv2D":
        filters, groups = int(cfg["filters"]), int(cfg.get("groups", 1) or 1)
        if groups < 1 or cin % groups or filters % groups:
            raise ValueError(f"groups={groups} does not divide {cin} channels and {filters} "
                             "filters")
        w = _weights(w, 2 if bias else 1, name, cls)
        k = _check_shape(w[0], (*kernel, cin // groups, filters), "the kernel")
        inputs = [x, b.const(np.ascontiguousarray(k.transpose(3, 2, 0, 1)), name + "/W")]
        if bias:
            inputs.append(b.const(_check_shape(w[1], (filters,), "the bias"), name + "/B"))
        y = b.node("Conv", inputs, name + "/conv", group=groups, **attrs)
        cout = filters
    else:  # DepthwiseConv2D, SeparableConv2D: channel c * multiplier + m, as TensorFlow
        mult = int(cfg.get("depth_multiplier", 1))
        n_w = (2 if cls == "SeparableConv2D" else 1) + (1 if bias else 0)
        w = _weights(w, n_w, name, cls)
        dk = _check_shape(w[0], (*kernel, cin, mult), "the depthwise kernel")
        dw = np.ascontiguousarray(dk.transpose(2, 3, 0, 1).reshape(cin * mult, 1, *kernel))
        inputs = [x, b.const(dw, name + "/depthwise")]
        if cls == "DepthwiseConv2D" and bias:
            inputs.append(b.const(_check_shape(w[1], (cin * mult,), "the bias"), name + "/B"))
        y = b.node("Conv", inputs, name + "/depthwise_conv", group=cin, **attrs)
        cout = cin * mult
        if cls == "SeparableConv2D":
            filters = int(cfg["filters"])
            pk = _check_shape(w[1], (1, 1, cin * mult, filters), "the pointwise kernel")
            inputs = [y, b.const(np.ascontiguousarray(pk.transpose(3, 2, 0, 1)), name + "/W")]
            if bias:
                inputs.append(b.const(_check_shape(w[2], (filters,), "the bias"), name + "/B"))
            y = b.node("Conv", inputs, name + "/pointwise_conv", kernel_shape=[1, 1])
            cout = filters
    return _activation(b, _Tensor(y, (ho, wo, cout), True), cfg.get("activation"), name)


def _pool_layer(b, cls, name, cfg, t):
    _channels_last(cfg)
    if len(t.shape) != 3:
        raise ValueError(f"needs an input of shape (H, W, C), got {t.shape}")
    kernel = _pair(cfg.get("pool_size", 2), "pool_size")
    strides = _pair(cfg.get("strides") or kernel, "strides")
    ho, wo, pads = _spatial(t.shape, kernel, strides, (1, 1), cfg.get("padding", "valid"))
    op = "MaxPool" if cls == "MaxPooling2D" else "AveragePool"
    y = b.node(op, [b.nchw(t)], name + "/pool", kernel_shape=list(kernel),
               strides=list(strides), pads=pads)  # AveragePool leaves padding out of the mean
    return _Tensor(y, (ho, wo, t.shape[2]), True)


def _layer(b: _Builder, cls: str, name: str, cfg: dict, ins: list, w: list) -> _Tensor:
    """The ONNX nodes of one Keras layer; its output tensor."""
    if cls not in ("Add", "Concatenate", "Subtract", "Multiply", "Average", "Maximum",
                   "Minimum") and len(ins) != 1:
        raise ValueError(f"takes one input, got {len(ins)}")
    t = ins[0]
    if cls in _PASS:
        return t
    if cls in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
        return _conv_layer(b, cls, name, cfg, t, w)
    if cls in ("MaxPooling2D", "AveragePooling2D"):
        return _pool_layer(b, cls, name, cfg, t)
    if cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        _channels_last(cfg)
        op = "GlobalAveragePool" if cls == "GlobalAveragePooling2D" else "GlobalMaxPool"
        y = b.node(op, [b.nchw(t)], name + "/pool")
        if cfg.get("keepdims", False):
            return _Tensor(y, (1, 1, t.shape[2]), True)
        return _Tensor(b.node("Flatten", [y], name + "/flatten", axis=1), (t.shape[2],))
    if cls == "Rescaling":  # x * scale + offset (scalars, or one value per channel)
        x = b.keras(t)
        scale = np.asarray(cfg.get("scale", 1.0), dtype=np.float32)
        offset = np.asarray(cfg.get("offset", 0.0), dtype=np.float32)
        for a, what in ((scale, "scale"), (offset, "offset")):
            if a.size not in (1, t.shape[-1]) or not np.isfinite(a).all():
                raise ValueError(f"{what} {a.tolist()} (one value or one per channel)")
        y = b.node("Mul", [x, b.const(scale.reshape(-1) if scale.size > 1 else scale,
                                      name + "/scale")], name + "/mul")
        y = b.node("Add", [y, b.const(offset.reshape(-1) if offset.size > 1 else offset,
                                      name + "/offset")], name)
        return _Tensor(y, t.shape)
    if cls == "ZeroPadding2D":
        _channels_last(cfg)
        if len(t.shape) != 3:
            raise ValueError(f"needs an input of shape (H, W, C), got {t.shape}")
        pad = cfg.get("padding", 1)
        if isinstance(pad, int):
            pad = ((pad, pad), (pad, pad))
        (top, bottom), (left, right) = [(p, p) if isinstance(p, int) else tuple(p)
                                        for p in pad]
        if min(top, bottom, left, right) < 0:
            raise ValueError(f"padding {pad}")
        pads = b.const(np.asarray([0, 0, top, left, 0, 0, bottom, right], np.int64),
                       name + "/pads")
        y = b.node("Pad", [b.nchw(t), pads], name, mode="constant")
        h, w, c = t.shape
        return _Tensor(y, (h + top + bottom, w + left + right, c), True)
    if cls == "Dense":
        units, bias = int(cfg["units"]), cfg.get("use_bias", True)
        w = _weights(w, 2 if bias else 1, name, cls)
        kernel = _check_shape(w[0], (t.shape[-1], units), "the kernel")
        bvec = _check_shape(w[1], (units,), "the bias") if bias else np.zeros(units, np.float32)
        x = b.keras(t)
        if len(t.shape) == 1:
            y = b.node("Gemm", [x, b.const(kernel, name + "/W"), b.const(bvec, name + "/B")],
                       name + "/gemm")
        else:
            y = b.node("MatMul", [x, b.const(kernel, name + "/W")], name + "/matmul")
            if bias:
                y = b.node("Add", [y, b.const(bvec, name + "/B")], name + "/bias")
        return _activation(b, _Tensor(y, (*t.shape[:-1], units)), cfg.get("activation"), name)
    if cls == "Activation":
        return _activation(b, t, cfg.get("activation"), name)
    if cls == "ReLU":
        slope = float(cfg.get("negative_slope") or 0.0)
        top = cfg.get("max_value")
        if float(cfg.get("threshold") or 0.0) != 0.0:
            raise ValueError("threshold other than 0")
        if slope:
            if top is not None:
                raise ValueError("negative_slope together with max_value")
            return _Tensor(b.node("LeakyRelu", [t.name], name, alpha=slope), t.shape, t.nchw)
        if top is not None:
            return _Tensor(_clip(b, t.name, 0.0, float(top), name), t.shape, t.nchw)
        return _Tensor(b.node("Relu", [t.name], name), t.shape, t.nchw)
    if cls == "LeakyReLU":
        alpha = cfg.get("negative_slope", cfg.get("alpha", 0.3))
        return _Tensor(b.node("LeakyRelu", [t.name], name, alpha=float(alpha)), t.shape, t.nchw)
    if cls == "ELU":
        return _Tensor(b.node("Elu", [t.name], name, alpha=float(cfg.get("alpha", 1.0))),
                       t.shape, t.nchw)
    if cls == "Softmax":
        axis = cfg.get("axis", -1)
        if isinstance(axis, list):
            if len(axis) != 1:
                raise ValueError(f"softmax over several axes {axis}")
            axis = axis[0]
        return _Tensor(b.node("Softmax", [t.name], name, axis=b.axis(t, axis)), t.shape, t.nchw)
    if cls == "BatchNormalization":
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        if not isinstance(axis, int) or axis not in (-1, len(t.shape)):
            raise ValueError(f"axis {axis} (the channel axis -1 only)")
        c = t.shape[-1]
        center, scale = cfg.get("center", True), cfg.get("scale", True)
        w = list(_weights(w, 2 + int(center) + int(scale), name, cls))
        gamma = w.pop(0) if scale else np.ones(c, np.float32)
        beta = w.pop(0) if center else np.zeros(c, np.float32)
        mean, var = w
        for a, what in ((gamma, "gamma"), (beta, "beta"), (mean, "moving_mean"),
                        (var, "moving_variance")):
            _check_shape(a, (c,), what)
        eps = float(cfg.get("epsilon", 1e-3))
        if len(t.shape) == 3:
            inputs = [b.nchw(t)] + [b.const(a, f"{name}/{n}") for a, n in
                                    ((gamma, "scale"), (beta, "B"), (mean, "mean"), (var, "var"))]
            return _Tensor(b.node("BatchNormalization", inputs, name, epsilon=eps), t.shape, True)
        mul = (gamma / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
        add = (beta - mean * mul).astype(np.float32)
        if len(t.shape) == 1:  # (N, C): BatchNormalization's own layout
            inputs = [t.name] + [b.const(a, f"{name}/{n}") for a, n in
                                 ((gamma, "scale"), (beta, "B"), (mean, "mean"), (var, "var"))]
            return _Tensor(b.node("BatchNormalization", inputs, name, epsilon=eps), t.shape)
        y = b.node("Mul", [b.keras(t), b.const(mul, name + "/mul")], name + "/mul")
        return _Tensor(b.node("Add", [y, b.const(add, name + "/add")], name), t.shape)
    if cls == "Flatten":
        _channels_last(cfg)
        if len(t.shape) == 1:
            return t
        size = int(np.prod(t.shape))
        return _Tensor(b.node("Flatten", [b.keras(t)], name, axis=1), (size,))
    if cls == "Reshape":
        target = [int(v) for v in cfg["target_shape"]]
        size = int(np.prod(t.shape))
        if target.count(-1) > 1 or any(v == 0 or v < -1 for v in target):
            raise ValueError(f"target_shape {target}")
        if -1 in target:
            known = int(np.prod([v for v in target if v != -1]))
            if known == 0 or size % known:
                raise ValueError(f"cannot reshape {t.shape} to {target}")
            target[target.index(-1)] = size // known
        if int(np.prod(target)) != size:
            raise ValueError(f"cannot reshape {t.shape} ({size} values) to {tuple(target)}")
        if len(target) == 1:
            return _Tensor(b.node("Flatten", [b.keras(t)], name, axis=1), (size,))
        shape = b.const(np.asarray([0, *target], dtype=np.int64), name + "/shape")
        return _Tensor(b.node("Reshape", [b.keras(t), shape], name), tuple(target))
    if cls in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"):
        if len(ins) < 2 or (cls == "Subtract" and len(ins) != 2):
            raise ValueError(f"takes {'two' if cls == 'Subtract' else 'at least two'} inputs, "
                             f"got {len(ins)}")
        nchw = all(len(i.shape) == 3 for i in ins) and any(i.nchw for i in ins)
        names = [b.nchw(i) if nchw else b.keras(i) for i in ins]
        like = _Tensor("", ins[0].shape, nchw)
        if cls == "Concatenate":
            axis = b.axis(like, cfg.get("axis", -1))
            k_axis = (int(cfg.get("axis", -1)) % (len(ins[0].shape) + 1)) - 1
            for i in ins[1:]:
                if len(i.shape) != len(ins[0].shape) or any(
                        a != c for j, (a, c) in enumerate(zip(i.shape, ins[0].shape))
                        if j != k_axis):
                    raise ValueError(f"inputs of shapes {[x.shape for x in ins]} do not "
                                     "concatenate")
            shape = list(ins[0].shape)
            shape[k_axis] = sum(i.shape[k_axis] for i in ins)
            return _Tensor(b.node("Concat", names, name, axis=axis), tuple(shape), nchw)
        if any(i.shape != ins[0].shape for i in ins):
            raise ValueError(f"inputs of different shapes {[i.shape for i in ins]}")
        op = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Average": "Add",
              "Maximum": "Max", "Minimum": "Min"}[cls]
        y = names[0]
        for k, other in enumerate(names[1:]):
            y = b.node(op, [y, other], f"{name}/{k}")
        if cls == "Average":
            y = b.node("Mul", [y, b.const(np.float32(1.0 / len(ins)), name + "/n")], name)
        return _Tensor(y, ins[0].shape, nchw)
    if cls == "Embedding":
        w = _weights(w, 1, name, cls)
        table = _check_shape(w[0], (int(cfg["input_dim"]), int(cfg["output_dim"])),
                             "the embeddings")
        idx = b.node("Cast", [b.keras(t)], name + "/indices", to=7)  # INT64
        y = b.node("Gather", [b.const(table, name + "/embeddings"), idx], name, axis=0)
        return _Tensor(y, (*t.shape, table.shape[1]))
    if cls == "LayerNormalization":
        if cfg.get("rms_scaling"):
            raise ValueError("rms_scaling=True")
        rank = len(t.shape) + 1
        axes = cfg.get("axis", -1)
        axes = sorted((a + rank if a < 0 else a) for a in (axes if isinstance(axes, list)
                                                               else [axes]))
        if axes != list(range(axes[0], rank)) or axes[0] < 1:
            raise ValueError(f"axis {cfg.get('axis')} (trailing axes only)")
        norm = t.shape[axes[0] - 1:]
        center, scale = cfg.get("center", True), cfg.get("scale", True)
        w = list(_weights(w, int(center) + int(scale), name, cls))
        gamma = w.pop(0) if scale else np.ones(norm, np.float32)
        beta = w.pop(0) if center else np.zeros(norm, np.float32)
        gamma = _check_shape(gamma.reshape(norm) if gamma.size == np.prod(norm) else gamma,
                             norm, "gamma")
        beta = _check_shape(beta.reshape(norm) if beta.size == np.prod(norm) else beta,
                            norm, "beta")
        y = b.node("LayerNormalization",
                   [b.keras(t), b.const(gamma, name + "/scale"), b.const(beta, name + "/B")],
                   name, axis=axes[0], epsilon=float(cfg.get("epsilon", 1e-3)))
        return _Tensor(y, t.shape)
    raise KeyError(cls)


def _refuse(layer: dict) -> None:
    cls, name = layer.get("class_name"), layer.get("config", {}).get("name", layer.get("name"))
    if cls == "Lambda":
        raise ConvertError(f"Keras layer {name!r} is a Lambda layer: it holds Python code, "
                           "which mlserve never runs; replace it with built-in layers")
    if cls in _NESTED:
        raise ConvertError(f"Keras layer {name!r} is a nested model ({cls}); build one flat "
                           "Sequential or functional model")
    module = layer.get("module")
    if layer.get("registered_name") or (module is not None and module != "keras.layers"):
        raise ConvertError(f"Keras layer {name!r} ({layer.get('registered_name') or cls}) is a "
                           "custom layer; mlserve imports built-in Keras layers only")


def _input_shape(cfg: dict, what: str) -> tuple:
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if not isinstance(shape, (list, tuple)) or len(shape) < 2:
        raise ConvertError(f"{what} has no input shape (build the model on an input first)")
    dims = shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise ConvertError(f"{what} has input shape {list(shape)}; mlserve needs every "
                           "dimension but the batch fixed")
    return tuple(dims)


def _convert_layer(b, layer: dict, ins: list, weights: dict) -> _Tensor:
    _refuse(layer)
    cls = layer.get("class_name")
    cfg = layer.get("config") or {}
    name = cfg.get("name") or layer.get("name") or cls
    try:
        return _layer(b, cls, name, cfg, ins, weights.get(name, []))
    except KeyError as exc:
        if exc.args == (cls,):
            raise ConvertError(f"Keras layer {name!r} ({cls}) is not supported by mlserve"
                               ) from None
        raise ConvertError(f"Keras layer {name!r} ({cls}): missing setting {exc}") from None
    except (ValueError, TypeError, IndexError) as exc:
        raise ConvertError(f"Keras layer {name!r} ({cls}) is not supported by mlserve: {exc}"
                           ) from None


def _graph(config: dict, weights: dict):
    """(builder, [(input name, shape)], [output tensors]) of a serialized Keras model."""
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise ConvertError("not a Keras model config")
    kind, cfg = config.get("class_name"), config["config"]
    layers = cfg.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ConvertError(f"the Keras model ({kind}) lists no layers (subclassed models "
                           "cannot be imported: their call() is Python code)")
    b = _Builder()
    if kind == "Sequential":
        first = layers[0]
        if first.get("class_name") == "InputLayer":
            shape, iname, layers = _input_shape(first.get("config", {}), "the model"), \
                first["config"].get("name", "input"), layers[1:]
        else:  # built without an Input: Keras 3's build_config, Keras 2's batch_input_shape
            build = config.get("build_config") or {}
            spec = build.get("input_shape") or (first.get("config") or {}).get(
                "batch_input_shape")
            shape = _input_shape({"batch_shape": spec}, "the model")
            iname = "input"
        iname = b._unique(iname)
        t = _Tensor(iname, shape)
        for layer in layers:
            before = len(b.nodes)
            t = _convert_layer(b, layer, [t], weights)
            _name_output(b, t, before, layer)
        return b, [(iname, shape)], [t]
    if kind not in ("Functional", "Model"):
        raise ConvertError(f"Keras model class {kind!r} is not supported (Sequential and "
                           "functional models only)")
    produced: dict = {}
    inputs = []

    def refs(spec):
        spec = [spec] if spec and isinstance(spec[0], str) else (spec or [])
        return [tuple(s[:3]) for s in spec]

    by_name = {}
    for layer in layers:
        lname = layer.get("name") or layer.get("config", {}).get("name")
        by_name[lname] = layer
        if layer.get("class_name") == "InputLayer":
            shape = _input_shape(layer.get("config", {}), f"input {lname!r}")
            onnx_name = b._unique(lname)
            produced[(lname, 0, 0)] = _Tensor(onnx_name, shape)
            inputs.append((onnx_name, shape))
    for layer in layers:  # Keras lists layers in an order where inputs come first
        if layer.get("class_name") == "InputLayer":
            continue
        lname = layer.get("name") or layer.get("config", {}).get("name")
        for k, node in enumerate(layer.get("inbound_nodes") or []):
            ins = [produced.get(h) for h in _history(node, lname)]
            if any(i is None for i in ins):
                raise ConvertError(f"Keras layer {lname!r}: an input is computed later or not "
                                   "at all (unsupported graph order)")
            before = len(b.nodes)
            out = _convert_layer(b, layer, ins, weights)
            _name_output(b, out, before, layer)
            produced[(lname, k, 0)] = out
    outs = []
    for ref in refs(cfg.get("output_layers") or []):
        if ref not in produced:
            raise ConvertError(f"the model's output {ref[0]!r} is not computed by its layers")
        outs.append(produced[ref])
    order = [produced[r].name for r in refs(cfg.get("input_layers") or [])]
    inputs.sort(key=lambda i: order.index(i[0]) if i[0] in order else len(order))
    return b, inputs, outs


def _history(node, lname: str) -> list:
    """The (layer, node index, tensor index) of each input tensor of one call of a layer."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        found = []

        def walk(value):
            if isinstance(value, dict):
                if value.get("class_name") == "__keras_tensor__":
                    found.append(tuple(value["config"]["keras_history"][:3]))
                else:
                    for v in value.values():
                        walk(v)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    walk(v)

        walk(node.get("args", []))
        if not found:
            raise ConvertError(f"Keras layer {lname!r}: a call without input tensors")
        return found
    if isinstance(node, (list, tuple)):  # Keras 2: [[layer, node, tensor, kwargs], ...]
        return [tuple(entry[:3]) for entry in node]
    raise ConvertError(f"Keras layer {lname!r}: unreadable inbound node {node!r:.60}")


def _name_output(b: _Builder, t: _Tensor, before: int, layer: dict) -> None:
    """Name a layer's output tensor after the layer (readable graphs and errors)."""
    name = (layer.get("config") or {}).get("name") or layer.get("name")
    if not name or len(b.nodes) == before or b.nodes[-1].output[0] != t.name:
        return
    if t.other is not None or name in b._names:
        return
    b._names.add(name)
    b.nodes[-1].output[0] = name
    b.nodes[-1].name = name
    t.name = name


def to_onnx(src):
    """The ONNX ModelProto (opset 17) of a Keras 3 model: a path (.keras, .h5) or the model.

    Inputs take the Keras layout (channels last); outputs have the Keras shapes.
    Raises mlserve.ConvertError for a file that is not a Keras model, a Lambda or
    custom layer, or a layer or setting mlserve does not import (naming the layer).
    """
    try:
        return _to_onnx(src)
    except ConvertError:
        raise
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        # a config the JSON holds but that does not make sense (hand-edited or damaged)
        raise ConvertError(f"malformed Keras model config: {type(exc).__name__}: {exc}"
                           ) from None


def _to_onnx(src):
    from onnx import TensorProto, helper

    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic.startswith(b"PK"):
            config, weights = _read_keras_zip(path)
        elif magic == b"\x89HDF\r\n\x1a\n":
            config, weights = _read_legacy_h5(path)
        else:
            raise ConvertError(f"{path}: neither a .keras (zip) nor an .h5 (HDF5) file")
    elif type(src).__module__.startswith("keras"):
        config, weights = _in_memory(src)
    else:
        raise ConvertError(f"from_keras takes a .keras/.h5 path or a Keras model, got "
                           f"{type(src).__name__}")
    b, inputs, outputs = _graph(config, weights)
    out_infos, seen = [], set()
    for t in outputs:
        name = b.keras(t)
        if name in seen or name in {i[0] for i in inputs}:
            name = b.node("Identity", [name], name + "/out")
        seen.add(name)
        out_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *t.shape]))
    graph = helper.make_graph(
        b.nodes, str(config["config"].get("name") or "keras"),
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *s]) for n, s in inputs],
        out_infos, b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mlserve.from_keras")
    model.ir_version = IR_VERSION
    return model


def from_keras(src):
    """Convert a Keras 3 model (a .keras or .h5 path, or the model) to an mlserve model.

    The file is read with json and h5py: no code from it runs. The model takes
    its input in the Keras layout (channels last) and computes in float32 in C.

    Raises
    ------
    mlserve.ConvertError
        For a file that is not a Keras model, a Lambda or custom layer, or a
        layer the runtime does not run yet (naming the layer or the ONNX op).
    """
    from .. import _core
    from ._common import source_info
    from ._onnx import from_onnx

    net = from_onnx(to_onnx(src))
    core = net._fitted_model()
    meta = json.loads(core.metadata)
    meta["source"] = source_info("keras", "keras", "Model", converted_via="onnx")
    net._install(_core.create(meta["kind"], core.arrays(), json.dumps(meta)))
    return net


def _convert(model, dtype):  # mlserve.convert's signature; a graph computes in float32
    return from_keras(model)


CONVERTERS = {
    "keras.src.models.sequential.Sequential": _convert,
    "keras.src.models.functional.Functional": _convert,
}
