"""Converters for scikit-learn's MLPClassifier and MLPRegressor (scikit-learn is not imported).

The network becomes the C graph's chain: one Dense layer per ``coefs_``
entry, the hidden activation after each but the last, and the output
activation (softmax, logistic or identity) last. It computes in float32.
"""
from __future__ import annotations

import numpy as np

from .._errors import ConvertError
from .._graph import (
    OP_DENSE,
    OP_EXP,
    OP_IDENTITY,
    OP_RELU,
    OP_SIGMOID,
    OP_SOFTMAX,
    OP_TANH,
    make_network,
)
from ._common import qualified_name, require_fitted, source_info

_ACTIVATIONS = {"relu": OP_RELU, "logistic": OP_SIGMOID, "tanh": OP_TANH, "identity": OP_IDENTITY,
                "softmax": OP_SOFTMAX, "exp": OP_EXP}


def _layers(est) -> list:
    name = type(est).__name__
    coefs, intercepts = list(est.coefs_), list(est.intercepts_)
    if len(coefs) < 1 or len(coefs) != len(intercepts):
        raise ConvertError(f"{name} has {len(coefs)} weight matrices and {len(intercepts)} biases")
    hidden = _ACTIVATIONS.get(est.activation)
    out_act = _ACTIVATIONS.get(est.out_activation_)
    if hidden is None or hidden in (OP_SOFTMAX, OP_EXP) or out_act is None:
        raise ConvertError(
            f"{name} activation {est.activation!r} / output {est.out_activation_!r} is not supported"
        )
    layers = []
    for i, (w, b) in enumerate(zip(coefs, intercepts)):
        w, b = np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if w.ndim != 2 or b.shape != (w.shape[1],):
            raise ConvertError(f"{name}.coefs_[{i}] and intercepts_[{i}] have unusable shapes")
        if layers and w.shape[0] != layers[-1][2]:
            raise ConvertError(f"{name}.coefs_[{i}] does not follow the previous layer's size")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise ConvertError(f"{name}.coefs_[{i}] or intercepts_[{i}] contains NaN or infinity")
        layers.append((OP_DENSE, w.shape[0], w.shape[1], w, b))
        act = hidden if i < len(coefs) - 1 else out_act
        if act != OP_IDENTITY or i == len(coefs) - 1:
            layers.append((act, w.shape[1], w.shape[1], None, None))
    return layers


def convert_mlp(est, dtype):
    require_fitted(est, "coefs_", "intercepts_", "out_activation_")
    layers = _layers(est)
    n_in, n_out = int(layers[0][1]), int(layers[-1][2])
    is_classifier = hasattr(est, "classes_")
    graph = {
        "source_kind": "mlp",
        "input_names": ["X"],
        "output_names": ["y"],
        "input_shape": ["N", n_in],
        "output_shape": ["N", n_out],
    }
    extra = {"source": source_info("scikit-learn", "sklearn", qualified_name(type(est)))}
    if is_classifier:
        classes = np.asarray(est.classes_)
        if est.out_activation_ == "logistic" and n_out > 1 or classes.ndim != 1:
            raise ConvertError(f"{type(est).__name__} with multilabel targets is not supported")
        graph["binary"] = est.out_activation_ == "logistic"
        extra.update(
            task="classification",
            classes=classes.tolist(),
            classes_dtype=classes.dtype.str if classes.dtype.kind != "U" else "str",
        )
    else:
        graph["ravel"] = n_out == 1
        extra["task"] = "regression"
    net = make_network(layers, graph, extra)
    names = getattr(est, "feature_names_in_", None)
    if names is not None:
        net.feature_names_in_ = np.asarray(names, dtype=object)
    return net


CONVERTERS = {
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier": convert_mlp,
    "sklearn.neural_network._multilayer_perceptron.MLPRegressor": convert_mlp,
}
