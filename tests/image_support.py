"""Helpers for the image tests: a 28x28 digit MLP (Keras -> mlserve) and Pillow-made images."""
from __future__ import annotations

import io
import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")

LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_mlp(seed: int = 0):
    """A Keras Flatten + Dense MLP over (28, 28, 1) (runs in main's C runtime), and the model."""
    import keras
    from keras import layers

    import mlserve

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(),
                              layers.Dense(32, activation="relu"),
                              layers.Dense(10, activation="softmax")])
    return mlserve.convert(model), model


def image_bytes(fmt: str = "PNG", size=(40, 30), mode: str = "RGB", seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    im = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode)
    buffer = io.BytesIO()
    im.save(buffer, format=fmt)
    return buffer.getvalue()


def reference(data: bytes, size, mode, scale=1 / 255, mean=None, std=None, layout="NCHW"):
    """The issue's pipeline, written out with Pillow and NumPy (one image, batch axis added)."""
    from PIL import Image

    im = Image.open(io.BytesIO(data)).convert(mode).resize(size, Image.BILINEAR)
    x = np.asarray(im, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    x = x * np.float32(scale)
    if mean is not None:
        x = x - np.asarray(mean, dtype=np.float32)
    if std is not None:
        x = x / np.asarray(std, dtype=np.float32)
    if layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return x[None]
