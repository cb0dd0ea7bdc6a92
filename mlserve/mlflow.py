"""MLflow flavor for mlserve models: save, log and load them as MLflow Models.

    import mlserve.mlflow
    info = mlserve.mlflow.log_model(model, "model", registered_model_name="churn")
    model = mlserve.mlflow.load_model(info.model_uri)         # the mlserve model (memory-mapped)
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)          # any MLflow tool: pyfunc, spark_udf
    pyfunc.predict(frame)                                      # columns matched by name

A saved model is a folder holding the `.mls` file (``model.mls``: no pickle, loading runs no
code), an ``MLmodel`` with two flavors (``mlserve``, read by :func:`load_model`, and
``python_function``, whose loader is this module) and the environment files MLflow expects.
The signature is inferred from the model's feature names and dtype: one column per named
feature, or a tensor ``(-1, n_features)`` for a model fitted without names.

Needs ``mlflow-skinny`` (``pip install mlserve[mlflow]``), not the full MLflow.
"""
from __future__ import annotations

import json
import os
import platform

import mlflow
import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from . import __version__, _io
from ._estimators import _MLServeEstimator

FLAVOR_NAME = "mlserve"
_DATA_FILE = "model.mls"
_OUTPUTS = ("labels", "proba", "decision_function", "distances")


def get_default_pip_requirements() -> list[str]:
    """What a fresh environment needs to load the python_function flavor."""
    return [f"mlserve=={__version__}", f"numpy=={np.__version__}", f"pandas=={_pandas_version()}"]


def save_model(model, path, *, mlflow_model: Model | None = None, signature=None,
               input_example=None, pip_requirements=None, metadata=None) -> None:
    """Save an mlserve model (fitted, converted or loaded) as an MLflow Model folder at ``path``.

    ``signature=None`` infers it from the model (see the module doc); pass a
    ``ModelSignature`` to set your own, or ``False`` for none. ``input_example`` (a DataFrame,
    a dict of columns or an array) is stored beside the model as MLflow does for its flavors.
    """
    if not isinstance(model, _MLServeEstimator):
        raise TypeError(f"mlserve.mlflow.save_model expects an mlserve model, got {type(model).__name__}; "
                        "turn a scikit-learn model into one with mlserve.convert first")
    if not callable(getattr(model, "predict", None)):
        raise TypeError(f"mlserve.mlflow saves models with a predict method; {type(model).__name__} has none")
    path = os.fspath(path)
    if os.path.exists(path) and os.listdir(path):
        raise FileExistsError(f"mlserve.mlflow.save_model: {path!r} exists and is not empty")
    os.makedirs(path, exist_ok=True)
    _io.save(model, os.path.join(path, _DATA_FILE))

    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    if input_example is not None:
        # stored the way MLflow's own flavors store it
        from mlflow.models.utils import _save_example
        _save_example(mlflow_model, input_example, path)
    if signature is None:
        signature = infer_signature(model)
    if signature:
        mlflow_model.signature = signature
    if metadata is not None:
        mlflow_model.metadata = metadata
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module="mlserve.mlflow", data=_DATA_FILE,
                               conda_env="conda.yaml", python_env="python_env.yaml")
    meta = json.loads(model._fitted_model().metadata)
    mlflow_model.add_flavor(FLAVOR_NAME, data=_DATA_FILE, mlserve_version=__version__,
                            kind=meta.get("kind"), task=meta.get("task"))
    mlflow_model.save(os.path.join(path, "MLmodel"))
    _write_environment(path, pip_requirements or get_default_pip_requirements())


def log_model(model, artifact_path: str | None = None, *, registered_model_name: str | None = None,
              input_example=None, signature=None, pip_requirements=None, metadata=None, **kwargs):
    """Log an mlserve model to the active MLflow run (one is started if none is active).

    Returns MLflow's ``ModelInfo`` (``.model_uri`` for :func:`load_model` and
    ``mlflow.pyfunc.load_model``). ``registered_model_name`` also registers it in the model
    registry. Other keyword arguments go to ``mlflow.models.Model.log`` (``name=``, ``tags=``...).
    """
    return Model.log(artifact_path=artifact_path, flavor=_flavor_module(), model=model,
                     registered_model_name=registered_model_name, input_example=input_example,
                     signature=signature, pip_requirements=pip_requirements, metadata=metadata,
                     **kwargs)


def load_model(model_uri: str, dst_path: str | None = None):
    """Load the mlserve model of an MLflow Model (``runs:/...``, ``models:/...``, a path...).

    The ``.mls`` file is memory-mapped from where MLflow put its artifacts.
    """
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst_path)
    conf = Model.load(os.path.join(local, "MLmodel")).flavors.get(FLAVOR_NAME)
    if conf is None:
        raise ValueError(f"{model_uri} has no {FLAVOR_NAME!r} flavor; "
                         "load it with mlflow.pyfunc.load_model or its own flavor")
    return _io.load(_data_path(local, conf["data"]))


def infer_signature(model) -> ModelSignature:
    """The signature of an mlserve model: its features by name (or a tensor) and its output."""
    meta = json.loads(model._fitted_model().metadata)
    dtype = np.dtype(meta.get("dtype", "float64"))
    col_type = "float" if dtype == np.float32 else "double"
    names = meta.get("feature_names")
    n_features = meta.get("n_features")
    if names:
        inputs = Schema([ColSpec(col_type, name) for name in names])
    elif n_features:
        inputs = Schema([TensorSpec(dtype, (-1, int(n_features)))])
    else:
        raise TypeError(f"mlserve.mlflow cannot describe the input of a {meta.get('kind')} model")
    # params={"output": "proba"} at predict time picks the method (see _PyFuncModel.predict)
    return ModelSignature(inputs=inputs, params=ParamSchema([ParamSpec("output", "string", "labels")]))


class _PyFuncModel:
    """The python_function flavor: predict(DataFrame or array) -> NumPy array."""

    def __init__(self, model):
        self.model = model

    def get_raw_model(self):
        return self.model

    def predict(self, model_input, params=None):
        output = (params or {}).get("output", "labels")
        if output not in _OUTPUTS:
            raise ValueError(f"unknown output {output!r}; use one of {', '.join(_OUTPUTS)}")
        method = {"labels": "predict", "proba": "predict_proba",
                  "decision_function": "decision_function", "distances": "transform"}[output]
        fn = getattr(self.model, method, None)
        if fn is None:
            raise ValueError(f"output {output!r}: a {type(self.model).__name__} has no {method}")
        if isinstance(model_input, dict):
            import pandas as pd
            model_input = pd.DataFrame(model_input)
        return fn(model_input)


def _load_pyfunc(data_path):
    """Called by mlflow.pyfunc.load_model with the flavor's ``data`` path."""
    return _PyFuncModel(_io.load(data_path))


def _data_path(local, data):
    path = os.path.normpath(os.path.join(local, data))
    if os.path.commonpath([path, os.path.normpath(local)]) != os.path.normpath(local):
        raise ValueError(f"MLmodel's mlserve data path {data!r} leaves the model folder")
    return path


def _write_environment(path, requirements):
    with open(os.path.join(path, "requirements.txt"), "w") as f:
        f.write("\n".join(requirements) + "\n")
    python = platform.python_version()
    with open(os.path.join(path, "python_env.yaml"), "w") as f:
        f.write(f"python: {python}\nbuild_dependencies:\n  - pip\ndependencies:\n  - -r requirements.txt\n")
    with open(os.path.join(path, "conda.yaml"), "w") as f:
        f.write("name: mlflow-env\nchannels:\n  - conda-forge\ndependencies:\n"
                f"  - python={python}\n  - pip\n  - pip:\n"
                + "".join(f"    - {r}\n" for r in requirements))


def _pandas_version():
    try:
        import pandas
    except ImportError:
        return "2"
    return pandas.__version__


def _flavor_module():
    # Model.log calls flavor.save_model(path=..., mlflow_model=..., **kwargs)
    import sys
    return sys.modules[__name__]


__all__ = ["FLAVOR_NAME", "get_default_pip_requirements", "infer_signature", "load_model",
           "log_model", "save_model"]
