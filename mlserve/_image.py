"""Image input: a model that takes encoded PNG/JPEG bytes (``mlserve.with_image_input``).

The decode is Pillow's, exactly as a user would write it::

    Image.open(BytesIO(b)).convert(mode).resize(size, Image.BILINEAR)

then float32, times ``scale``, ``(x - mean) / std`` per channel when given, in
``layout`` with a batch axis (a channel axis of 1 for mode "L"). The settings
and labels live in the .mls metadata (``"image"``), so the model saves, loads
and serves like any other; the weights are the wrapped model's, untouched.

Only PNG, JPEG, GIF, BMP and WebP are opened (Pillow's other plugins parse
formats nobody sends to a classifier, and EPS would start Ghostscript). An
image whose header claims more pixels than ``max_pixels`` is refused before
its pixels are decoded; not-an-image and truncated bytes are a ValueError.
"""
from __future__ import annotations

import io
import json
import math
import os

import numpy as np

from . import _core
from ._estimators import ESTIMATORS, _MLServeEstimator

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
MODES = ("L", "RGB")
LAYOUTS = ("NCHW", "NHWC")
#: the default pixel limit (Pillow's own MAX_IMAGE_PIXELS default), unless MLSERVE_MAX_IMAGE_PIXELS
DEFAULT_MAX_PIXELS = 89_478_485


def default_max_pixels() -> int:
    value = os.environ.get("MLSERVE_MAX_IMAGE_PIXELS")
    if value is None:
        return DEFAULT_MAX_PIXELS
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"MLSERVE_MAX_IMAGE_PIXELS must be an integer >= 1, got {value!r}")
    return n


def decode_image(data, settings: dict, max_pixels: int, what: str = "image") -> np.ndarray:
    """One encoded image as the float32 array (without the batch axis) ``settings`` describe."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(data, memoryview):
        data = data.tobytes()
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"{what} must be bytes (an encoded PNG/JPEG), got {type(data).__name__}")
    if not data:
        raise ValueError(f"{what} is empty")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ValueError(f"{what} has {w}x{h} = {w * h} pixels, more than the limit "
                                 f"of {max_pixels} (MLSERVE_MAX_IMAGE_PIXELS)")
            im = im.convert(settings["mode"]).resize(tuple(settings["size"]), Image.BILINEAR)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{what} is a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ValueError(f"{what} is not an image Pillow can read "
                         f"({', '.join(FORMATS)})") from None
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001  truncated/corrupt data: OSError, SyntaxError, zlib...
        raise ValueError(f"{what} is truncated or corrupt: {type(exc).__name__}: {exc}") from None
    x = np.asarray(im, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    x = x * np.float32(settings["scale"])
    if settings.get("mean") is not None:
        x = x - np.asarray(settings["mean"], dtype=np.float32)
    if settings.get("std") is not None:
        x = x / np.asarray(settings["std"], dtype=np.float32)
    if settings["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def decode_images(images, settings: dict, max_pixels: int) -> np.ndarray:
    """A batch of encoded images as one float32 array (batch axis first)."""
    if isinstance(images, (bytes, bytearray, memoryview)):
        images = [images]
    images = list(images)
    if not images:
        raise ValueError("no images: send at least one")
    return np.stack([decode_image(b, settings, max_pixels, f"image {i}")
                     for i, b in enumerate(images)])


def _per_channel(value, n: int, what: str):
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, n)
    if arr.size != n or not np.isfinite(arr).all():
        raise ValueError(f"{what} must be one finite number or {n} (one per channel), got {value!r}")
    if what == "std" and (arr == 0).any():
        raise ValueError("std must not contain 0")
    return arr.tolist()


def _settings(size, mode, scale, mean, std, layout, labels) -> dict:
    if mode not in MODES:
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    try:
        size = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    if len(size) != 2 or min(size) < 1 or max(size) > 16384:
        raise ValueError(f"size must be (width, height) of 1 to 16384 pixels, got {size!r}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    c = 1 if mode == "L" else 3
    if labels is not None:
        labels = [str(label) for label in labels]
    return {"size": list(size), "mode": mode, "scale": scale,
            "mean": _per_channel(mean, c, "mean"), "std": _per_channel(std, c, "std"),
            "layout": layout, "labels": labels}


def sample_shape(settings: dict) -> list:
    """The per-image shape the settings produce, without the batch axis."""
    w, h = settings["size"]
    c = 1 if settings["mode"] == "L" else 3
    return [c, h, w] if settings["layout"] == "NCHW" else [h, w, c]


class ImageModel(_MLServeEstimator):
    """A model over images: ``predict([png_or_jpeg_bytes, ...])`` (see mlserve.with_image_input).

    Attributes
    ----------
    model : the wrapped mlserve model (same weights, same C model)
    image_settings : dict
        size, mode, scale, mean, std, layout, labels.
    labels : list of str or None
    """

    def __init__(self):
        pass

    @property
    def _kind(self):
        return self.model._kind

    @property
    def _estimator_type(self):
        return getattr(self.model, "_estimator_type", "regressor")

    @classmethod
    def _from_core_model(cls, core) -> ImageModel:
        meta = json.loads(core.metadata)
        settings = meta["image"]
        inner_cls = ESTIMATORS.get(settings.get("estimator"))
        if inner_cls is None:
            raise ValueError(f"unknown wrapped estimator {settings.get('estimator')!r}")
        if hasattr(inner_cls, "_from_core_model"):
            inner = inner_cls._from_core_model(core)
        else:
            names = inner_cls._get_param_names()
            inner = inner_cls(**{k: v for k, v in (meta.get("params") or {}).items()
                                 if k in names})
            inner._install(core)
        est = cls()
        est.model = inner
        est._install(core)
        return est

    def _install_arrays(self, arrays: dict, meta: dict) -> None:
        self.image_settings = {k: v for k, v in meta["image"].items() if k != "estimator"}
        self.labels = self.image_settings.get("labels")

    def __setstate__(self, state):  # pickle: the wrapped model is rebuilt from the bytes
        data = dict(state).get("_model_mls_")
        if data is not None:
            self.__dict__.update(ImageModel._from_core_model(_core.loads(data)).__dict__)

    # -- decode
    def decode(self, images, max_pixels: int | None = None) -> np.ndarray:
        """The float32 batch the wrapped model takes, from encoded images (bytes or a list)."""
        if max_pixels is None:
            max_pixels = default_max_pixels()
        return decode_images(images, self.image_settings, max_pixels)

    def _inputs(self, X, max_pixels):
        if isinstance(X, (bytes, bytearray, memoryview)) or (
                isinstance(X, (list, tuple)) and X and isinstance(X[0], (bytes, bytearray,
                                                                         memoryview))):
            X = self.decode(X, max_pixels)
        x = np.asarray(X)
        if not hasattr(self.model, "input_shape"):  # a flat-feature model: one row per image
            x = x.reshape(x.shape[0], -1) if x.ndim > 2 else x
        return x

    def predict(self, X, *, max_pixels: int | None = None):
        """The wrapped model's predict on encoded images (a list of bytes), or on the
        decoded array itself."""
        return self.model.predict(self._inputs(X, max_pixels))

    def predict_proba(self, X, *, max_pixels: int | None = None):
        return self.model.predict_proba(self._inputs(X, max_pixels))

    def __getattr__(self, name):
        # input_names, output_names, input_shape, run, classes_ ... of the wrapped model
        model = self.__dict__.get("model")
        if name.startswith("_") or model is None:
            raise AttributeError(name)
        return getattr(model, name)


def with_image_input(model, size, mode="L", scale=1 / 255, mean=None, std=None,
                     layout="NCHW", labels=None) -> ImageModel:
    """A model whose ``predict([image_bytes, ...])`` takes encoded PNG/JPEG images.

    It equals ``model.predict`` on the array Pillow makes:
    ``Image.open(BytesIO(b)).convert(mode).resize(size, Image.BILINEAR)``, to
    float32, times ``scale``, then ``(x - mean) / std`` per channel when given,
    in ``layout`` with a batch axis (a channel axis of 1 for "L").

    Parameters
    ----------
    model : a fitted mlserve model (a NeuralNetwork from from_onnx / from_keras, or
        any model over the flattened pixels)
    size : (width, height)
    mode : "L" (grey) or "RGB"
    scale : float, default 1/255
    mean, std : one number or one per channel, optional
    layout : "NCHW" or "NHWC" (Keras models take "NHWC")
    labels : sequence of str, optional
        The class names, one per output of the model.

    Returns
    -------
    ImageModel, saved and loaded with mlserve.save / mlserve.load (settings and
    labels are in the file's metadata).
    """
    if isinstance(model, ImageModel):
        raise TypeError("the model already takes images")
    if not isinstance(model, _MLServeEstimator):
        raise TypeError(f"with_image_input takes an mlserve model, got {type(model).__name__}; "
                        "convert it first (mlserve.convert, from_onnx, from_keras)")
    settings = _settings(size, mode, scale, mean, std, layout, labels)
    shape = sample_shape(settings)
    core = model._fitted_model()
    meta = json.loads(core.metadata)
    in_shape = getattr(model, "input_shape", None)
    if in_shape is not None and getattr(model, "_source_kind", "onnx") == "onnx":
        if list(in_shape[1:]) != shape:
            raise ValueError(f"the images become arrays of shape {['N', *shape]} "
                             f"(size={tuple(settings['size'])}, mode={mode!r}, "
                             f"layout={layout!r}), but the model takes {list(in_shape)}")
    elif int(meta["n_features"]) != int(np.prod(shape)):
        raise ValueError(f"the images become {int(np.prod(shape))} values each, but the model "
                         f"takes {meta['n_features']} features")
    if labels is not None:
        n_out = int(meta.get("n_outputs") or 0)
        classes = getattr(model, "classes_", None)
        n = len(classes) if classes is not None else n_out
        if len(settings["labels"]) != n:
            raise ValueError(f"labels has {len(settings['labels'])} names, but the model has "
                             f"{n} outputs")
    meta["image"] = dict(settings, estimator=meta["estimator"])
    meta["estimator"] = ImageModel.__name__
    return ImageModel._from_core_model(_core.create(meta["kind"], core.arrays(),
                                                    json.dumps(meta)))


ESTIMATORS[ImageModel.__name__] = ImageModel  # mlserve.load finds it
