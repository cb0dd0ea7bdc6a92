"""scikit-learn's own estimator checks, run on mlserve's estimators.

Two checks are expected to fail, by design:

- check_fit2d_predict1d: mlserve's predict accepts a 1-D array as one row
  (the serving use case: one request, one row); scikit-learn requires a
  ValueError there.
- check_estimators_unfitted: mlserve raises mlserve.NotFittedError (a
  ValueError and AttributeError, like scikit-learn's) but not scikit-learn's
  own class, because importing mlserve must not import scikit-learn.
"""
import warnings

import pytest

import mlserve

sklearn_checks = pytest.importorskip("sklearn.utils.estimator_checks")

EXPECTED_FAILED_CHECKS = {
    "check_fit2d_predict1d": "by design, predict takes a 1-D array as one row",
    "check_estimators_unfitted": "raises mlserve.NotFittedError, not sklearn's class "
    "(mlserve does not import scikit-learn)",
}

# scikit-learn's own KMeans is expected to fail this one too (its instance_generator):
# the random inits differ between the weighted and the repeated data.
KMEANS_EXPECTED_FAILED_CHECKS = {
    **EXPECTED_FAILED_CHECKS,
    "check_sample_weight_equivalence_on_dense_data": "sample_weight is not equivalent to "
    "removing/repeating samples (as scikit-learn's KMeans)",
}


def _expected_failed_checks(estimator):
    if isinstance(estimator, mlserve.KMeans):
        return KMEANS_EXPECTED_FAILED_CHECKS
    return EXPECTED_FAILED_CHECKS


with warnings.catch_warnings():
    # mlserve's estimators implement the protocol without inheriting
    # sklearn.base.BaseEstimator (no scikit-learn import at run time).
    warnings.filterwarnings("ignore", message="Estimator .* does not inherit from")
    checks = sklearn_checks.parametrize_with_checks(
        [
            mlserve.LinearRegression(),
            mlserve.Ridge(alpha=0.5),
            mlserve.LogisticRegression(),
            mlserve.KMeans(),
        ],
        expected_failed_checks=_expected_failed_checks,
    )


@pytest.mark.filterwarnings("ignore:Estimator .* does not inherit from:UserWarning")
# The checks silence or record scikit-learn's own warning classes; these are
# mlserve's equivalents (check_supervised_y_2d asserts on the recorded text).
@pytest.mark.filterwarnings("always::mlserve.DataConversionWarning")
@pytest.mark.filterwarnings("ignore::mlserve.ConvergenceWarning")
@checks
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
