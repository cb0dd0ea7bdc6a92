"""mlserve: fast, safe model inference in C, served from any Flask app.

    model = mlserve.LogisticRegression(C=1.0).fit(X, y)   # fit runs in C
    model = mlserve.convert(sklearn_model)                 # or bring a trained one
    mlserve.save(model, "churn.mls")
    model = mlserve.load("churn.mls")                      # memory-mapped, no code runs
    model.predict(X)                                       # C, GIL released
"""
import os as _os

from . import _core
from ._als import ALS
from ._core import Model
from ._errors import (
    ConvergenceWarning,
    ConvertError,
    DataConversionWarning,
    MLServeError,
    ModelFormatError,
    NotFittedError,
)
from ._estimators import LinearRegression, LogisticRegression, Ridge
from ._graph import NeuralNetwork
from ._image import ImageModel, with_image_input
from ._io import load, save
from ._kmeans import KMeans
from ._pipeline import PipelineModel
from ._recommender import Recommender
from ._trees import TreeEnsembleModel
from .convert import convert
from .convert._keras import from_keras
from .convert._onnx import from_onnx

__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Set how many threads OpenBLAS may use for one predict or fit call.

    The default is 1 (or MLSERVE_NUM_THREADS): a server gets its parallelism
    from concurrent requests, and BLAS threads on top of request threads
    oversubscribe the cores. Raise it for large offline batches in a notebook.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"num_threads must be an int, got {type(n).__name__}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Threads OpenBLAS may use for one call (see set_num_threads)."""
    return _core.get_num_threads()


def blas_library_path() -> str | None:
    """Path of the OpenBLAS shared library the extension loaded."""
    here = _os.path.dirname(_os.path.abspath(_core.__file__))
    candidates = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(None, 5)[-1].strip()
                if "openblas" in _os.path.basename(path) and path not in candidates:
                    candidates.append(path)
    except OSError:
        return None
    # the wheel's copy sits next to the extension; a system OpenBLAS does not,
    # and other packages (NumPy, SciPy) load their own, prefixed copies
    for path in candidates:
        if _os.path.dirname(path) == here:
            return path
    for path in candidates:
        if "scipy_openblas" not in _os.path.basename(path):
            return path
    return None


def show_config() -> None:
    """Print the version, the BLAS library mlserve runs and its threads."""
    import platform

    import numpy

    info = _core.blas_info()
    lines = [
        f"mlserve {__version__}",
        f"  python        {platform.python_version()} ({platform.machine()})",
        f"  numpy         {numpy.__version__}",
        f"  blas          {info['config'].strip()}",
        f"  blas source   {info['source']}",
        f"  blas library  {blas_library_path() or 'unknown'}",
        f"  blas kernel   {info['corename']}",
        f"  threads       {info['num_threads']} (mlserve.set_num_threads)",
        f"  .mls format   {_core.FORMAT_MAJOR}.{_core.FORMAT_MINOR}",
    ]
    print("\n".join(lines))


def _default_threads() -> None:
    value = _os.environ.get("MLSERVE_NUM_THREADS", "1")
    try:
        _core.set_num_threads(int(value))
    except ValueError as exc:
        raise ValueError(f"MLSERVE_NUM_THREADS must be an integer >= 1, got {value!r}") from exc


_default_threads()

_LAZY = {
    "ModelStore": ("mlserve.store", "ModelStore"),
    "blueprint": ("mlserve.serving", "blueprint"),
    "MLServe": ("mlserve.serving", "MLServe"),
    "Client": ("mlserve.client", "Client"),
    "ClientError": ("mlserve.client", "ClientError"),
}


def __getattr__(name):
    # Serving pulls in Flask; import it only when asked for.
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        return getattr(importlib.import_module(module_name), attribute)
    raise AttributeError(f"module 'mlserve' has no attribute {name!r}")


def __dir__():
    # the public names, the lazy ones included (they are not in globals() until first use)
    return sorted(set(__all__) | {n for n in globals() if n.startswith("_")})


__all__ = [
    "ALS",
    "Client",
    "ClientError",
    "ConvergenceWarning",
    "ConvertError",
    "DataConversionWarning",
    "ImageModel",
    "KMeans",
    "LinearRegression",
    "LogisticRegression",
    "MLServe",
    "MLServeError",
    "Model",
    "ModelFormatError",
    "ModelStore",
    "NeuralNetwork",
    "NotFittedError",
    "PipelineModel",
    "Recommender",
    "Ridge",
    "TreeEnsembleModel",
    "__version__",
    "blas_library_path",
    "blueprint",
    "convert",
    "from_keras",
    "from_onnx",
    "get_num_threads",
    "load",
    "save",
    "set_num_threads",
    "show_config",
    "with_image_input",
]
