"""Fitting in C against scikit-learn's real output (and closed forms).

mlserve.LinearRegression / Ridge / LogisticRegression fit in C
(csrc/mls_linear_fit.c); these tests fit the same generated data with
scikit-learn and compare:

- LinearRegression: coefficients and predictions, including collinear columns
  (both give the minimum-norm solution) and more features than samples;
- Ridge: coefficients against the closed form solved with numpy.linalg.solve
  (1e-6 relative), also when d > n (the dual system), and against sklearn;
- LogisticRegression: coefficients against sklearn's lbfgs within 1e-4, with
  both run to a tight tol, and with both at the defaults (mlserve's L-BFGS
  follows scipy's L-BFGS-B closely); at a tight tol the gradient of
  the objective at mlserve's solution is checked to be tiny as well;
- predict / predict_proba / decision_function / score against sklearn's
  methods given the same coefficients (1e-8 relative).

The data is well conditioned on purpose where default tolerances are
compared: with tol=1e-4 both solvers stop 1e-3 or more from the optimum on
ill-conditioned problems, and only their shared path makes them agree.
"""
import numpy as np
import pytest

import mlserve

sklearn_linear = pytest.importorskip("sklearn.linear_model")

PRED_RTOL = 1e-8
RIDGE_RTOL = 1e-6
LOGISTIC_ATOL = 1e-4
TIGHT = dict(tol=1e-10, max_iter=10000)


# ----------------------------------------------------------------- data


def regression_data(rng, n, d, k=1, offset=True):
    """Features with varied scales and offsets; k == 1 gives a 1-D y."""
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d)
    if offset:
        X += rng.normal(size=d)
    coef = rng.normal(size=(d, k))
    Y = X @ coef + 1.5 + 0.1 * rng.normal(size=(n, k))
    return X, (Y[:, 0] if k == 1 else Y)


def classification_data(rng, n, d, n_classes, labels=None):
    """Standard normal features, labels drawn from a softmax model."""
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(n_classes, d)) * (2.0 / np.sqrt(d))
    logits = X @ W.T + 0.5 * rng.normal(size=n_classes)
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    if labels is not None:
        y = np.asarray(labels)[y]
    return X, y


def weights(rng, n):
    w = rng.uniform(0.0, 3.0, size=n)
    w[::7] = 0.0  # zero weights are allowed
    return w


def closed_form_ridge(X, Y, alpha, sample_weight=None, fit_intercept=True):
    """Ridge by numpy.linalg.solve of the (weighted, centred) normal equations."""
    Y2 = Y.reshape(len(Y), -1)
    w = np.ones(len(X)) if sample_weight is None else sample_weight
    if fit_intercept:
        x_mean = np.average(X, axis=0, weights=w)
        y_mean = np.average(Y2, axis=0, weights=w)
    else:
        x_mean, y_mean = np.zeros(X.shape[1]), np.zeros(Y2.shape[1])
    Xc = (X - x_mean) * np.sqrt(w)[:, None]
    Yc = (Y2 - y_mean) * np.sqrt(w)[:, None]
    coef = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc).T
    intercept = y_mean - coef @ x_mean
    return coef, intercept


def logistic_gradient(X, y_index, coef, intercept, C, sample_weight=None, fit_intercept=True):
    """Gradient of sum_i w_i loss_i / S + ||coef||^2 / (2 C S), S = sum w."""
    n = X.shape[0]
    w = np.ones(n) if sample_weight is None else sample_weight
    S = w.sum()
    Z = X @ coef.T + intercept
    if coef.shape[0] == 1:
        R = 1.0 / (1.0 + np.exp(-Z[:, 0])) - (y_index == 1)
        R = R[:, None]
    else:
        P = np.exp(Z - Z.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        P[np.arange(n), y_index] -= 1.0
        R = P
    R = R * w[:, None]
    g_coef = R.T @ X / S + coef / (C * S)
    g_intercept = R.sum(axis=0) / S if fit_intercept else np.zeros(0)
    return max(np.abs(g_coef).max(), np.abs(g_intercept).max(initial=0.0))


def assert_same_predictions(ours, X, expected):
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(ours, expected, rtol=PRED_RTOL, atol=PRED_RTOL * scale)


# ------------------------------------------------------ linear regression

REGRESSION_CASES = {
    "1 feature": (60, 1, 1),
    "5 features": (200, 5, 1),
    "500 features": (700, 500, 1),
    "multi-output": (300, 20, 3),
}


@pytest.mark.parametrize("case", list(REGRESSION_CASES))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
def test_linear_regression_matches_sklearn(rng, case, weighted, fit_intercept):
    n, d, k = REGRESSION_CASES[case]
    X, y = regression_data(rng, n, d, k)
    w = weights(rng, n) if weighted else None
    ours = mlserve.LinearRegression(fit_intercept=fit_intercept)
    assert ours.fit(X, y, sample_weight=w) is ours
    ref = sklearn_linear.LinearRegression(fit_intercept=fit_intercept).fit(X, y, sample_weight=w)

    assert ours.n_features_in_ == d
    assert np.shape(ours.coef_) == np.shape(ref.coef_)
    if fit_intercept:
        # (without an intercept sklearn sets intercept_ = 0.0 even for
        # several targets; mlserve keeps one zero per target)
        assert np.shape(ours.intercept_) == np.shape(ref.intercept_)
    scale = max(1.0, np.abs(ref.coef_).max())
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-8, atol=1e-8 * scale)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-8, atol=1e-8 * scale)
    assert_same_predictions(ours.predict(X), X, ref.predict(X))
    assert ours.score(X, y, sample_weight=w) == pytest.approx(
        ref.score(X, y, sample_weight=w), rel=1e-10
    )


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_linear_regression_collinear_columns_min_norm(rng, weighted):
    n = 200
    A = rng.normal(size=(n, 4))
    # duplicated, scaled and summed columns plus a constant column
    X = np.column_stack([A, A[:, 0] + A[:, 1], 2.0 * A[:, 2], -1.5 * A[:, 3], np.full(n, 3.0)])
    y = A @ rng.normal(size=4) + 0.1 * rng.normal(size=n)
    w = weights(rng, n) if weighted else None
    ours = mlserve.LinearRegression().fit(X, y, sample_weight=w)
    ref = sklearn_linear.LinearRegression().fit(X, y, sample_weight=w)

    # the minimum-norm solution of the centred, weighted problem
    ww = np.ones(n) if w is None else w
    x_mean = np.average(X, axis=0, weights=ww)
    y_mean = np.average(y, weights=ww)
    sw = np.sqrt(ww)
    min_norm = np.linalg.lstsq((X - x_mean) * sw[:, None], (y - y_mean) * sw, rcond=None)[0]
    np.testing.assert_allclose(ours.coef_, min_norm, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-8, atol=1e-10)
    assert ours.coef_[-1] == pytest.approx(0.0, abs=1e-12)  # constant column
    assert_same_predictions(ours.predict(X), X, ref.predict(X))


def test_linear_regression_more_features_than_samples(rng):
    X, y = regression_data(rng, 40, 120)
    ours = mlserve.LinearRegression().fit(X, y)
    ref = sklearn_linear.LinearRegression().fit(X, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-8, atol=1e-10)
    assert_same_predictions(ours.predict(X), X, ref.predict(X))
    # interpolates the training data
    np.testing.assert_allclose(ours.predict(X), y, rtol=1e-8, atol=1e-8)


def test_linear_regression_float32_input(rng):
    X, y = regression_data(rng, 300, 8)
    X32 = X.astype(np.float32)
    ours = mlserve.LinearRegression().fit(X32, y)
    # mlserve fits in float64: exactly sklearn's fit on the same values
    ref64 = sklearn_linear.LinearRegression().fit(X32.astype(np.float64), y)
    np.testing.assert_allclose(ours.coef_, ref64.coef_, rtol=1e-8, atol=1e-10)
    assert_same_predictions(ours.predict(X32), X32, ref64.predict(X32.astype(np.float64)))
    # sklearn keeps float32: agreement to float32 precision
    ref32 = sklearn_linear.LinearRegression().fit(X32, y)
    np.testing.assert_allclose(ours.coef_, ref32.coef_, rtol=1e-4, atol=1e-4)


def test_predictions_use_the_coefficients(rng):
    """predict is X @ coef_.T + intercept_ to 1e-8, rows one at a time too."""
    X, Y = regression_data(rng, 100, 7, k=2)
    ours = mlserve.LinearRegression().fit(X, Y)
    expected = X @ ours.coef_.T + ours.intercept_
    assert_same_predictions(ours.predict(X), X, expected)
    # one 1-D row is a batch of one
    assert_same_predictions(ours.predict(X[3]).reshape(-1), X[3], expected[3])


# ------------------------------------------------------------------ ridge

RIDGE_CASES = {
    "1 feature": (60, 1, 1),
    "d < n": (300, 20, 1),
    "500 features": (1000, 500, 1),
    "d > n (dual)": (80, 300, 1),
    "multi-output": (200, 10, 3),
    "multi-output d > n": (50, 120, 2),
}


@pytest.mark.parametrize("case", list(RIDGE_CASES))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
def test_ridge_matches_closed_form(rng, case, weighted, fit_intercept):
    n, d, k = RIDGE_CASES[case]
    X, y = regression_data(rng, n, d, k)
    w = weights(rng, n) if weighted else None
    ours = mlserve.Ridge(alpha=1.0, fit_intercept=fit_intercept).fit(X, y, sample_weight=w)
    coef, intercept = closed_form_ridge(X, y, 1.0, w, fit_intercept)
    scale = max(1.0, np.abs(coef).max())
    np.testing.assert_allclose(
        np.reshape(ours.coef_, coef.shape), coef, rtol=RIDGE_RTOL, atol=RIDGE_RTOL * scale
    )
    np.testing.assert_allclose(
        np.atleast_1d(ours.intercept_), intercept, rtol=RIDGE_RTOL,
        atol=RIDGE_RTOL * max(1.0, np.abs(intercept).max()),
    )
    ref = sklearn_linear.Ridge(alpha=1.0, fit_intercept=fit_intercept).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=RIDGE_RTOL, atol=RIDGE_RTOL * scale)
    assert_same_predictions(ours.predict(X), X, ref.predict(X))


@pytest.mark.parametrize("alpha", [1e-3, 10.0, 1e4])
def test_ridge_alphas(rng, alpha):
    X, y = regression_data(rng, 150, 12)
    ours = mlserve.Ridge(alpha=alpha).fit(X, y)
    coef, intercept = closed_form_ridge(X, y, alpha)
    np.testing.assert_allclose(ours.coef_, coef[0], rtol=RIDGE_RTOL, atol=1e-10)
    assert ours.intercept_ == pytest.approx(intercept[0], rel=RIDGE_RTOL)


def test_ridge_collinear_columns(rng):
    A = rng.normal(size=(100, 3))
    X = np.column_stack([A, A[:, 0], A[:, 1] - A[:, 2]])
    y = A @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=100)
    ours = mlserve.Ridge(alpha=0.5).fit(X, y)
    coef, _ = closed_form_ridge(X, y, 0.5)
    np.testing.assert_allclose(ours.coef_, coef[0], rtol=RIDGE_RTOL, atol=1e-10)
    # the penalty splits weight evenly between identical columns
    assert ours.coef_[0] == pytest.approx(ours.coef_[3], rel=1e-8)


def test_integer_weights_equal_repeated_rows(rng):
    X, y = regression_data(rng, 80, 5)
    w = rng.integers(0, 4, size=80)
    w[0] = 1
    rows = np.repeat(np.arange(80), w)
    for est in (mlserve.LinearRegression(), mlserve.Ridge(alpha=2.0)):
        a = type(est)(**est.get_params()).fit(X, y, sample_weight=w.astype(float))
        b = type(est)(**est.get_params()).fit(X[rows], y[rows])
        np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-9, atol=1e-12)
        assert a.intercept_ == pytest.approx(b.intercept_, rel=1e-9, abs=1e-12)


# ---------------------------------------------------- logistic regression

LOGISTIC_CASES = {
    "binary, 1 feature": (400, 1, 2),
    "binary, 10 features": (1000, 10, 2),
    "binary, 500 features": (2000, 500, 2),
    "3 classes, 1 feature": (400, 1, 3),
    "3 classes": (1000, 20, 3),
    "5 classes, 50 features": (2000, 50, 5),
    "4 classes, 500 features": (1000, 500, 4),
}


def _full(coef, intercept):
    return np.column_stack([coef, intercept])


@pytest.mark.parametrize("case", list(LOGISTIC_CASES))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_logistic_tight_tol_matches_sklearn(rng, case, weighted):
    n, d, n_classes = LOGISTIC_CASES[case]
    X, y = classification_data(rng, n, d, n_classes)
    w = weights(rng, n) if weighted else None
    ours = mlserve.LogisticRegression(C=1.0, **TIGHT).fit(X, y, sample_weight=w)
    ref = sklearn_linear.LogisticRegression(C=1.0, **TIGHT).fit(X, y, sample_weight=w)

    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    assert ours.coef_.shape == ref.coef_.shape
    assert ours.intercept_.shape == ref.intercept_.shape
    np.testing.assert_allclose(
        _full(ours.coef_, ours.intercept_), _full(ref.coef_, ref.intercept_),
        rtol=0, atol=LOGISTIC_ATOL,
    )
    # mlserve goes on where L-BFGS-B stops at f's rounding level: its
    # gradient is at least as small as sklearn's, and tiny
    g_ours = logistic_gradient(X, y, ours.coef_, ours.intercept_, 1.0, w)
    g_ref = logistic_gradient(X, y, ref.coef_, ref.intercept_, 1.0, w)
    assert g_ours <= max(g_ref, 1e-8)
    if n_classes > 2:
        assert abs(ours.intercept_.sum()) < 1e-12  # centred


@pytest.mark.parametrize(
    "case", ["binary, 10 features", "3 classes", "5 classes, 50 features", "binary, 500 features"]
)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_logistic_defaults_match_sklearn(rng, case, weighted):
    """tol=1e-4, max_iter=100 on both sides: (nearly) the same L-BFGS path."""
    n, d, n_classes = LOGISTIC_CASES[case]
    X, y = classification_data(rng, n, d, n_classes)
    w = weights(rng, n) if weighted else None
    ours = mlserve.LogisticRegression(C=1.0, fit_intercept=True, max_iter=100, tol=1e-4)
    assert ours.fit(X, y, sample_weight=w) is ours
    ref = sklearn_linear.LogisticRegression().fit(X, y, sample_weight=w)
    np.testing.assert_allclose(
        _full(ours.coef_, ours.intercept_), _full(ref.coef_, ref.intercept_),
        rtol=0, atol=LOGISTIC_ATOL,
    )
    assert ours.n_iter_[0] == pytest.approx(ref.n_iter_[0], abs=2)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("C", [0.01, 100.0])
def test_logistic_regularisation_and_no_intercept(rng, n_classes, C):
    X, y = classification_data(rng, 600, 8, n_classes)
    for fit_intercept in (True, False):
        ours = mlserve.LogisticRegression(C=C, fit_intercept=fit_intercept, **TIGHT).fit(X, y)
        ref = sklearn_linear.LogisticRegression(C=C, fit_intercept=fit_intercept, **TIGHT).fit(X, y)
        np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=0, atol=LOGISTIC_ATOL)
        np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=0, atol=LOGISTIC_ATOL)
        if not fit_intercept:
            assert np.all(ours.intercept_ == 0.0)


@pytest.mark.parametrize(
    "labels",
    [["cat", "dog"], ["no", "yes", "maybe"], [-1, 1], [1.0, 2.0, 4.0, 8.0]],
    ids=["str-binary", "str-3", "int", "float-4"],
)
def test_logistic_class_labels(rng, labels):
    X, y = classification_data(rng, 500, 6, len(labels), labels=labels)
    ours = mlserve.LogisticRegression(**TIGHT).fit(X, y)
    ref = sklearn_linear.LogisticRegression(**TIGHT).fit(X, y)
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=0, atol=LOGISTIC_ATOL)
    pred = ours.predict(X)
    np.testing.assert_array_equal(pred, ref.predict(X))
    assert ours.score(X, y) == ref.score(X, y)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_badly_scaled_features_converge(rng, n_classes):
    """Feature scales over three decades: many line searches have to
    interpolate rather than take the unit step, and the fit must still reach
    tol (max |gradient| of the scaled objective, which is strictly convex, so
    this certifies the optimum)."""
    n, d = 800, 8
    Z = rng.normal(size=(n, d))
    W = rng.normal(size=(n_classes, d))
    y = np.argmax(Z @ W.T + rng.gumbel(size=(n, n_classes)), axis=1)
    X = Z * 10.0 ** rng.uniform(-1.5, 1.5, size=d) + rng.normal(size=d)
    for tol in (1e-4, 1e-7):
        ours = mlserve.LogisticRegression(tol=tol, max_iter=10000).fit(X, y)
        assert ours.n_iter_[0] < 10000
        assert logistic_gradient(X, y, ours.coef_, ours.intercept_, 1.0) <= tol * (1 + 1e-6)


def test_logistic_float32_input(rng):
    X, y = classification_data(rng, 800, 10, 3)
    X32 = X.astype(np.float32)
    ours = mlserve.LogisticRegression(**TIGHT).fit(X32, y)
    ref = sklearn_linear.LogisticRegression(**TIGHT).fit(X32.astype(np.float64), y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=0, atol=LOGISTIC_ATOL)
    # sklearn fits float32 in float32 precision: agreement to that level
    ref32 = sklearn_linear.LogisticRegression(**TIGHT).fit(X32, y)
    np.testing.assert_allclose(ours.coef_, ref32.coef_, rtol=0, atol=1e-3)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_logistic_methods_match_sklearn_for_same_coefficients(rng, n_classes):
    X, y = classification_data(rng, 300, 12, n_classes, labels=list("abcd")[:n_classes])
    ours = mlserve.LogisticRegression().fit(X, y)
    ref = sklearn_linear.LogisticRegression().fit(X, y)
    ref.coef_ = ours.coef_.copy()
    ref.intercept_ = ours.intercept_.copy()
    assert_same_predictions(ours.decision_function(X), X, ref.decision_function(X))
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=PRED_RTOL,
                               atol=1e-15)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.score(X, y) == ref.score(X, y)


def test_logistic_integer_weights_equal_repeated_rows(rng):
    X, y = classification_data(rng, 200, 5, 3)
    w = rng.integers(0, 4, size=200)
    rows = np.repeat(np.arange(200), w)
    a = mlserve.LogisticRegression(**TIGHT).fit(X, y, sample_weight=w.astype(float))
    b = mlserve.LogisticRegression(**TIGHT).fit(X[rows], y[rows])
    np.testing.assert_allclose(_full(a.coef_, a.intercept_), _full(b.coef_, b.intercept_),
                               rtol=0, atol=1e-7)


def test_fit_does_not_modify_inputs(rng):
    X, y = regression_data(rng, 100, 6)
    w = weights(rng, 100)
    Xc, yc, wc = X.copy(), y.copy(), w.copy()
    labels = (y > np.median(y)).astype(int)
    for est, target in [
        (mlserve.LinearRegression(), y),
        (mlserve.Ridge(alpha=3.0), y),
        (mlserve.LogisticRegression(), labels),
    ]:
        est.fit(X, target, sample_weight=w)
        np.testing.assert_array_equal(X, Xc)
        np.testing.assert_array_equal(y, yc)
        np.testing.assert_array_equal(w, wc)
