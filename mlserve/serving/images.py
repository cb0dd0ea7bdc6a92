"""Encoded images in requests for image models (``mlserve.with_image_input``).

What a client may send to an image model, besides the usual numeric tensors:

- ``POST /predict/<name>`` as ``multipart/form-data`` (field ``file``, one or
  several) or a raw ``image/png`` / ``image/jpeg`` body; options ``return`` and
  ``k`` as query arguments or form fields;
- ``{"instances": [{"b64": "..."}, ...]}`` (TF Serving's binary convention) to
  ``/v1/models/<name>:predict`` or ``/predict/<name>``;
- a V2 ``BYTES`` input tensor of encoded images (base64 strings in JSON, raw
  bytes in the binary extension).

The images are decoded here, in the request thread (Pillow, with the
model's settings and the MLSERVE_MAX_IMAGE_PIXELS limit), into the rows the
model takes; then they go the one predict path (batcher included). Every bad
image is a 400 naming it, never a 500.

Answers carry the label names and probabilities: by default each image's best
label and its probability; ``"return": "topk"`` (with ``"k"``, default 5) the
``k`` best; ``"return": "proba"`` every probability; ``"return": "predict"``
the model's raw outputs. A network's outputs are used as probabilities when
each row already is a distribution (a softmax head), else softmax is applied.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlserve.serving.errors import BadRequest
from mlserve.serving.runtime import PREDICT, PREDICT_PROBA, LoadedModel

__all__ = ["UPLOAD_MIMETYPES", "answer", "b64_images", "describe", "is_image_model",
           "multipart_images", "options", "outputs_for", "to_rows", "v2_images"]

MULTIPART = "multipart/form-data"
UPLOAD_MIMETYPES = (MULTIPART, "image/png", "image/jpeg")
RETURNS = ("label", "topk", "proba", "predict")
DEFAULT_K = 5
MAX_K = 1000


def is_image_model(loaded: LoadedModel) -> bool:
    return isinstance(loaded.metadata.get("image"), Mapping)


def require_image_model(loaded: LoadedModel) -> Mapping[str, Any]:
    settings = loaded.metadata.get("image")
    if not isinstance(settings, Mapping):
        raise BadRequest(
            f"model {loaded.name!r} does not take images; wrap it with "
            "mlserve.with_image_input before publishing, or send numbers"
        )
    return settings


def describe(loaded: LoadedModel) -> str:
    """The model's image input in one V2 parameter string, e.g. 'L 28x28 NHWC'."""
    s = loaded.metadata["image"]
    return f"{s['mode']} {s['size'][0]}x{s['size'][1]} {s['layout']}"


def to_rows(blobs: list, loaded: LoadedModel, max_pixels: int) -> np.ndarray:
    """Encoded images -> the model's rows (one per image), or a 400 naming the bad image."""
    from mlserve._image import decode_images

    settings = require_image_model(loaded)
    try:
        batch = decode_images(blobs, settings, max_pixels)
    except (ValueError, TypeError) as exc:
        raise BadRequest(str(exc)) from None
    return batch.reshape(batch.shape[0], -1)


def multipart_images(body: bytes, content_type: str) -> tuple[list[bytes], dict[str, str]]:
    """The ``file`` parts and the other form fields of a multipart/form-data body."""
    from werkzeug.formparser import parse_form_data

    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    try:
        # the body is in memory already (MLSERVE_MAX_BODY_BYTES): parts stay in memory too
        _, form, files = parse_form_data(environ, stream_factory=_in_memory, silent=False)
    except Exception as exc:  # noqa: BLE001  werkzeug's parse errors (ValueError, 413...)
        raise BadRequest(f"malformed multipart/form-data body: {exc}") from None
    blobs = [part.read() for part in files.getlist("file")]
    if not blobs:
        raise BadRequest(
            "the multipart/form-data body has no 'file' field; send each image as a "
            "part named 'file'"
        )
    return blobs, {k: form[k] for k in form}


def _in_memory(*_: Any, **__: Any) -> io.BytesIO:
    return io.BytesIO()


def b64_images(instances: Any) -> list[bytes] | None:
    """TF Serving's ``[{"b64": "..."}, ...]`` as bytes, or None if ``instances`` is not that."""
    if not isinstance(instances, list) or not instances:
        return None
    if not all(isinstance(i, dict) and "b64" in i for i in instances):
        if any(isinstance(i, dict) and "b64" in i for i in instances):
            raise BadRequest('every instance must be {"b64": "<base64 image>"}')
        return None
    blobs = []
    for n, instance in enumerate(instances):
        if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
            raise BadRequest(f'instance {n} must be {{"b64": "<base64 image>"}} only')
        blobs.append(_b64(instance["b64"], f"instance {n}"))
    return blobs


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:  # the URL-safe alphabet, as some clients send it
            return base64.b64decode(text, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{what} is not valid base64") from None


def v2_images(header: Mapping[str, Any], binary: Any) -> tuple[str, list[bytes]] | None:
    """The (name, encoded images) of a V2 request's one BYTES input, or None without one."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not any(
        isinstance(t, dict) and t.get("datatype") == "BYTES" for t in inputs
    ):
        return None
    if len(inputs) != 1:
        raise BadRequest("an image model takes one input: a BYTES tensor of encoded images")
    tensor = inputs[0]
    name = str(tensor.get("name"))
    shape = tensor.get("shape")
    if isinstance(shape, np.ndarray):
        shape = shape.tolist()
    if not isinstance(shape, list) or not all(isinstance(s, (int, float)) and s >= 0 and
                                              float(s).is_integer() for s in shape):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of non-negative integers")
    shape = [int(s) for s in shape]
    count = math.prod(shape)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"input {name!r}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or size != len(binary):
            raise BadRequest(f"input {name!r}: binary_data_size must be the {len(binary)} bytes "
                             "after the JSON header")
        blobs = _length_prefixed(bytes(binary), name)
    else:
        data = tensor.get("data")
        if isinstance(data, np.ndarray) or not isinstance(data, list) or not all(
                isinstance(d, str) for d in data):
            raise BadRequest(f"input {name!r}: BYTES data must be a list of base64 strings "
                             "(one encoded image each)")
        blobs = [_b64(d, f"input {name!r} element {i}") for i, d in enumerate(data)]
    if len(blobs) != count:
        raise BadRequest(f"input {name!r}: shape {shape} needs {count} images, got {len(blobs)}")
    return name, blobs


def _length_prefixed(raw: bytes, name: str) -> list[bytes]:
    """V2 binary BYTES elements: each a 4-byte little-endian length, then the bytes."""
    blobs, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"input {name!r}: binary BYTES data ends inside a length prefix")
        (n,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + n > len(raw):
            raise BadRequest(f"input {name!r}: a binary BYTES element of {n} bytes runs past "
                             "the end of the body")
        blobs.append(raw[offset:offset + n])
        offset += n
    return blobs


def options(values: Mapping[str, Any]) -> tuple[str, int]:
    """The ``return`` and ``k`` options (from query arguments, form fields or JSON)."""
    ret = values.get("return", "label")
    if ret not in RETURNS:
        raise BadRequest(f"'return' must be one of {', '.join(map(repr, RETURNS))} for an "
                         f"image model, got {ret!r}")
    k = values.get("k", DEFAULT_K)
    if isinstance(k, str) and k.strip().isdigit():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise BadRequest(f"'k' must be an integer from 1 to {MAX_K}, got {k!r}")
    return ret, k


def outputs_for(loaded: LoadedModel, ret: str) -> tuple[str, ...]:
    """The model outputs an image answer needs."""
    if ret == "predict" or not loaded.is_classifier:
        return (PREDICT,)
    return (PREDICT_PROBA,)


def _labels(loaded: LoadedModel, n: int) -> list:
    labels = loaded.metadata["image"].get("labels")
    if labels is None and loaded.is_classifier:
        labels = np.asarray(loaded.model.classes_).tolist()
    if labels is None:
        return list(range(n))
    return list(labels)


def probabilities(out: np.ndarray) -> np.ndarray:
    """Rows that are already distributions as they are, else their softmax."""
    out = np.asarray(out, dtype=np.float64).reshape(out.shape[0], -1)
    sums = out.sum(axis=1)
    if out.size and (out >= 0).all() and np.allclose(sums, 1.0, atol=1e-3):
        return out
    shifted = out - out.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def answer(loaded: LoadedModel, results: Mapping[str, np.ndarray], ret: str, k: int,
           key: str = "predictions") -> dict[str, Any]:
    """The JSON answer for a batch of images (see the module docstring)."""
    if ret == "predict":
        return {key: results[PREDICT]}
    out = results[PREDICT_PROBA] if PREDICT_PROBA in results else results[PREDICT]
    proba = probabilities(out)
    labels = _labels(loaded, proba.shape[1])
    if len(labels) != proba.shape[1]:
        raise BadRequest(f"model {loaded.name!r} has {proba.shape[1]} outputs but "
                         f"{len(labels)} labels")
    if ret == "proba":
        return {"labels": labels, "probabilities": proba}
    if ret == "label":
        best = proba.argmax(axis=1)
        return {key: [{"label": labels[int(i)], "probability": float(row[int(i)])}
                      for i, row in zip(best, proba)]}
    k = min(k, proba.shape[1])
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return {key: [[{"label": labels[int(i)], "probability": float(row[int(i)])} for i in idx]
                  for idx, row in zip(order, proba)]}


def v2_request(body: bytes, header_length: str | None) -> tuple[dict, str, list[bytes]] | None:
    """(JSON header, input name, encoded images) of a V2 body with a BYTES input, else None."""
    from mlserve.serving.codecs import decode_json, split_v2_body

    body, binary = split_v2_body(body, header_length)
    header = decode_json(body)
    found = v2_images(header, binary)
    if found is None:
        return None
    return header, found[0], found[1]


def v2_results(loaded: LoadedModel, results: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The V2 outputs of an image answer: the model's own, and each image's best label and
    its probability ("label", BYTES; "probability", FP32)."""
    out = results[PREDICT_PROBA] if PREDICT_PROBA in results else results[PREDICT]
    proba = probabilities(out)
    labels = _labels(loaded, proba.shape[1])
    best = proba.argmax(axis=1)
    extra = {
        "label": np.asarray([str(labels[int(i)]) for i in best], dtype=object),
        "probability": proba[np.arange(proba.shape[0]), best].astype(np.float32),
    }
    return {**results, **extra}


V2_EXTRA_OUTPUTS = ("label", "probability")
