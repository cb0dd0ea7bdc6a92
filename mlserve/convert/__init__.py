"""mlserve.convert: models trained elsewhere -> mlserve models.

One module per source library; each registers the estimator classes it
converts by their fully qualified name, so converting never imports a library
the user did not pass a model from.
"""
from __future__ import annotations

import inspect
import json

import numpy as np

from .._errors import ConvertError
from .._progress import Reporter, check_progress
from . import _sklearn
from . import _lightgbm, _sklearn_trees, _xgboost
from . import _sklearn_kmeans
from . import _sklearn_mlp
from . import _sklearn_pipeline
from . import _keras
from ._common import qualified_name

_CONVERTERS = dict(_sklearn.CONVERTERS)
_CONVERTERS.update(_sklearn_trees.CONVERTERS, **_xgboost.CONVERTERS, **_lightgbm.CONVERTERS)
_CONVERTERS.update(_sklearn_kmeans.CONVERTERS)
_CONVERTERS.update(_sklearn_mlp.CONVERTERS)
_CONVERTERS.update(_sklearn_pipeline.CONVERTERS)
_CONVERTERS.update(_keras.CONVERTERS)
_CONVERTERS["sklearn.pipeline.Pipeline"] = (
    lambda est, dtype: _sklearn_pipeline.convert_pipeline(est, dtype, _CONVERTERS))


def supported() -> list[str]:
    """Fully qualified names of the estimator classes convert accepts."""
    return sorted(_CONVERTERS)


def convert(estimator, *, dtype=np.float64, reference=None, progress=None):
    """Turn a fitted model from another library into an mlserve model.

    Parameters
    ----------
    estimator : a fitted estimator (see ``mlserve.convert.supported()``)
    dtype : numpy.float64 or numpy.float32, default=numpy.float64
        Precision the converted model computes in. float32 halves the weights'
        memory; predictions then match the source to float32 precision.
    reference : array-like of shape (n_samples, n_features), optional
        Training rows (or a sample of them): their per-feature statistics are
        stored in the file, as mlserve's own fit stores them (a linear model's
        ``explain`` needs the means).
    progress : None, True or False, default=None
        A ``tqdm.auto`` bar over the trees of an ensemble (forests, gradient
        boosting, XGBoost, LightGBM): True always, False never, None only when the
        conversion runs longer than a second in a notebook or a terminal.

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
            if _takes_progress(converter):
                reporter = Reporter(progress, None, "convert", unit="tree")
                try:
                    converted = converter(estimator, dtype, progress=reporter)
                finally:
                    reporter.close()
            else:
                check_progress(progress)
                converted = converter(estimator, dtype)
            if reference is not None:
                _store_reference(converted, reference)
            return converted
    raise ConvertError(
        f"mlserve.convert does not support {qualified_name(type(estimator))}; supported: "
        + ", ".join(supported())
    )


def _takes_progress(converter) -> bool:
    """Whether a converter reports progress (the tree ensembles' do)."""
    try:
        return "progress" in inspect.signature(converter).parameters
    except (TypeError, ValueError):
        return False


def _store_reference(converted, reference) -> None:
    """Store the training statistics of ``reference`` in ``converted``'s metadata."""
    from .. import _core
    from .._estimators import (
        _as_feature_matrix,
        _store_reference_statistics,
        _training_statistics,
    )
    from .._mixins import _by_name

    name = type(converted).__name__
    try:
        if type(reference) is not np.ndarray:  # a table: its columns in the model's order
            reference = _by_name(converted, reference)
        X, _ = _as_feature_matrix(reference, f"the reference data of {name}")
    except (TypeError, ValueError) as exc:
        raise ConvertError(f"reference: {exc}") from None
    model = converted._fitted_model()
    meta = json.loads(model.metadata)
    if X.shape[1] != int(meta["n_features"]):
        raise ConvertError(
            f"reference has {X.shape[1]} features, but the model has {meta['n_features']}"
        )
    meta["training"] = _training_statistics(X)
    try:
        rebuilt = _core.create(meta["kind"], model.arrays(), json.dumps(meta))
    except (TypeError, ValueError) as exc:
        raise ConvertError(f"reference= is not supported for {name}: {exc}") from None
    converted._install(rebuilt)
    try:  # the bins of the features and of the predictions, for drift monitoring
        _store_reference_statistics(converted, X)
    except (TypeError, ValueError) as exc:
        raise ConvertError(f"reference: cannot predict on it: {exc}") from None


__all__ = ["convert", "supported"]
