"""model.explain: path-dependent TreeSHAP in C, parity with XGBoost and LightGBM."""
import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

import mlserve


def _data(task):
    if task == "regression":
        return make_regression(400, 6, noise=1.0, random_state=0)
    n_classes = 2 if task == "binary" else 3
    return make_classification(400, 6, n_informative=4, n_classes=n_classes, random_state=0)


def _close(ours, ref):
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_xgboost_pred_contribs(task):
    X, y = _data(task)
    cls = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
    est = cls(n_estimators=15, max_depth=4).fit(X, y)
    X[::7, 2] = np.nan
    ours = mlserve.convert(est).explain(X[:60])
    ref = est.get_booster().predict(xgb.DMatrix(X[:60]), pred_contribs=True)
    assert ours.shape == ref.shape
    _close(ours, ref)


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_lightgbm_pred_contrib(task):
    X, y = _data(task)
    cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
    est = cls(n_estimators=15, verbose=-1).fit(X, y)
    model = mlserve.convert(est)
    ours = model.explain(X[:60])
    ref = np.asarray(est.predict(X[:60], pred_contrib=True))
    if task == "multiclass":
        ref = ref.reshape(60, 3, 7)
    assert ours.shape == ref.shape
    _close(ours, ref)


def _expect(tree, x, subset, node=0):
    """Algorithm 1 of Lundberg et al.: E[f(x) | x_S] under the tree's cover."""
    left, right = tree.children_left[node], tree.children_right[node]
    if left == -1:
        return tree.value[node].ravel()[0]
    f = tree.feature[node]
    if f in subset:
        nxt = left if np.float32(x[f]) <= tree.threshold[node] else right
        return _expect(tree, x, subset, nxt)
    w = tree.weighted_n_node_samples
    return (w[left] * _expect(tree, x, subset, left)
            + w[right] * _expect(tree, x, subset, right)) / w[node]


def _exact_shapley(trees, x, n_features, scale):
    """Slow exact Shapley values over all feature subsets (shap is not installed)."""
    from itertools import combinations
    from math import factorial
    phi = np.zeros(n_features)
    def v(subset):
        return scale * sum(_expect(t, x, subset) for t in trees)
    for i in range(n_features):
        others = [j for j in range(n_features) if j != i]
        for k in range(n_features):
            weight = factorial(k) * factorial(n_features - k - 1) / factorial(n_features)
            for sub in combinations(others, k):
                phi[i] += weight * (v(set(sub) | {i}) - v(set(sub)))
    return phi


def test_random_forest_vs_exact_shapley():
    X, y = _data("regression")
    X = X[:, :5]
    est = RandomForestRegressor(n_estimators=4, max_depth=4, random_state=0).fit(X, y)
    phi = mlserve.convert(est).explain(X[:4])
    trees = [e.tree_ for e in est.estimators_]
    for r in range(4):
        ref = _exact_shapley(trees, X[r], 5, 1.0 / len(trees))
        np.testing.assert_allclose(phi[r, :5], ref, atol=1e-8)
    bias = np.mean([t.value[0].ravel()[0] for t in trees])
    np.testing.assert_allclose(phi[:, 5], bias, atol=1e-8)


@pytest.mark.parametrize("make", [
    lambda: RandomForestRegressor(n_estimators=8, max_depth=5, random_state=0),
    lambda: GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0),
])
def test_sklearn_contributions_sum_to_margin(make):
    X, y = _data("regression")
    model = mlserve.convert(make().fit(X, y))
    phi = model.explain(X[:40])
    assert phi.shape == (40, 7)
    np.testing.assert_allclose(phi.sum(axis=1), model.decision_function(X[:40]), atol=1e-8)


def test_many_rows_threads_match_one_row():
    X, y = _data("regression")
    model = mlserve.convert(xgb.XGBRegressor(n_estimators=10, max_depth=5).fit(X, y))
    batch = model.explain(X)
    np.testing.assert_allclose(batch[5], model.explain(X[5])[0], atol=1e-12)


def test_bad_input_and_missing_cover():
    X, y = _data("regression")
    model = mlserve.convert(lgb.LGBMRegressor(n_estimators=3, verbose=-1).fit(X, y))
    with pytest.raises(ValueError, match="features"):
        model.explain(X[:, :3])
    arrays = model._fitted_model().arrays()
    del arrays["node_cover"]
    with pytest.raises(ValueError, match="node_cover"):
        mlserve._core.tree_shap(arrays, X[:2], 1)


def test_corrupt_cover_sections_are_refused_or_harmless():
    """A node_cover of the wrong length is refused; zero, negative or NaN cover never crashes."""
    X, y = _data("regression")
    model = mlserve.convert(lgb.LGBMRegressor(n_estimators=3, verbose=-1).fit(X, y))
    arrays = model._fitted_model().arrays()
    cover = np.asarray(arrays["node_cover"])
    for bad in (cover[:-1], np.concatenate([cover, [1.0]]), np.zeros(0)):
        with pytest.raises(ValueError, match="lengths do not agree"):
            mlserve._core.tree_shap({**arrays, "node_cover": bad}, X[:2], 1)
    for values in (np.zeros_like(cover), np.full_like(cover, -1.0), np.full_like(cover, np.nan)):
        out = mlserve._core.tree_shap({**arrays, "node_cover": values}, X[:2], 1)
        assert out.shape[-1] == X.shape[1] + 1


# ------------------------------------------------------------------ linear models
# Reference: scikit-learn's own coef_, intercept_, predict and decision_function,
# with the contributions coef * (x - mean) written out here (shap's LinearExplainer
# with feature_perturbation="interventional" computes the same; shap is not installed).


def _linear_reference(coef, intercept, mean, rows):
    coef = np.atleast_2d(coef)
    phi = (rows - mean)[:, None, :] * coef[None, :, :]
    bias = np.broadcast_to(coef @ mean + intercept, (rows.shape[0], coef.shape[0]))
    out = np.concatenate([phi, bias[:, :, None]], axis=2)
    return out[:, 0, :] if coef.shape[0] == 1 else out


def test_linear_fit_stores_means_and_explains():
    X, y = _data("regression")
    model = mlserve.LinearRegression().fit(X, y)
    phi = model.explain(X[:30])
    assert phi.shape == (30, 7)
    np.testing.assert_allclose(model.metadata["training"]["feature_mean"], X.mean(axis=0))
    ref = _linear_reference(model.coef_, model.intercept_, X.mean(axis=0), X[:30])
    np.testing.assert_allclose(phi, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(phi.sum(axis=1), model.predict(X[:30]), atol=1e-9)
    np.testing.assert_allclose(phi[:, -1], model.predict(X.mean(axis=0, keepdims=True))[0])
    # several targets: one row of contributions per target
    Y = np.column_stack([y, -2 * y + X[:, 0]])
    multi = mlserve.Ridge(alpha=0.5).fit(X, Y)
    phi = multi.explain(X[:5])
    assert phi.shape == (5, 2, 7)
    np.testing.assert_allclose(phi.sum(axis=2), multi.predict(X[:5]), atol=1e-9)


def test_logistic_explains_the_decision_function():
    X, y = _data("multiclass")
    model = mlserve.LogisticRegression(max_iter=500).fit(X, y)
    phi = model.explain(X[:20])
    assert phi.shape == (20, 3, 7)
    np.testing.assert_allclose(phi.sum(axis=2), model.decision_function(X[:20]), atol=1e-9)
    X, y = _data("binary")
    binary = mlserve.LogisticRegression().fit(X, y)
    phi = binary.explain(X[:20])
    assert phi.shape == (20, 7)
    np.testing.assert_allclose(phi.sum(axis=1), binary.decision_function(X[:20]), atol=1e-9)


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_converted_linear_with_reference_matches_sklearn(task, tmp_path):
    from sklearn.linear_model import LogisticRegression, Ridge

    X, y = _data(task)
    est = Ridge(alpha=2.0).fit(X, y) if task == "regression" else LogisticRegression(max_iter=500).fit(X, y)
    model = mlserve.convert(est, reference=X)
    mlserve.save(model, tmp_path / "m.mls")
    loaded = mlserve.load(tmp_path / "m.mls")  # the means travel in the file
    phi = loaded.explain(X[:25])
    ref = _linear_reference(est.coef_, est.intercept_, X.mean(axis=0), X[:25])
    np.testing.assert_allclose(phi, ref, rtol=1e-10, atol=1e-10)
    raw = est.predict(X[:25]) if task == "regression" else est.decision_function(X[:25])
    np.testing.assert_allclose(phi.sum(axis=-1), raw, atol=1e-9)


def test_linear_explain_errors():
    from sklearn.linear_model import LinearRegression

    X, y = _data("regression")
    est = LinearRegression().fit(X, y)
    with pytest.raises(ValueError, match=r"no training feature means.*reference=X_train"):
        mlserve.convert(est).explain(X[:2])
    with pytest.raises(mlserve.ConvertError, match="reference has 3 features, but the model has 6"):
        mlserve.convert(est, reference=X[:, :3])
    bad = X.copy()
    bad[4, 1] = np.nan
    with pytest.raises(mlserve.ConvertError, match="NaN at row 4, column 1"):
        mlserve.convert(est, reference=bad)
    model = mlserve.convert(est, reference=X)
    with pytest.raises(ValueError, match="X has 5 features, but LinearRegression expects 6"):
        model.explain(X[:2, :5])
    with pytest.raises(ValueError, match=r"NaN or infinity \(row 4, column 1\)"):
        model.explain(bad[:5])
    with pytest.raises(ValueError, match="one row or a 2-D batch"):
        model.explain(np.zeros((0, 6)))


def test_reference_by_column_name_and_for_trees():
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    X, y = _data("regression")
    names = [f"f{i}" for i in range(6)]
    frame = pd.DataFrame(X, columns=names)
    est = LinearRegression().fit(frame, y)
    model = mlserve.convert(est, reference=frame[names[::-1]])  # matched by name, not position
    np.testing.assert_allclose(model.metadata["training"]["feature_mean"], X.mean(axis=0))
    np.testing.assert_allclose(model.explain(frame[:5]).sum(axis=1), est.predict(frame[:5]), atol=1e-9)
    # any converted model keeps its predictions and its explanations with reference=
    forest = RandomForestRegressor(n_estimators=4, max_depth=3, random_state=0).fit(X, y)
    plain, with_ref = mlserve.convert(forest), mlserve.convert(forest, reference=X)
    assert with_ref.metadata["training"]["n_samples"] == X.shape[0]
    np.testing.assert_array_equal(with_ref.predict(X[:9]), plain.predict(X[:9]))
    np.testing.assert_array_equal(with_ref.explain(X[:9]), plain.explain(X[:9]))
