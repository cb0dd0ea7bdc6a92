"""mlserve.convert: models trained elsewhere -> mlserve models.

One module per source library; each registers the estimator classes it
converts by their fully qualified name, so converting never imports a library
the user did not pass a model from.
"""
from __future__ import annotations

import numpy as np

from .._errors import ConvertError
from . import _sklearn
from . import _lightgbm, _sklearn_trees, _xgboost
from . import _sklearn_kmeans
from . import _sklearn_mlp
from . import _sklearn_pipeline
from ._common import qualified_name

_CONVERTERS = dict(_sklearn.CONVERTERS)
_CONVERTERS.update(_sklearn_trees.CONVERTERS, **_xgboost.CONVERTERS, **_lightgbm.CONVERTERS)
_CONVERTERS.update(_sklearn_kmeans.CONVERTERS)
_CONVERTERS.update(_sklearn_mlp.CONVERTERS)
_CONVERTERS.update(_sklearn_pipeline.CONVERTERS)
_CONVERTERS["sklearn.pipeline.Pipeline"] = (
    lambda est, dtype: _sklearn_pipeline.convert_pipeline(est, dtype, _CONVERTERS))


def supported() -> list[str]:
    """Fully qualified names of the estimator classes convert accepts."""
    return sorted(_CONVERTERS)


def convert(estimator, *, dtype=np.float64):
    """Turn a fitted model from another library into an mlserve model.

    Parameters
    ----------
    estimator : a fitted estimator (see ``mlserve.convert.supported()``)
    dtype : numpy.float64 or numpy.float32, default=numpy.float64
        Precision the converted model computes in. float32 halves the weights'
        memory; predictions then match the source to float32 precision.

    Returns
    -------
    An mlserve estimator with identical predictions, ready for mlserve.save.

    Raises
    ------
    mlserve.ConvertError
        For an unsupported estimator or configuration, naming it.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float64, np.float32):
        raise ConvertError(f"dtype must be float64 or float32, got {dtype}")
    for cls in type(estimator).__mro__:
        converter = _CONVERTERS.get(qualified_name(cls))
        if converter is not None:
            return converter(estimator, dtype)
    raise ConvertError(
        f"mlserve.convert does not support {qualified_name(type(estimator))}; supported: "
        + ", ".join(supported())
    )


__all__ = ["convert", "supported"]
