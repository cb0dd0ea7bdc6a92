"""Serving neural networks and image models: N-D tensors over V2, V1 and /predict; images as
multipart uploads, raw image bodies, TF Serving b64 instances and V2 BYTES tensors; labels
and probabilities in the answers; bad images are a 400. In-process and over real gunicorn."""
from __future__ import annotations

import base64
import io
import json
import struct

import numpy as np
import pytest
import requests
from flask import Flask
from image_support import LABELS, digit_mlp, image_bytes, reference
from serving_support import Server

import mlserve
from mlserve.serving import blueprint
from mlserve.store import ModelStore

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@pytest.fixture(scope="module")
def nets():
    net, _ = digit_mlp()
    image = mlserve.with_image_input(net, size=(28, 28), mode="L", layout="NHWC", labels=LABELS)
    return net, image


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, nets):
    net, image = nets
    root = tmp_path_factory.mktemp("store") / "models"
    store = ModelStore(root)
    store.publish("net", net, alias="production")
    store.publish("digits", image, alias="production")
    store.publish("reg", mlserve.LinearRegression().fit(np.eye(3), [1.0, 2.0, 3.0]),
                  alias="production")
    return root


def make_client(store_dir, **config):
    app = Flask("host")
    app.config.update({"MLSERVE_RELOAD_INTERVAL": 0, **config})
    app.register_blueprint(blueprint(ModelStore(store_dir)), url_prefix="/ml")
    return app.test_client()


@pytest.fixture(scope="module")
def client(store_dir):
    return make_client(store_dir)


@pytest.fixture(scope="module")
def pictures():
    return [image_bytes("PNG", size=(40, 30), mode="RGB", seed=1),
            image_bytes("JPEG", size=(28, 28), mode="L", seed=2),
            image_bytes("PNG", size=(50, 60), mode="L", seed=3)]


def _expected(nets, blobs):
    net, _ = nets
    x = np.concatenate([reference(b, (28, 28), "L", layout="NHWC") for b in blobs])
    out = net.predict(x).astype(np.float64)
    return out


def _assert_labels(answer, expected):
    assert len(answer) == len(expected)
    for entry, row in zip(answer, expected):
        assert entry["label"] == LABELS[int(np.argmax(row))]
        assert entry["probability"] == pytest.approx(float(row.max()), rel=1e-5)


def assert_error(response, status, *fragments):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    for fragment in fragments:
        assert fragment in response.json["error"], response.json["error"]


# --------------------------------------------------------- N-D tensors of a graph model


def test_v2_nd_tensor(client, nets):
    net, _ = nets
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype(np.float32)
    body = {"inputs": [{"name": net.input_names[0], "datatype": "FP32", "shape": [2, 28, 28, 1],
                        "data": x.ravel().tolist()}]}
    r = client.post("/ml/v2/models/net/infer", json=body)
    assert r.status_code == 200, r.json
    out = r.json["outputs"][0]
    assert out["shape"] == [2, 10] and out["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(out["data"], (2, 10)), net.predict(x), rtol=1e-6)
    meta = client.get("/ml/v2/models/net").json
    assert meta["inputs"][0]["shape"] == [-1, 28, 28, 1]
    assert meta["inputs"][0]["datatype"] == "FP32"
    assert meta["outputs"][0]["shape"] == [-1, 10]


def test_v2_binary_nd_tensor(client, nets):
    net, _ = nets
    x = np.random.default_rng(1).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 28, 28, 1],
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    r = client.post("/ml/v2/models/net/infer", data=header + x.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(header)),
                             "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.get_data()
    np.testing.assert_allclose(np.reshape(r.json["outputs"][0]["data"], (3, 10)),
                               net.predict(x), rtol=1e-6)


def test_v1_and_predict_nd(client, nets):
    net, _ = nets
    x = np.random.default_rng(2).uniform(size=(2, 28, 28, 1)).astype(np.float32)
    r = client.post("/ml/v1/models/net:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.json
    np.testing.assert_allclose(r.json["predictions"], net.predict(x), rtol=1e-6)
    r = client.post("/ml/predict/net", json={"instances": x.tolist()})
    np.testing.assert_allclose(r.json["predictions"], net.predict(x), rtol=1e-6)
    buffer = io.BytesIO()
    np.save(buffer, x)
    r = client.post("/ml/predict/net", data=buffer.getvalue(),
                    headers={"Content-Type": "application/x-npy"})
    assert r.status_code == 200, r.json
    np.testing.assert_allclose(r.json["predictions"], net.predict(x), rtol=1e-6)
    # flat rows of 784 values are the same tensor
    r = client.post("/ml/predict/net", json={"instances": x.reshape(2, -1).tolist()})
    np.testing.assert_allclose(r.json["predictions"], net.predict(x), rtol=1e-6)


def test_wrong_tensor_shape(client):
    r = client.post("/ml/predict/net", json={"instances": np.zeros((2, 28, 27, 1)).tolist()})
    assert_error(r, 400, "must have shape ['N', 28, 28, 1]", "got [2, 28, 27, 1]")
    r = client.post("/ml/v2/models/net/infer", json={"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 5], "data": [0, 0, 0, 0, 0]}]})
    assert_error(r, 400, "expected 784 features, got 5")


def test_converted_mlp_regressor_is_served(tmp_path):
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ [1.0, -1.0, 0.5]
    sk = MLPRegressor(hidden_layer_sizes=(5,), max_iter=50, random_state=0)
    with pytest.warns(Warning):  # not converged in 50 iterations: fine for a parity check
        sk.fit(X, y)
    net = mlserve.convert(sk)
    store = ModelStore(tmp_path / "m")
    store.publish("mlp", net, alias="production")
    client = make_client(tmp_path / "m")
    r = client.post("/ml/predict/mlp", json={"instances": X[:4].tolist()})
    assert r.status_code == 200, r.json
    np.testing.assert_allclose(r.json["predictions"], net.predict(X[:4]), rtol=1e-6)
    r = client.post("/ml/v2/models/mlp/infer", json={"inputs": [
        {"name": "input", "datatype": "FP64", "shape": [2, 3], "data": X[:2].ravel().tolist()}]})
    assert r.status_code == 200 and r.json["outputs"][0]["shape"] == [2]


# ----------------------------------------------------------------- image uploads


def test_multipart_one_and_several(client, nets, pictures):
    r = client.post("/ml/predict/digits", data={"file": (io.BytesIO(pictures[0]), "a.png")},
                    content_type="multipart/form-data")
    assert r.status_code == 200, r.json
    _assert_labels(r.json["predictions"], _expected(nets, pictures[:1]))
    files = [(io.BytesIO(b), f"{i}.img") for i, b in enumerate(pictures)]
    r = client.post("/ml/predict/digits", data={"file": files, "return": "topk", "k": "3"},
                    content_type="multipart/form-data")
    assert r.status_code == 200, r.json
    expected = _expected(nets, pictures)
    assert len(r.json["predictions"]) == 3
    for top, row in zip(r.json["predictions"], expected):
        order = np.argsort(-row)[:3]
        assert [t["label"] for t in top] == [LABELS[i] for i in order]
        np.testing.assert_allclose([t["probability"] for t in top], row[order], rtol=1e-5)


@pytest.mark.parametrize("index, mimetype", [(0, "image/png"), (1, "image/jpeg")])
def test_raw_image_body(client, nets, pictures, index, mimetype):
    r = client.post("/ml/predict/digits?return=topk&k=5", data=pictures[index],
                    headers={"Content-Type": mimetype})
    assert r.status_code == 200, r.json
    assert r.json["model"] == "digits"
    top = r.json["predictions"][0]
    row = _expected(nets, [pictures[index]])[0]
    assert len(top) == 5 and top[0]["label"] == LABELS[int(np.argmax(row))]
    r = client.post("/ml/predict/digits?return=proba", data=pictures[index],
                    headers={"Content-Type": mimetype})
    assert r.json["labels"] == LABELS
    np.testing.assert_allclose(r.json["probabilities"][0], row, rtol=1e-5)


def test_b64_instances(client, nets, pictures):
    instances = [{"b64": base64.b64encode(b).decode()} for b in pictures]
    r = client.post("/ml/predict/digits", json={"instances": instances})
    assert r.status_code == 200, r.json
    _assert_labels(r.json["predictions"], _expected(nets, pictures))
    r = client.post("/ml/v1/models/digits:predict", json={"instances": instances})
    assert r.status_code == 200, r.json
    _assert_labels(r.json["predictions"], _expected(nets, pictures))
    r = client.post("/ml/v1/models/digits:predict",
                    json={"instances": instances[:1], "return": "predict"})
    np.testing.assert_allclose(r.json["predictions"], _expected(nets, pictures[:1]), rtol=1e-6)


def test_image_model_still_takes_tensors(client, nets):
    net, _ = nets
    x = np.random.default_rng(3).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    r = client.post("/ml/predict/digits", json={"instances": x.tolist()})
    assert r.status_code == 200, r.json
    np.testing.assert_allclose(r.json["predictions"], net.predict(x), rtol=1e-6)


def test_v2_bytes_tensor_json_and_binary(client, nets, pictures):
    expected = _expected(nets, pictures)
    body = {"id": "r1", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [3],
                                    "data": [base64.b64encode(b).decode() for b in pictures]}]}
    r = client.post("/ml/v2/models/digits/infer", json=body)
    assert r.status_code == 200, r.json
    outs = {o["name"]: o for o in r.json["outputs"]}
    assert r.json["id"] == "r1"
    np.testing.assert_allclose(np.reshape(outs["predict"]["data"], (3, 10)), expected, rtol=1e-6)
    assert outs["label"]["datatype"] == "BYTES"
    assert outs["label"]["data"] == [LABELS[int(i)] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(outs["probability"]["data"], expected.max(axis=1), rtol=1e-5)
    raw = b"".join(struct.pack("<I", len(b)) + b for b in pictures)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3],
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "label"}]}).encode()
    r = client.post("/ml/v2/models/digits/infer", data=header + raw,
                    headers={"Inference-Header-Content-Length": str(len(header)),
                             "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.get_data()
    assert [o["name"] for o in r.json["outputs"]] == ["label"]
    assert r.json["outputs"][0]["data"] == [LABELS[int(i)] for i in expected.argmax(axis=1)]
    meta = client.get("/ml/v2/models/digits").json
    assert meta["inputs"][0]["parameters"] == {"image": "L 28x28 NHWC"}


def test_image_classifier_over_flat_pixels(tmp_path):
    """A scikit-learn-style classifier over 8x8 grey pixels: labels from its classes."""
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(80, 64))
    y = np.where(X[:, :32].mean(axis=1) > 0.5, "bright", "dark")
    clf = mlserve.LogisticRegression().fit(X, y)
    model = mlserve.with_image_input(clf, size=(8, 8))
    store = ModelStore(tmp_path / "m")
    store.publish("tiles", model, alias="production")
    client = make_client(tmp_path / "m")
    png = image_bytes("PNG", size=(16, 16), mode="L", seed=5)
    r = client.post("/ml/predict/tiles?return=topk&k=2", data=png,
                    headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.json
    proba = clf.predict_proba(reference(png, (8, 8), "L").reshape(1, -1))[0]
    top = r.json["predictions"][0]
    assert [t["label"] for t in top] == [clf.classes_[i] for i in np.argsort(-proba)]
    np.testing.assert_allclose([t["probability"] for t in top], np.sort(proba)[::-1], rtol=1e-9)


# -------------------------------------------------------------------- bad images


def _multipart(client, blobs, **extra):
    files = [(io.BytesIO(b), f"{i}.png") for i, b in enumerate(blobs)]
    return client.post("/ml/predict/digits", data={"file": files, **extra},
                       content_type="multipart/form-data")


def test_bad_images_are_400(client, pictures):
    assert_error(_multipart(client, [b"not an image at all"]), 400,
                 "image 0 is not an image Pillow can read")
    assert_error(_multipart(client, [pictures[0], pictures[2][:200]]), 400,
                 "image 1 is truncated or corrupt")
    assert_error(client.post("/ml/predict/digits", data=b"",
                             headers={"Content-Type": "image/png"}), 400, "image 0 is empty")
    r = client.post("/ml/predict/digits", data={"other": "x"}, content_type="multipart/form-data")
    assert_error(r, 400, "has no 'file' field")
    r = client.post("/ml/predict/digits", json={"instances": [{"b64": "@@not base64@@"}]})
    assert_error(r, 400, "instance 0 is not valid base64")
    r = client.post("/ml/predict/digits", json={"instances": [{"b64": "aGk=", "x": 1}]})
    assert_error(r, 400, 'instance 0 must be {"b64"')
    assert_error(_multipart(client, pictures[:1], **{"return": "everything"}), 400,
                 "'return' must be one of")
    assert_error(_multipart(client, pictures[:1], k="0"), 400, "'k' must be an integer")
    r = client.post("/ml/predict/reg", data=pictures[0], headers={"Content-Type": "image/png"})
    assert_error(r, 400, "model 'reg' does not take images")
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["aGk="]}]}
    assert_error(client.post("/ml/v2/models/digits/infer", json=body), 400,
                 "shape [2] needs 2 images, got 1")
    body["inputs"][0]["shape"] = [1]
    assert_error(client.post("/ml/v2/models/digits/infer", json=body), 400,
                 "image 0 is not an image")


def test_pixel_limit_from_config(store_dir, pictures):
    small = make_client(store_dir, MLSERVE_MAX_IMAGE_PIXELS=1000)
    r = small.post("/ml/predict/digits", data=pictures[0], headers={"Content-Type": "image/png"})
    assert_error(r, 400, "has 40x30 = 1200 pixels, more than the limit of 1000",
                 "MLSERVE_MAX_IMAGE_PIXELS")
    r = small.post("/ml/predict/digits", data=pictures[1], headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200  # 28x28 = 784 pixels


def test_decompression_bomb_png(store_dir):
    """A 6000x6000 PNG of zeros is a few kB; its header alone is refused."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (6000, 6000)).save(buffer, format="PNG")
    bomb = buffer.getvalue()
    assert len(bomb) < 100_000
    small = make_client(store_dir, MLSERVE_MAX_IMAGE_PIXELS=10_000_000)
    r = small.post("/ml/predict/digits", data=bomb, headers={"Content-Type": "image/png"})
    assert_error(r, 400, "6000x6000 = 36000000 pixels, more than the limit of 10000000")


# ------------------------------------------------------------- a real gunicorn server


@pytest.fixture(scope="module")
def server(store_dir):
    srv = Server(store_dir, "--workers", "1", "--max-image-pixels", "5000")
    yield srv
    srv.stop()


def test_over_http(server, nets, pictures):
    expected = _expected(nets, pictures[1:2])
    r = requests.post(f"{server.url}/predict/digits", files={"file": ("d.jpg", pictures[1])},
                      params={"return": "topk", "k": 2}, timeout=30)
    assert r.status_code == 200, r.text
    top = r.json()["predictions"][0]
    assert [t["label"] for t in top] == [LABELS[i] for i in np.argsort(-expected[0])[:2]]
    r = requests.post(f"{server.url}/predict/digits", data=pictures[1],
                      headers={"Content-Type": "image/jpeg"}, timeout=30)
    _assert_labels(r.json()["predictions"], expected)
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "data": [base64.b64encode(pictures[1]).decode()]}]}
    r = requests.post(f"{server.url}/v2/models/digits/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][1]["data"] == [LABELS[int(np.argmax(expected[0]))]]
    r = requests.post(f"{server.url}/v1/models/digits:predict",
                      json={"instances": [{"b64": base64.b64encode(pictures[1]).decode()}]},
                      timeout=30)
    _assert_labels(r.json()["predictions"], expected)


def test_bad_images_over_http(server, pictures):
    r = requests.post(f"{server.url}/predict/digits", files={"file": ("a.png", pictures[0])},
                      timeout=30)  # 40x30 = 1200 pixels: within --max-image-pixels 5000
    assert r.status_code == 200
    r = requests.post(f"{server.url}/predict/digits", files={"file": ("c.png", pictures[2])},
                      timeout=30)  # 50x60 = 3000
    assert r.status_code == 200
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (100, 100)).save(buffer, format="PNG")
    r = requests.post(f"{server.url}/predict/digits", data=buffer.getvalue(),
                      headers={"Content-Type": "image/png"}, timeout=30)
    assert r.status_code == 400 and "more than the limit of 5000" in r.json()["error"]
    for bad in (b"garbage", pictures[0][:100]):
        r = requests.post(f"{server.url}/predict/digits", files={"file": ("x.png", bad)},
                          timeout=30)
        assert r.status_code == 400, r.text
        assert "image 0" in r.json()["error"]
    x = np.zeros((1, 28, 28, 1), np.float32)
    r = requests.post(f"{server.url}/v2/models/net/infer", json={"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": x.ravel().tolist()}]},
        timeout=30)
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 10]
