"""mlserve's exceptions and warnings.

C statuses become exceptions in one place (csrc/_core.c: raise_from_error);
MLServeError and ModelFormatError are created there and re-exported here.
"""
from ._core import MLServeError, ModelFormatError


class NotFittedError(MLServeError, ValueError, AttributeError):
    """An estimator was used before fit (or load/convert)."""


class ConvertError(MLServeError, TypeError):
    """mlserve.convert was given an estimator it cannot convert."""


class ConvergenceWarning(UserWarning):
    """The optimiser stopped at max_iter before reaching tol."""


class DataConversionWarning(UserWarning):
    """Input was reshaped or converted in a way the caller may not expect."""


for _cls in (NotFittedError, ConvertError, ConvergenceWarning, DataConversionWarning):
    _cls.__module__ = "mlserve"

__all__ = [
    "MLServeError",
    "ModelFormatError",
    "NotFittedError",
    "ConvertError",
    "ConvergenceWarning",
    "DataConversionWarning",
]
