"""Neural networks run by the C graph family (csrc/mls_graph.c).

``NeuralNetwork`` holds a float32 chain of layers converted from an ONNX
model (``mlserve.from_onnx``) or a scikit-learn MLPClassifier/MLPRegressor
(``mlserve.convert``). The C side computes the network's output tensor; this
class reshapes it (ONNX) or turns it into labels and probabilities (MLP).
"""
from __future__ import annotations

import json
import math

import numpy as np

from . import _core
from ._estimators import ESTIMATORS, _MLServeEstimator

# op codes of csrc/mls_graph.h (stored in .mls files: never renumber)
(OP_DENSE, OP_RELU, OP_SIGMOID, OP_TANH, OP_SOFTMAX, OP_LOGSOFTMAX, OP_IDENTITY, OP_LEAKYRELU,
 OP_EXP) = range(1, 10)


def build_arrays(layers: list) -> dict:
    """Sections for a list of (op, in_dim, out_dim, weights or None, bias or None).

    For LeakyRelu the weights slot holds alpha (stored as float64 bits in column 3)."""
    rows = np.zeros((len(layers), 4), dtype=np.int64)
    arrays = {}
    for i, (op, d_in, d_out, w, b) in enumerate(layers):
        rows[i, :3] = (op, d_in, d_out)
        if op == OP_LEAKYRELU:
            rows[i, 3] = np.array([float(w)], dtype=np.float64).view(np.int64)[0]
        if op == OP_DENSE:
            arrays[f"w{i}"] = np.ascontiguousarray(w, dtype=np.float32)
            arrays[f"b{i}"] = np.ascontiguousarray(b, dtype=np.float32)
    arrays["layers"] = rows
    return arrays


class NeuralNetwork(_MLServeEstimator):
    """A neural network (from ONNX or a scikit-learn MLP), float32, computed in C.

    Attributes
    ----------
    input_names, output_names : list of str
    input_shape, output_shape : list
        Shapes with the batch dimension first ("N").
    classes_ : ndarray, for a converted MLPClassifier
    n_features_in_ : int
        Values per sample (the product of the input shape without the batch).
    """

    _kind = "graph"

    def __init__(self):
        pass

    @property
    def _estimator_type(self):
        return getattr(self, "_task_type", "regressor")

    @classmethod
    def _from_core_model(cls, model) -> NeuralNetwork:
        est = cls()
        est._install(model)
        return est

    def _install_arrays(self, arrays: dict, meta: dict) -> None:
        g = meta["graph"]
        self.input_names = list(g["input_names"])
        self.output_names = list(g["output_names"])
        self.input_shape = list(g["input_shape"])
        self.output_shape = list(g["output_shape"])
        self._source_kind = g["source_kind"]
        self._task_type = "classifier" if meta.get("task") == "classification" else "regressor"
        if meta.get("classes") is not None:
            self.classes_ = np.asarray(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
        self._output_shapes = [list(o) for o in g.get("output_shapes", [g["output_shape"]])]
        self._binary_ = bool(g.get("binary", False))
        self._ravel_ = bool(g.get("ravel", False))

    # -- raw tensors
    def _flat(self, x, name: str) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise ValueError(
                f"input {name!r} must hold numbers (float32), got dtype {x.dtype}"
            )
        per_sample = self.input_shape[1:]
        if self._source_kind == "onnx":
            if x.ndim != len(self.input_shape) or list(x.shape[1:]) != per_sample:
                raise ValueError(
                    f"input {name!r} must have shape {['N', *per_sample]}, got {list(x.shape)}"
                )
        elif x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim < 1 or x.shape[0] < 1:
            raise ValueError(f"input {name!r} needs at least one sample, got shape {x.shape}")
        return np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32)

    def _outputs(self, x, name: str) -> list:
        out = self._fitted_model().predict(self._flat(x, name))
        if self._source_kind != "onnx":
            return [out]
        res, at = [], 0
        for shape in self._output_shapes:
            size = math.prod(shape[1:])
            res.append(out[:, at:at + size].reshape(out.shape[0], *shape[1:]))
            at += size
        if len(res) == 1:
            return res
        return [np.ascontiguousarray(r) for r in res]

    def _output(self, x, name: str) -> np.ndarray:
        return self._outputs(x, name)[0]

    def run(self, feeds: dict) -> dict:
        """Outputs by name for ``feeds`` ({input name: array}), as onnxruntime's run."""
        if not isinstance(feeds, dict) or set(feeds) != set(self.input_names):
            given = sorted(feeds) if isinstance(feeds, dict) else type(feeds).__name__
            raise ValueError(f"feeds must give exactly the inputs {self.input_names}, got {given}")
        outs = self._outputs(feeds[self.input_names[0]], self.input_names[0])
        return dict(zip(self.output_names, outs))

    # -- estimator API
    def predict(self, X):
        """Network output (ONNX), class labels (MLPClassifier) or targets (MLPRegressor)."""
        if self._source_kind == "onnx":
            return self._output(X, self.input_names[0])
        out = self._output(X, "X")
        if self._estimator_type == "classifier":
            if self._binary_:
                return self.classes_.take((out[:, 0] > 0.5).astype(np.int64))
            return self.classes_.take(np.argmax(out, axis=1))
        return out.ravel() if self._ravel_ else out

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes) of a converted MLPClassifier."""
        if self._estimator_type != "classifier":
            raise AttributeError("predict_proba is for a converted MLPClassifier only")
        out = self._output(X, "X")
        if self._binary_:
            return np.hstack([1.0 - out, out])
        return out

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


def make_network(layers: list, graph_meta: dict, meta_extra: dict) -> NeuralNetwork:
    """A NeuralNetwork over the C graph of ``layers``."""
    arrays = build_arrays(layers)
    net = NeuralNetwork()
    net.n_features_in_ = int(layers[0][1])
    meta = json.loads(net._build_metadata(int(layers[-1][2]), graph_meta["output_shape"], {}))
    meta.update(meta_extra)
    meta["dtype"] = "float32"
    meta["graph"] = graph_meta
    if not all(math.isfinite(float(np.abs(a).max(initial=0))) for a in arrays.values()):
        from ._errors import ConvertError

        raise ConvertError("the network's weights contain NaN or infinity")
    net._install(_core.create(net._kind, arrays, json.dumps(meta)))
    return net


def make_graph_network(arrays: dict, n_features: int, n_outputs: int, graph_meta: dict,
                       meta_extra: dict) -> NeuralNetwork:
    """A NeuralNetwork over the C DAG of ``arrays`` (csrc/graph/graph_internal.h)."""
    from ._errors import ConvertError

    net = NeuralNetwork()
    net.n_features_in_ = int(n_features)
    meta = json.loads(net._build_metadata(int(n_outputs), graph_meta["output_shape"], {}))
    meta.update(meta_extra)
    meta["dtype"] = "float32"
    meta["graph"] = graph_meta
    for name, a in arrays.items():
        if a.dtype == np.float32 and not np.isfinite(a).all():
            raise ConvertError(f"the network's constant {name} contains NaN or infinity")
    try:
        model = _core.create(net._kind, arrays, json.dumps(meta))
    except (ValueError, OSError, NotImplementedError) as exc:
        raise ConvertError(f"the graph does not validate: {exc}") from None
    net._install(model)
    return net


ESTIMATORS[NeuralNetwork.__name__] = NeuralNetwork  # mlserve.load finds it
