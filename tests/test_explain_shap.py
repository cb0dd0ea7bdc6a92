"""TreeSHAP parity with the shap package's TreeExplainer (path-dependent) on scikit-learn trees.

mlserve's explain (csrc/mls_treeshap.c) and shap compute the same quantity, Lundberg et al.'s
path-dependent TreeSHAP over the training covers of each node: contributions and the bias
(shap's expected_value) must agree to 1e-9 on every row.
"""
import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeRegressor

import mlserve

with warnings.catch_warnings():
    # shap's import calls a matplotlib colormap API that matplotlib marks for deprecation
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    import shap

X_REG, Y_REG = make_regression(400, 6, noise=5.0, random_state=0)
X_CLF, Y_CLF = make_classification(400, 6, n_informative=4, n_classes=3, random_state=0)

REGRESSORS = [
    DecisionTreeRegressor(max_depth=6, random_state=0),
    RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0),
    ExtraTreesRegressor(n_estimators=10, max_depth=5, random_state=0),
    GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0),
]


@pytest.mark.parametrize("est", REGRESSORS, ids=lambda e: type(e).__name__)
def test_regressors_match_shap(est):
    est.fit(X_REG, Y_REG)
    ours = mlserve.convert(est).explain(X_REG[:100])
    explainer = shap.TreeExplainer(est)
    np.testing.assert_allclose(ours[:, :-1], explainer.shap_values(X_REG[:100]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours[:, -1], np.ravel(explainer.expected_value)[0], rtol=0, atol=1e-9)


def test_forest_classifier_matches_shap_per_class():
    est = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(X_CLF, Y_CLF)
    ours = mlserve.convert(est).explain(X_CLF[:100])            # (rows, classes, features + 1)
    explainer = shap.TreeExplainer(est)
    theirs = np.transpose(explainer.shap_values(X_CLF[:100]), (0, 2, 1))   # shap: (rows, features, classes)
    np.testing.assert_allclose(ours[:, :, :-1], theirs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours[:, :, -1], np.broadcast_to(explainer.expected_value, ours[:, :, -1].shape),
                               rtol=0, atol=1e-9)


def test_binary_boosting_matches_shap_in_log_odds():
    y = (Y_CLF > 0).astype(int)
    est = GradientBoostingClassifier(n_estimators=25, max_depth=3, random_state=0).fit(X_CLF, y)
    ours = mlserve.convert(est).explain(X_CLF[:100])
    explainer = shap.TreeExplainer(est)
    theirs = explainer.shap_values(X_CLF[:100])
    ours = ours.reshape(100, -1)        # one raw output (the log-odds)
    np.testing.assert_allclose(ours[:, :-1], theirs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours[:, -1], np.ravel(explainer.expected_value)[0], rtol=0, atol=1e-9)
