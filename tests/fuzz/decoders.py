"""The property every request decoder must keep, for the atheris targets and the corpus replay.

For any bytes: the decoder returns 2-D numeric rows (which runtime.predict
then answers, or refuses with a 400), or raises a ServingError whose status
is 4xx. Any other exception (IndexError, MemoryError, numpy's own errors,
...) would be a 500 in the server: a finding.

Targets: v1_json, v2_json, v2_binary, npy, mlflow_csv, mlflow_json, simple_json.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

import mlserve
from mlserve.serving import codecs
from mlserve.serving.errors import ServingError
from mlserve.serving.runtime import LoadedModel, Timings, predict

TARGETS = ("v1_json", "v2_json", "v2_binary", "npy", "mlflow_csv", "mlflow_json", "simple_json")
MAX_ROWS = 1000
N_FEATURES = 4
FEATURES = ["a", "b", "c", "d"]


class _Named:
    def __init__(self, data, columns):
        self.data, self.columns = data, columns

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.data, dtype=dtype)


def _models() -> list[LoadedModel]:
    """A regressor without feature names and a classifier with names, loaded from .mls files."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, N_FEATURES))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0])
    fitted = [
        ("reg", mlserve.LinearRegression().fit(X, y)),
        ("clf", mlserve.LogisticRegression().fit(_Named(X, FEATURES), np.where(y > 0, "hi", "lo"))),
    ]
    loaded = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in fitted:
            path = os.path.join(tmp, f"{name}.mls")
            mlserve.save(model, path)
            loaded.append(LoadedModel.from_model(name, 1, mlserve.load(path)))
    return loaded


MODELS = _models()


def _decode(target: str, data: bytes, loaded: LoadedModel):
    """(rows, outputs) decoded from ``data`` as ``target``."""
    if target == "v1_json":
        request = codecs.decode_v1(codecs.decode_json(data), loaded)
        return request.rows, request.outputs
    if target in ("v2_json", "v2_binary"):
        header_length = None
        if target == "v2_binary":
            # first 2 bytes: the header length, the rest: JSON header + binary tensors
            header_length = str(int.from_bytes(data[:2], "little")) if len(data) >= 2 else "x"
            data = data[2:]
        request = codecs.decode_v2(data, header_length, loaded)
        return request.rows, tuple(o.name for o in request.outputs)
    if target == "npy":
        request = codecs.decode_npy(data, loaded, ("predict",), max_rows=MAX_ROWS)
        return request.rows, request.outputs
    if target == "mlflow_csv":
        return codecs.decode_mlflow_csv(data, loaded), ("predict",)
    if target == "mlflow_json":
        return codecs.decode_mlflow_json(codecs.decode_json(data), loaded), ("predict",)
    if target == "simple_json":
        request = codecs.decode_simple_json(codecs.decode_json(data), loaded)
        return request.rows, request.outputs
    raise ValueError(f"unknown target {target!r}")


def check(target: str, data: bytes) -> None:
    """Decode ``data`` for both models and predict; only 4xx ServingErrors may escape."""
    for loaded in MODELS:
        try:
            rows, outputs = _decode(target, data, loaded)
            assert isinstance(rows, np.ndarray), type(rows)
            assert rows.ndim == 2, rows.shape
            assert rows.dtype.kind in "biuf", rows.dtype
            if rows.shape[0] > MAX_ROWS:
                continue  # the blueprint refuses these (MLSERVE_MAX_ROWS) before predicting
            results = predict(loaded, rows, outputs, Timings())
            for name, values in results.items():
                assert values.shape[0] == rows.shape[0], (name, values.shape, rows.shape)
        except ServingError as exc:
            assert 400 <= exc.status < 500, (exc.status, exc.message)
            assert isinstance(exc.message, str) and exc.message
