"""Score Spark DataFrames with an mlserve model: a pandas UDF over Arrow batches.

    from mlserve.spark import predict_udf
    udf = predict_udf("/models/churn.mls", output="proba")
    scored = df.withColumn("p", udf("age", "income", "plan"))     # or udf(struct(*cols))

Each executor's Python worker memory-maps the `.mls` file once (mlserve._offline) and
feeds every Arrow batch straight to the C predict, with no pickle of the model per task.
The path must be readable by the executors: a shared filesystem, or a file distributed with
``spark.sparkContext.addFile(path)`` (then the UDF finds it with ``SparkFiles.get``).
Columns reach the model by name when it was fitted with feature names (so their order
does not matter), by position otherwise.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from ._offline import output_method, shared_model


def predict_udf(model_path, output: str = "labels", result_type: str | None = None):
    """A function of the feature columns that returns the model's ``output`` as a column.

    ``output``: "labels" (or the regression values), "proba", "decision_function",
    "distances" (k-means). ``result_type`` is a Spark DDL type for the result; by default
    it follows the model: "long"/"double"/"string" for labels, "double" for one regression
    output, "array<double>" for probabilities, distances and multi-output values.
    Call the result with the feature columns (names or Columns, in the model's order when
    it has no feature names) or with one ``struct`` of them.
    """
    path = os.path.abspath(os.fspath(model_path))
    model = shared_model(path)                 # on the driver: check the file and the output
    output_method(model, output)
    meta = json.loads(model._fitted_model().metadata)
    n_features = int(meta.get("n_features") or 0)
    returns = result_type or _result_type(meta, output)
    as_array = returns.replace(" ", "").lower().startswith("array")
    name = os.path.basename(path)

    @pandas_udf(returns)
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.Series]:
        fn = output_method(shared_model(_executor_path(path, name)), output)
        for batch in batches:
            result = np.asarray(fn(batch))
            if as_array:
                yield pd.Series(list(result.reshape(len(batch), -1)))
            else:
                yield pd.Series(result.reshape(len(batch)))

    def apply(*columns) -> Column:
        if not columns:
            raise TypeError("give the feature columns, or one struct of them")
        if len(columns) == 1 and n_features != 1:
            return score(columns[0])       # a struct of every feature
        return score(F.struct(*columns))

    apply.__name__ = f"mlserve_{output}"
    apply.__doc__ = f"mlserve {output} of {path}"
    return apply


def _executor_path(path, name):
    if os.path.exists(path):
        return path
    from pyspark import SparkFiles  # a file distributed with sparkContext.addFile
    return SparkFiles.get(name)


def _result_type(meta, output):
    if output != "labels":
        return "array<double>"
    if int(meta.get("n_outputs") or 1) > 1 and meta.get("task") != "classification":
        return "array<double>"
    classes = meta.get("classes")
    if classes is not None:
        kinds = {type(c) for c in classes}
        if kinds <= {int, bool}:
            return "long"
        if kinds <= {int, float}:
            return "double"
        return "string"
    return "long" if meta.get("task") == "clustering" else "double"


__all__ = ["predict_udf"]
