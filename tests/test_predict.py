"""Prediction in C: parity with scikit-learn, input intake, errors, threads."""
import threading

import numpy as np
import pytest
from memory_support import steady_rss_growth

import mlserve

sklearn_linear = pytest.importorskip("sklearn.linear_model")


def make_regression(rng, n=300, d=20, k=None):
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(d,) if k is None else (d, k))
    return X, X @ W + 0.5 + 0.01 * rng.normal(size=(n,) if k is None else (n, k))


def converted_regressor(rng, d=20, k=None, cls=None):
    X, y = make_regression(rng, d=d, k=k)
    reference = (cls or sklearn_linear.LinearRegression)().fit(X, y)
    return X, reference, mlserve.convert(reference)


@pytest.mark.parametrize("d", [1, 20, 500])
@pytest.mark.parametrize("k", [None, 3])
def test_regression_parity(rng, d, k):
    X, ref, model = converted_regressor(rng, d=d, k=k)
    np.testing.assert_allclose(model.predict(X), ref.predict(X), rtol=1e-8, atol=1e-12)
    assert model.predict(X).shape == ref.predict(X).shape


def test_ridge_conversion_parity(rng):
    X, ref, model = converted_regressor(rng, cls=sklearn_linear.Ridge)
    assert isinstance(model, mlserve.Ridge) and model.alpha == ref.alpha
    np.testing.assert_allclose(model.predict(X), ref.predict(X), rtol=1e-8, atol=1e-12)


def test_collinear_columns_parity(rng):
    X = rng.normal(size=(100, 5))
    X = np.hstack([X, X[:, :2] * 2.0])  # exactly collinear
    y = X[:, 0] - X[:, 3] + 1
    ref = sklearn_linear.LinearRegression().fit(X, y)
    np.testing.assert_allclose(mlserve.convert(ref).predict(X), ref.predict(X), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("labels", [[0, 1], [-1, 7, 9], ["cat", "dog"], ["a", "b", "c", "d"], [1.0, 2.0, 3.0]])
def test_classifier_parity(rng, labels):
    X = rng.normal(size=(300, 8))
    y = np.asarray(labels)[(np.abs(X[:, :2].sum(axis=1) * 3).astype(int)) % len(labels)]
    ref = sklearn_linear.LogisticRegression(max_iter=1000).fit(X, y)
    model = mlserve.convert(ref)
    np.testing.assert_array_equal(model.classes_, ref.classes_)
    pred = model.predict(X)
    np.testing.assert_array_equal(pred, ref.predict(X))
    assert pred.dtype == ref.predict(X).dtype
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), rtol=1e-8, atol=1e-15)
    np.testing.assert_allclose(model.decision_function(X), ref.decision_function(X), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(model.predict_log_proba(X), ref.predict_log_proba(X), rtol=1e-8, atol=1e-12)


def test_float32_model(rng):
    X, ref, _ = converted_regressor(rng)
    model = mlserve.convert(ref, dtype=np.float32)
    assert model.model_.dtype == "float32"
    out = model.predict(X.astype(np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref.predict(X), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------- intake


@pytest.fixture
def regressor(rng):
    X, ref, model = converted_regressor(rng)
    return X, ref.predict(X), model


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda X: X, id="float64-C"),
        pytest.param(lambda X: np.asfortranarray(X), id="float64-F"),
        pytest.param(lambda X: np.repeat(X, 2, axis=0)[::2], id="strided-rows"),
        pytest.param(lambda X: np.repeat(X, 2, axis=1)[:, ::2], id="strided-cols"),
        pytest.param(lambda X: X.tolist(), id="list"),
        pytest.param(lambda X: tuple(tuple(r) for r in X), id="tuple"),
        pytest.param(lambda X: X.astype(">f8"), id="big-endian"),
    ],
)
def test_intake_layouts(regressor, transform):
    X, expected, model = regressor
    np.testing.assert_allclose(model.predict(transform(X)), expected, rtol=1e-10, atol=1e-12)


def test_intake_float32_converts_once_exactly(regressor):
    X, _, model = regressor
    X32 = X.astype(np.float32)
    np.testing.assert_array_equal(model.predict(X32), model.predict(X32.astype(np.float64)))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_])
def test_intake_integer_and_bool(regressor, dtype):
    X, _, model = regressor
    Xi = (X > 0).astype(dtype)
    np.testing.assert_allclose(model.predict(Xi), model.predict(Xi.astype(np.float64)), rtol=1e-12)


def test_single_row_1d_and_list(regressor):
    X, expected, model = regressor
    for row in (X[3], X[3].tolist(), list(X[3].astype(np.float32).tolist())):
        out = model.predict(row)
        assert out.shape == (1,)
    np.testing.assert_allclose(model.predict(X[3]), expected[3:4], rtol=1e-12)
    np.testing.assert_allclose(model.predict([int(v > 0) for v in X[3]]), model.predict((X[3] > 0) * 1.0))


def test_object_array_of_numbers_is_converted(regressor):
    X, expected, model = regressor
    np.testing.assert_allclose(model.predict(X.astype(object)), expected, rtol=1e-10)


def test_numpy_scalars_in_list(regressor):
    X, expected, model = regressor
    row = [np.float32(v) for v in X[0]]
    np.testing.assert_allclose(model.predict(row), model.predict(X[0].astype(np.float32)), rtol=1e-12)


@pytest.mark.parametrize(
    "bad, exc, message",
    [
        (np.zeros((4, 19)), ValueError, "expected 20 features, got 19"),
        (np.zeros(21), ValueError, "expected 20 features, got 21"),
        ([[0.0] * 20, [0.0] * 19], ValueError, "ragged input: row 1 has 19 values, row 0 has 20"),
        ([[0.0] * 20, 1.0], ValueError, "ragged input: row 0 is a list but row 1 is float"),
        ([0.0] * 19 + ["x"], TypeError, "expected a number at row 0, column 19, got str"),
        ([0.0] * 19 + [None], TypeError, "expected a number at row 0, column 19, got NoneType"),
        ([0.0] * 19 + [object()], TypeError, "expected a number at row 0, column 19, got object"),
        ([0.0] * 19 + [10**400], ValueError, "number too large for float64 at row 0, column 19"),
        ([], ValueError, "expected at least 1 row, got 0"),
        (np.zeros((0, 20)), ValueError, "expected at least 1 row, got 0"),
        (np.zeros((2, 2, 20)), ValueError, "expected a 1-D row or a 2-D batch of rows, got an array with 3 dimensions"),
        (np.float64(1.0), ValueError, "got an array with 0 dimensions"),
        (np.array(["1.0"] * 20), TypeError, "expected numbers .* got an array of dtype <U3"),
        (np.zeros(20, dtype=complex), TypeError, "got an array of dtype complex128"),
        (np.array([None] * 20), TypeError, "expected a number at row 0, column 0, got NoneType"),
        (np.zeros((2, 2, 20), dtype=object), ValueError, "got an array with 3 dimensions"),
        ([[[0.0] * 20]], ValueError, "got lists nested deeper at row 0, column 0"),
        ("not an array", TypeError, "expected numbers"),
        (None, TypeError, "expected numbers .*, got NoneType"),
        ({"a": 1}, TypeError, "expected numbers .*, got dict"),
    ],
)
def test_bad_input_errors(regressor, bad, exc, message):
    _, _, model = regressor
    with pytest.raises(exc, match=message):
        model.predict(bad)


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")])
def test_nan_and_inf_rejected_with_position(regressor, value, word):
    X, _, model = regressor
    X = X[:5].copy()
    X[3, 7] = value
    with pytest.raises(ValueError, match=f"input contains {word} at row 3, column 7; this model does not accept NaN or infinity"):
        model.predict(X)
    with pytest.raises(ValueError, match=word):
        model.predict(X.astype(np.float32))


def test_nan_position_is_counted_across_blocks(rng):
    X = rng.normal(size=(6000, 3))
    model = mlserve.convert(sklearn_linear.LogisticRegression().fit(X, X[:, 0] > 0))
    X[5000, 2] = np.nan
    for method in (model.predict, model.predict_proba, model.decision_function):
        with pytest.raises(ValueError, match="NaN at row 5000, column 2"):
            method(X)


def test_overflowing_scores_from_finite_input_are_returned(rng):
    X, ref, model = converted_regressor(rng, d=2)
    big = np.array([[1e308, 1e308]])
    np.testing.assert_array_equal(model.predict(big), ref.predict(big))


def test_classifier_rejects_nan(rng):
    X = rng.normal(size=(50, 3))
    model = mlserve.convert(sklearn_linear.LogisticRegression().fit(X, X[:, 0] > 0))
    for method in (model.predict, model.predict_proba, model.decision_function):
        with pytest.raises(ValueError, match="NaN at row 0, column 1"):
            method([0.0, np.nan, 0.0])


def test_input_not_modified(regressor):
    X, _, model = regressor
    for arr in (X.copy(), np.asfortranarray(X), X.astype(np.float32)):
        before = arr.copy()
        model.predict(arr)
        np.testing.assert_array_equal(arr, before)


def test_contiguous_input_is_not_copied(regressor):
    """Zero-copy intake: predicting on 8 MB of rows allocates only the output."""
    import tracemalloc

    _, _, model = regressor
    X = np.random.default_rng(1).normal(size=(50_000, 20))
    model.predict(X[:10])
    tracemalloc.start()
    try:
        model.predict(X)
        _, peak_contiguous = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        model.predict(np.asfortranarray(X))
        _, peak_fortran = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    output_bytes = 50_000 * 8
    assert peak_contiguous < output_bytes + 64 * 1024
    assert peak_fortran >= X.nbytes  # the one conversion, for contrast


def test_unfitted_estimator_raises():
    for est in (mlserve.LinearRegression(), mlserve.Ridge(), mlserve.LogisticRegression()):
        with pytest.raises(mlserve.NotFittedError, match="is not fitted yet"):
            est.predict([[1.0]])


def test_regressor_has_no_proba(regressor):
    _, _, model = regressor
    with pytest.raises(NotImplementedError, match="no predict_proba"):
        model.model_.predict_proba([0.0] * 20)


# ----------------------------------------------------------------- threads


def test_concurrent_predict_is_bit_identical(rng):
    X = rng.normal(size=(2000, 64))
    ref = sklearn_linear.LogisticRegression(max_iter=500).fit(X, (X[:, :3].sum(axis=1) * 2).astype(int) % 4)
    model = mlserve.convert(ref)
    expected = model.predict_proba(X)
    expected_rows = [model.predict_proba(X[i]) for i in range(0, 2000, 97)]
    results, errors = [], []

    def worker():
        try:
            for _ in range(20):
                results.append(model.predict_proba(X))
                for j, i in enumerate(range(0, 2000, 97)):
                    assert np.array_equal(model.predict_proba(X[i]), expected_rows[j])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert len(results) == 160
    for r in results:
        assert np.array_equal(r, expected)


def test_set_num_threads_is_respected():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    original = mlserve.get_num_threads()
    try:
        mlserve.set_num_threads(2)
        assert mlserve.get_num_threads() == 2
        ours = [
            info
            for info in threadpoolctl.threadpool_info()
            if info["internal_api"] == "openblas" and info["filepath"] == mlserve.blas_library_path()
        ]
        assert ours and ours[0]["num_threads"] == 2
        with pytest.raises(ValueError, match="between 1 and 1024"):
            mlserve.set_num_threads(0)
        with pytest.raises(TypeError):
            mlserve.set_num_threads(1.5)
    finally:
        mlserve.set_num_threads(original)


def test_default_thread_count_is_one_for_serving():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import mlserve; print(mlserve.get_num_threads())"],
        capture_output=True, text=True, check=True,
        env={k: v for k, v in __import__("os").environ.items() if k != "MLSERVE_NUM_THREADS"},
    )
    assert out.stdout.strip() == "1"


def test_repeated_calls_do_not_leak(regressor):
    X, _, model = regressor
    rows = X[:64]
    bad = np.zeros((3, 19))

    def burst():
        for _ in range(1000):
            model.predict(rows)
            model.predict(rows[0].tolist())
            try:
                model.predict(bad)
            except ValueError:
                pass
            try:
                model.predict([[1.0] * 20, [1.0]])
            except ValueError:
                pass

    def rounds():
        for _ in range(5):
            burst()

    grown = steady_rss_growth(rounds)
    assert grown < 2 * 1024 * 1024, f"RSS grew by {grown} bytes over 5000 calls in every round"


# ------------------------------------------------------------- error model


def test_every_status_maps_to_one_exception_class():
    from mlserve import _core

    expected = {
        "MLS_STATUS_ERR_NOMEM": MemoryError,
        "MLS_STATUS_ERR_SHAPE": ValueError,
        "MLS_STATUS_ERR_VALUE": ValueError,
        "MLS_STATUS_ERR_ARGUMENT": ValueError,
        "MLS_STATUS_ERR_TYPE": TypeError,
        "MLS_STATUS_ERR_FORMAT": mlserve.ModelFormatError,
        "MLS_STATUS_ERR_VERSION": mlserve.ModelFormatError,
        "MLS_STATUS_ERR_IO": OSError,
        "MLS_STATUS_ERR_UNSUPPORTED": NotImplementedError,
        "MLS_STATUS_ERR_NUMERIC": FloatingPointError,
    }
    names = _core.status_names()
    assert names[0] == "MLS_STATUS_OK"
    assert sorted(names[1:]) == sorted(expected)
    for code, name in enumerate(names[1:], start=1):
        with pytest.raises(BaseException) as info:
            _core._raise_status(code, f"message {code}")
        assert type(info.value) is expected[name], name
        assert str(info.value) == f"message {code}"
    assert issubclass(mlserve.ModelFormatError, mlserve.MLServeError)
    assert issubclass(mlserve.ModelFormatError, ValueError)
    assert mlserve.Model.__module__ == "mlserve" and mlserve.Model.__name__ == "Model"
