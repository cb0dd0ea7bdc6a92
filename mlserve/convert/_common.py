"""What the converters of every source library share."""
from __future__ import annotations

import sys

import numpy as np

from .._errors import NotFittedError


def qualified_name(cls) -> str:
    """``module.QualName`` of a class: the key converters are registered under."""
    return f"{cls.__module__}.{cls.__qualname__}"


def require_fitted(est, *attributes):
    missing = [a for a in attributes if not hasattr(est, a)]
    if missing:
        raise NotFittedError(
            f"{type(est).__name__} is not fitted (missing {', '.join(missing)}); fit it "
            "before converting"
        )


def source_info(library: str, module: str, estimator: str, **extra) -> dict:
    """The metadata's "source": library, estimator class, the library's version
    (from ``module`` if the user imported it), then ``extra``."""
    src = {
        "library": library,
        "estimator": estimator,
        "version": getattr(sys.modules.get(module), "__version__", None),
    }
    src.update(extra)
    return src


# XGBoost and LightGBM: a Booster, or the scikit-learn-style model it came from


def booster_classes(task: str, classes, n_class: int):
    """A boosted classifier's labels: the estimator's ``classes_``, else
    0 .. n_class-1 (0, 1 for binary); None for a regressor."""
    if task != "classification":
        return None
    return np.asarray(classes) if classes is not None else np.arange(max(n_class, 2))


def booster_source(library: str, booster_class: str, estimator, **extra) -> dict:
    """source_info naming the estimator the booster came from, else the Booster."""
    name = qualified_name(type(estimator)) if estimator is not None else booster_class
    return source_info(library, library, name, **extra)
