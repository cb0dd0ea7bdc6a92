"""mlserve.with_image_input: encoded PNG/JPEG in, the wrapped model's predict on Pillow's array."""
from __future__ import annotations

import io

import numpy as np
import pytest
from image_support import LABELS, digit_mlp, image_bytes, reference
from onnx import TensorProto, helper, numpy_helper

import mlserve

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@pytest.fixture(scope="module")
def digits():
    net, _ = digit_mlp()
    return net


def _rgb_mlp(h=12, w=10, out=4, seed=0):
    rng = np.random.default_rng(seed)
    d = 3 * h * w
    wt = (rng.normal(size=(d, out)) / np.sqrt(d)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"])]
    graph = helper.make_graph(
        nodes, "rgb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out])],
        [numpy_helper.from_array(wt, "w"),
         numpy_helper.from_array(rng.normal(size=out).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return mlserve.from_onnx(model)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("source_mode", ["L", "RGB"])
def test_digits_equal_predict_on_pillow_array(digits, fmt, source_mode):
    model = mlserve.with_image_input(digits, size=(28, 28), mode="L", layout="NHWC",
                                     labels=LABELS)
    images = [image_bytes(fmt, size=(40 + 7 * i, 30), mode=source_mode, seed=i)
              for i in range(3)]
    expected = digits.predict(np.concatenate(
        [reference(b, (28, 28), "L", layout="NHWC") for b in images]))
    got = model.predict(images)
    assert got.shape == (3, 10)
    np.testing.assert_array_equal(got, expected)
    one = digits.predict(reference(images[0], (28, 28), "L", layout="NHWC"))
    np.testing.assert_array_equal(model.predict(images[0]), one)


def test_keras_model_on_the_same_array_agrees(digits):
    net, keras_model = digit_mlp()
    model = mlserve.with_image_input(net, size=(28, 28), mode="L", layout="NHWC")
    b = image_bytes("PNG", size=(28, 28), mode="L")
    x = reference(b, (28, 28), "L", layout="NHWC")
    np.testing.assert_allclose(model.predict([b]), keras_model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-6)


def test_rgb_mean_std_nchw_non_square():
    net = _rgb_mlp(h=12, w=10)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    model = mlserve.with_image_input(net, size=(10, 12), mode="RGB", mean=mean, std=std,
                                     layout="NCHW")
    b = image_bytes("JPEG", size=(64, 48), mode="RGB")
    x = reference(b, (10, 12), "RGB", mean=mean, std=std, layout="NCHW")
    assert x.shape == (1, 3, 12, 10)
    np.testing.assert_array_equal(model.predict([b]), net.predict(x))
    # a scalar mean/std is the same for every channel
    one = mlserve.with_image_input(net, size=(10, 12), mode="RGB", mean=0.5, std=0.25,
                                   scale=1.0)
    np.testing.assert_array_equal(
        one.predict([b]), net.predict(reference(b, (10, 12), "RGB", 1.0, [0.5] * 3, [0.25] * 3)))


def test_flat_feature_model_takes_images():
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(60, 64))
    y = rng.integers(0, 2, size=60)
    clf = mlserve.LogisticRegression().fit(X, y)
    model = mlserve.with_image_input(clf, size=(8, 8), labels=["no", "yes"])
    b = image_bytes("PNG", size=(8, 8), mode="L")
    x = reference(b, (8, 8), "L").reshape(1, -1)
    np.testing.assert_array_equal(model.predict([b]), clf.predict(x))
    np.testing.assert_array_equal(model.predict_proba([b]), clf.predict_proba(x))


def test_save_load_round_trip(digits, tmp_path):
    model = mlserve.with_image_input(digits, size=(28, 28), mode="L", layout="NHWC",
                                     labels=LABELS)
    mlserve.save(model, tmp_path / "digits.mls")
    loaded = mlserve.load(tmp_path / "digits.mls")
    assert isinstance(loaded, mlserve.ImageModel)
    assert loaded.labels == LABELS
    assert loaded.image_settings == model.image_settings
    assert loaded.metadata["image"]["layout"] == "NHWC"
    assert loaded.input_shape == ["N", 28, 28, 1]
    images = [image_bytes("PNG", seed=s) for s in range(2)]
    np.testing.assert_array_equal(loaded.predict(images), model.predict(images))
    # the decoded array still works, as for the wrapped model
    x = reference(images[0], (28, 28), "L", layout="NHWC")
    np.testing.assert_array_equal(loaded.predict(x), digits.predict(x))


def test_pickle_round_trip(digits):
    import pickle

    model = mlserve.with_image_input(digits, size=(28, 28), mode="L", layout="NHWC",
                                     labels=LABELS)
    again = pickle.loads(pickle.dumps(model))
    assert again.labels == LABELS and again.input_shape == ["N", 28, 28, 1]
    images = [image_bytes("JPEG", seed=4)]
    np.testing.assert_array_equal(again.predict(images), model.predict(images))


# ------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def digit_images(digits):
    return mlserve.with_image_input(digits, size=(28, 28), mode="L", layout="NHWC")


def test_not_an_image(digit_images):
    with pytest.raises(ValueError, match="image 0 is not an image Pillow can read"):
        digit_images.predict([b"hello, not an image"])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(digit_images, fmt):
    b = image_bytes(fmt, size=(64, 64))
    with pytest.raises(ValueError, match="image 1 is truncated or corrupt"):
        digit_images.predict([image_bytes("PNG"), b[: len(b) // 2]])


def test_empty_and_wrong_types(digit_images):
    with pytest.raises(ValueError, match="image 0 is empty"):
        digit_images.predict([b""])
    with pytest.raises(ValueError, match="no images"):
        digit_images.decode([])
    with pytest.raises(TypeError, match="image 1 must be bytes"):
        digit_images.decode([image_bytes(), "a string"])


def test_other_formats_refused(digit_images):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PPM")
    with pytest.raises(ValueError, match="not an image Pillow can read"):
        digit_images.predict([buffer.getvalue()])


def test_pixel_limit(digit_images, monkeypatch):
    b = image_bytes("PNG", size=(50, 40))
    with pytest.raises(ValueError, match=r"image 0 has 50x40 = 2000 pixels, more than the "
                                         r"limit of 1999 \(MLSERVE_MAX_IMAGE_PIXELS\)"):
        digit_images.predict([b], max_pixels=1999)
    assert digit_images.predict([b], max_pixels=2000).shape == (1, 10)
    monkeypatch.setenv("MLSERVE_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(ValueError, match="limit of 100"):
        digit_images.predict([b])
    monkeypatch.setenv("MLSERVE_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="MLSERVE_MAX_IMAGE_PIXELS must be an integer"):
        digit_images.predict([b])


def test_settings_checked(digits):
    with pytest.raises(ValueError, match=r"shape \['N', 1, 28, 28\].*takes \['N', 28, 28, 1\]"):
        mlserve.with_image_input(digits, size=(28, 28), mode="L", layout="NCHW")
    with pytest.raises(ValueError, match=r"takes \['N', 28, 28, 1\]"):
        mlserve.with_image_input(digits, size=(28, 27), mode="L", layout="NHWC")
    with pytest.raises(ValueError, match="labels has 3 names, but the model has 10 outputs"):
        mlserve.with_image_input(digits, size=(28, 28), layout="NHWC", labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="mode must be 'L' or 'RGB'"):
        mlserve.with_image_input(digits, size=(28, 28), mode="CMYK")
    with pytest.raises(ValueError, match="layout must be"):
        mlserve.with_image_input(digits, size=(28, 28), layout="HWC")
    with pytest.raises(ValueError, match="mean must be one finite number or 1"):
        mlserve.with_image_input(digits, size=(28, 28), layout="NHWC", mean=[0.1, 0.2])
    with pytest.raises(ValueError, match="std must not contain 0"):
        mlserve.with_image_input(digits, size=(28, 28), layout="NHWC", std=0)
    with pytest.raises(TypeError, match="takes an mlserve model"):
        mlserve.with_image_input(object(), size=(28, 28))
    model = mlserve.with_image_input(digits, size=(28, 28), layout="NHWC")
    with pytest.raises(TypeError, match="already takes images"):
        mlserve.with_image_input(model, size=(28, 28))
