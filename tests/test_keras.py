"""mlserve.from_keras / mlserve.convert(keras_model) against keras_model.predict (real Keras, JAX).

Every model is converted to ONNX and run by onnxruntime (1e-4 against Keras);
the saved .keras and .h5 files convert to the same outputs as the model in
memory; models main's C runtime runs (Dense, activations, Flatten, Reshape,
Dropout) are also checked through mlserve's own predict.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest

keras = pytest.importorskip("keras")
from keras import layers

import mlserve
from mlserve.convert._keras import to_onnx

# Keras's own Variable.numpy() (get_weights) under NumPy 2: not mlserve's to fix
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def _randomize(model, rng):
    """Weights of a realistic scale, and batch-norm statistics away from 0/1."""
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        new = []
        for w in ws:
            if isinstance(layer, layers.BatchNormalization):
                new.append(rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32))
            else:
                new.append((rng.normal(size=w.shape) * 0.3).astype(np.float32))
        layer.set_weights(new)
    return model


def _x(shape, rng, n=3):
    return rng.normal(size=(n, *shape)).astype(np.float32)


def _seq(shape, *body):
    return keras.Sequential([keras.Input(shape), *body])


def _functional_add_concat():
    i = keras.Input((8, 8, 3))
    a = layers.Conv2D(4, 3, padding="same", activation="relu")(i)
    b = layers.Conv2D(4, 1)(i)
    s = layers.Add()([a, b])
    c = layers.Concatenate()([s, layers.BatchNormalization()(a)])
    g = layers.GlobalAveragePooling2D()(c)
    return keras.Model(i, layers.Dense(3, activation="softmax")(g))


def _functional_dense():
    i = keras.Input((6,))
    a = layers.Dense(5, activation="tanh")(i)
    b = layers.Dense(5)(i)
    s = layers.Add()([a, b])
    c = layers.Concatenate(axis=-1)([s, a])
    return keras.Model(i, layers.Dense(2)(c))


# (case id, builder, per-sample input shape, why main's C runtime cannot run it yet or None)
CASES = [
    ("dense", lambda: _seq((6,), layers.Dense(5, activation="relu"), layers.Dense(3)), (6,), None),
    ("activations", lambda: _seq(
        (7,), *[layers.Dense(7, activation=a) for a in
                ("sigmoid", "tanh", "linear", "relu")],
        layers.Activation("softmax")), (7,), None),
    ("more_activations", lambda: _seq(
        (7,), *[layers.Dense(7, activation=a) for a in
                ("elu", "selu", "softplus", "softsign", "swish", "gelu", "hard_sigmoid",
                 "leaky_relu", "relu6", "mish", "log_softmax")]), (7,), None),
    ("activation_layers", lambda: _seq(
        (7,), layers.Dense(7), layers.ReLU(), layers.Dense(7), layers.LeakyReLU(0.1),
        layers.Dense(7), layers.ELU(), layers.Dense(7), layers.ReLU(max_value=1.0),
        layers.Softmax()), (7,), None),
    ("dropout_flatten_reshape", lambda: _seq(
        (4, 5), layers.Flatten(), layers.Dropout(0.5), layers.Dense(6, activation="relu"),
        layers.Reshape((6,)), layers.Dense(2)), (4, 5), None),
    ("reshape_nd", lambda: _seq((12,), layers.Reshape((3, 4)), layers.Dense(2),
                                layers.Flatten()), (12,), None),
    ("conv2d", lambda: _seq((9, 9, 3), layers.Conv2D(4, 3, activation="relu"),
                            layers.Conv2D(5, 3, strides=2, padding="same"), layers.Flatten(),
                            layers.Dense(3)), (9, 9, 3), None),
    ("conv2d_dilated_grouped", lambda: _seq(
        (10, 10, 4), layers.Conv2D(4, 3, dilation_rate=2, padding="same", groups=2),
        layers.Flatten()), (10, 10, 4), None),
    ("depthwise", lambda: _seq((8, 8, 3), layers.DepthwiseConv2D(3, depth_multiplier=2,
                                                                 padding="same"),
                               layers.Flatten()), (8, 8, 3), None),
    ("separable", lambda: _seq((8, 8, 3), layers.SeparableConv2D(5, 3, depth_multiplier=2,
                                                                 strides=2, padding="same"),
                               layers.Flatten()), (8, 8, 3), None),
    ("maxpool", lambda: _seq((9, 9, 2), layers.MaxPooling2D(2), layers.MaxPooling2D(
        3, strides=1, padding="same"), layers.Flatten()), (9, 9, 2), None),
    ("avgpool", lambda: _seq((9, 9, 2), layers.AveragePooling2D(2), layers.AveragePooling2D(
        2, padding="same"), layers.Flatten()), (9, 9, 2), None),
    ("global_avgpool", lambda: _seq((6, 6, 3), layers.Conv2D(4, 1),
                                    layers.GlobalAveragePooling2D()), (6, 6, 3), None),
    ("rescaling_zeropadding", lambda: _seq(
        (7, 6, 3), layers.Rescaling(1 / 127.5, offset=-1.0), layers.ZeroPadding2D(((1, 2), (0, 1))),
        layers.Conv2D(2, 3), layers.Flatten()), (7, 6, 3),
     None),
    ("rescaling_per_channel", lambda: _seq(
        (5, 3), layers.Rescaling([0.5, 2.0, -1.0], offset=[0.1, 0.0, 3.0]), layers.Flatten(),
        layers.Dense(2)), (5, 3), None),
    ("batchnorm", lambda: _seq((6, 6, 3), layers.BatchNormalization(),
                               layers.Flatten(), layers.BatchNormalization()), (6, 6, 3), None),
    ("conv_dense_batchnorm", lambda: _seq(
        (12, 12, 1), layers.Conv2D(6, 3, activation="relu"), layers.BatchNormalization(),
        layers.MaxPooling2D(), layers.Conv2D(8, 3, activation="relu"),
        layers.BatchNormalization(), layers.MaxPooling2D(), layers.Flatten(),
        layers.Dropout(0.3), layers.Dense(10, activation="softmax")), (12, 12, 1), None),
    ("embedding", lambda: _seq((5,), layers.Embedding(11, 4), layers.Flatten(),
                               layers.Dense(2)), (5,), 'an Embedding (Cast of the batched ids to int64, then Gather) is not in the C runtime yet'),
    ("layernorm", lambda: _seq((3, 6), layers.Dense(6), layers.LayerNormalization(),
                               layers.Flatten()), (3, 6), None),
    ("functional_add_concat", _functional_add_concat, (8, 8, 3), None),
    ("functional_dense_add_concat", _functional_dense, (6,), None),
]
IDS = [c[0] for c in CASES]


def _input(case_id, shape, rng):
    if case_id == "embedding":
        return rng.integers(0, 11, size=(3, *shape)).astype(np.float32)
    return _x(shape, rng)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each case's model (random weights), input, Keras output and saved files."""
    rng = np.random.default_rng(7)
    out = {}
    tmp = tmp_path_factory.mktemp("keras")
    for case_id, build, shape, _ in CASES:
        model = _randomize(build(), rng)
        x = _input(case_id, shape, rng)
        expected = model.predict(x, verbose=0)
        paths = {}
        for ext in ("keras", "h5"):
            paths[ext] = str(tmp / f"{case_id}.{ext}")
            model.save(paths[ext])
        out[case_id] = (model, x, np.asarray(expected), paths)
    return out


@pytest.mark.parametrize("case_id", IDS)
def test_onnx_matches_keras(built, case_id):
    model, x, expected, _ = built[case_id]
    got = _ort(to_onnx(model), x)
    assert _rel_err(got, expected) <= 1e-4


@pytest.mark.parametrize("ext", ["keras", "h5"])
@pytest.mark.parametrize("case_id", IDS)
def test_saved_file_matches_memory(built, case_id, ext):
    model, x, expected, paths = built[case_id]
    from_file = _ort(to_onnx(paths[ext]), x)
    in_memory = _ort(to_onnx(model), x)
    np.testing.assert_array_equal(from_file, in_memory)
    assert _rel_err(from_file, expected) <= 1e-4


def _mlserve_cases():
    for case_id, _, _, needs in CASES:
        marks = () if needs is None else (pytest.mark.xfail(strict=True, reason=needs),)
        yield pytest.param(case_id, marks=marks, id=case_id)


@pytest.mark.parametrize("case_id", list(_mlserve_cases()))
def test_mlserve_predict_matches_keras(built, case_id, tmp_path):
    model, x, expected, paths = built[case_id]
    net = mlserve.convert(model)
    assert _rel_err(net.predict(x), expected) <= 1e-4
    for ext in ("keras", "h5"):
        assert _rel_err(mlserve.from_keras(paths[ext]).predict(x), expected) <= 1e-4
    mlserve.save(net, tmp_path / "m.mls")
    np.testing.assert_array_equal(mlserve.load(tmp_path / "m.mls").predict(x), net.predict(x))


def test_nhwc_input_and_flatten_order(built):
    """The imported conv model takes NHWC like Keras, one Transpose to NCHW, and Flatten
    restores Keras's NHWC order (else the Dense after it would read permuted values)."""
    model, x, expected, _ = built["conv_dense_batchnorm"]
    proto = to_onnx(model)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim][1:] == \
        [12, 12, 1]
    transposes = [n for n in proto.graph.node if n.op_type == "Transpose"]
    assert [list(n.attribute[0].ints) for n in transposes] == [[0, 3, 1, 2], [0, 2, 3, 1]]
    assert _rel_err(_ort(proto, x), expected) <= 1e-4


def test_keras2_style_h5(built, tmp_path):
    """A tf.keras 2 .h5: no InputLayer, the first layer's batch_input_shape, weight names
    with ':0', and no "module" keys."""
    import json
    import shutil

    _, x, expected, paths = built["dropout_flatten_reshape"]
    path = tmp_path / "k2.h5"
    shutil.copy(paths["h5"], path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        layers_ = config["config"]["layers"]
        first = layers_.pop(0)
        assert first["class_name"] == "InputLayer"
        layers_[0]["config"]["batch_input_shape"] = first["config"]["batch_shape"]
        for layer in layers_:
            layer.pop("build_config", None)
            layer.pop("module", None)
        config.pop("build_config", None)
        f.attrs["model_config"] = json.dumps(config)
    assert _rel_err(_ort(to_onnx(path), x), expected) <= 1e-4
    assert _rel_err(mlserve.from_keras(path).predict(x), expected) <= 1e-4


def test_unbuilt_model_refused():
    model = keras.Sequential([layers.Dense(3, name="d")])
    with pytest.raises(mlserve.ConvertError, match="has no input shape"):
        mlserve.convert(model)


def test_subclassed_model_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(mlserve.ConvertError, match="does not support"):
        mlserve.convert(net)


def test_dense_model_runs_in_c_today(built):
    _model, x, expected, paths = built["dropout_flatten_reshape"]
    net = mlserve.from_keras(paths["keras"])
    assert net.input_shape == ["N", 4, 5]
    assert net.predict(x).shape == expected.shape


# ------------------------------------------------------------------ refusals


def test_lambda_refused(tmp_path):
    model = _seq((4,), layers.Dense(3), layers.Lambda(lambda t: t * 2, name="double"))
    with pytest.raises(mlserve.ConvertError, match="'double' is a Lambda layer"):
        mlserve.convert(model)
    model.save(tmp_path / "lam.keras")
    with pytest.raises(mlserve.ConvertError, match="'double' is a Lambda layer"):
        mlserve.from_keras(tmp_path / "lam.keras")


def test_custom_layer_refused(tmp_path):
    @keras.saving.register_keras_serializable(package="t")
    class Twice(layers.Layer):
        def call(self, x):
            return x * 2

    model = _seq((4,), Twice(name="twice"))
    with pytest.raises(mlserve.ConvertError, match="'twice' .*custom layer"):
        mlserve.convert(model)


def test_unsupported_layer_named():
    model = _seq((5, 3), layers.LSTM(2, name="lstm_1"))
    with pytest.raises(mlserve.ConvertError, match=r"'lstm_1' \(LSTM\) is not supported"):
        mlserve.convert(model)


def test_channels_first_refused():
    model = _seq((3, 8, 8), layers.Conv2D(2, 3, data_format="channels_first", name="cf"))
    with pytest.raises(mlserve.ConvertError, match="'cf'.*channels_first"):
        mlserve.convert(model)


@pytest.mark.parametrize("content", [b"", b"not a model", b"PK\x03\x04broken zip",
                                     b"\x89HDF\r\n\x1a\nbroken"])
def test_garbage_files_refused(tmp_path, content):
    path = tmp_path / "bad.keras"
    path.write_bytes(content)
    with pytest.raises(mlserve.ConvertError):
        mlserve.from_keras(path)


def test_weights_of_the_wrong_shape_refused(built, tmp_path):
    _, _, _, paths = built["dense"]
    path = tmp_path / "bad.h5"
    with open(paths["h5"], "rb") as src:
        path.write_bytes(src.read())
    with h5py.File(path, "r+") as f:
        group = f["model_weights"]
        first = next(iter(group))
        name = group[first].attrs["weight_names"][0]
        name = name.decode() if isinstance(name, bytes) else name
        del group[first][name]
        group[first][name] = np.zeros((2, 2), np.float32)
    with pytest.raises(mlserve.ConvertError, match="kernel has shape"):
        mlserve.from_keras(path)


def test_weights_only_h5_refused(built, tmp_path):
    model = built["dense"][0]
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    with pytest.raises(mlserve.ConvertError, match="no model config"):
        mlserve.from_keras(path)


def _mutations(value, path=()):
    """Every (path, replacement) that breaks one field of a config: drop it or retype it."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*path, k), None
            yield (*path, k), "x"
            yield from _mutations(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*path, i), -3
            yield from _mutations(v, (*path, i))


def test_damaged_configs_never_crash(built, tmp_path):
    """Every field of a conv model's config.json dropped or retyped: a ConvertError or a
    model, never another exception."""
    import copy
    import json
    import zipfile

    _, _, _, paths = built["conv_dense_batchnorm"]
    with zipfile.ZipFile(paths["keras"]) as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    rng = np.random.default_rng(0)
    cases = list(_mutations(config))
    picked = [cases[i] for i in rng.choice(len(cases), size=min(150, len(cases)),
                                          replace=False)]
    for where, replacement in picked:
        damaged = copy.deepcopy(config)
        node = damaged
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = replacement
        path = tmp_path / "d.keras"
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members.items():
                z.writestr(name, json.dumps(damaged) if name == "config.json" else data)
        try:
            to_onnx(path)
        except mlserve.ConvertError:
            pass


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        mlserve.from_keras("/nonexistent/model.keras")
