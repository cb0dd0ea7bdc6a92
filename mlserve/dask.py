"""Score Dask DataFrames and arrays with an mlserve model, partition by partition.

    import mlserve.dask
    labels = mlserve.dask.predict(ddf, "/models/churn.mls")                 # a dask Series
    proba = mlserve.dask.predict(array, "/models/churn.mls", output="proba") # a dask array

Each worker process memory-maps the `.mls` file once (mlserve._offline) instead of
receiving the model pickled with every task; the path must be readable by the workers.
"""
from __future__ import annotations

import json
import os

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd

from ._offline import output_method, shared_model


def predict(data, model_path, output: str = "labels"):
    """The model's ``output`` for every row of a dask DataFrame (a dask Series, or a
    DataFrame with one column per class/output) or a 2-D dask array (a dask array)."""
    path = os.path.abspath(os.fspath(model_path))
    model = shared_model(path)
    sample = np.asarray(output_method(model, output)(_zeros_row(model)))
    width = None if sample.ndim == 1 else sample.shape[1]
    if isinstance(data, dd.DataFrame):
        if width is None:
            meta = pd.Series(sample[:0], name=output)
        else:
            meta = pd.DataFrame(sample[:0], columns=_column_names(model, output, width))
        return data.map_partitions(_score_partition, path, output, meta=meta)
    if isinstance(data, da.Array):
        if data.ndim != 2:
            raise ValueError(f"expected a 2-D dask array, got {data.ndim} dimensions")
        data = data.rechunk({1: -1})      # every block holds whole rows
        if width is None:
            return data.map_blocks(_score_block, path, output, dtype=sample.dtype, drop_axis=1)
        return data.map_blocks(_score_block, path, output, dtype=sample.dtype,
                               chunks=(data.chunks[0], (width,)))
    raise TypeError(f"mlserve.dask.predict takes a dask DataFrame or array, got {type(data).__name__}")


def _score_partition(part, path, output):
    result = np.asarray(output_method(shared_model(path), output)(part))
    if result.ndim == 1:
        return pd.Series(result, index=part.index, name=output)
    return pd.DataFrame(result, index=part.index,
                        columns=_column_names(shared_model(path), output, result.shape[1]))


def _score_block(block, path, output):
    return np.asarray(output_method(shared_model(path), output)(block))


def _zeros_row(model):
    meta = json.loads(model._fitted_model().metadata)
    names = meta.get("feature_names")
    row = np.zeros((1, int(meta["n_features"])), dtype=meta.get("dtype", "float64"))
    return pd.DataFrame(row, columns=names) if names else row


def _column_names(model, output, width):
    classes = getattr(model, "classes_", None)
    if output == "proba" and classes is not None and len(classes) == width:
        return [str(c) for c in classes]
    return [f"{output}_{i}" for i in range(width)]


__all__ = ["predict"]
