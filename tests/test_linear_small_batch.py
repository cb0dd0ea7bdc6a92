"""Linear predict for micro-batches: the small-batch kernel (csrc/mls_gemm_small.c).

From 2 rows up to a cutoff, a model whose weights dwarf the batch (enough
features and outputs: blas_info()["gemm_small_*"], see kernel_max_rows) scores
through mls_gemm_small instead of GEMM; 1 row stays on GEMV, larger batches
and other shapes on GEMM. Checked here: parity with NumPy around every
boundary, strided inputs, the NaN/inf policy, and that a row's result is
bit-identical whatever batch it is in. Each kernel variant the CPU supports
(MLSERVE_GEMM_SMALL=c|avx2|avx512, read once per process) and the kernel
switched off run the same checks in a subprocess.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import mlserve

sklearn_linear = pytest.importorskip("sklearn.linear_model")

MAX_ROWS = 40
KERNEL_OFF_REASON = (
    "the small-batch kernel is off in this process (MLSERVE_GEMM_SMALL=off, or a CPU "
    "without AVX2, where it loses to GEMM), so batches go to GEMM; "
    "test_variant_in_subprocess forces each variant"
)
# (d, k) in the kernel's range for rows 2..40: d and k off the vector widths
# (d % 16 = 1 and 8; k % 4 = 3, 2, 1: a narrower last tile), d within one
# 512-byte feature block or across many, and whole vectors only.
KERNEL_SHAPES = [(129, 1027), (3001, 650), (200, 1025), (136, 642), (128, 1024)]
# shapes the kernel leaves to GEMM (too few features or outputs): k = 2 and
# 3, d = 1. Every shape has rows * k * d > 8192 from 2 rows, so no batch takes
# the plain loops that small models use.
GEMM_SHAPES = [(37, 300), (2, 5000), (1, 9000), (3001, 2), (2500, 3)]


def build(d, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    sk = sklearn_linear.Ridge()
    sk.coef_ = rng.standard_normal((k, d))
    sk.intercept_ = rng.standard_normal(k)
    sk.n_features_in_ = d
    model = mlserve.convert(sk, dtype=dtype)
    coef = sk.coef_.astype(dtype).astype(np.float64)
    intercept = sk.intercept_.astype(dtype).astype(np.float64)
    return model, coef, intercept


def reference(X, coef, intercept):
    """X @ coef.T + intercept in float64, and a bound on its rounding error
    in the model's dtype (sum of |x * w| scaled by the dtype's epsilon)."""
    X = np.asarray(X, dtype=np.float64)
    exact = X @ coef.T + intercept
    magnitude = np.abs(X) @ np.abs(coef).T + np.abs(intercept)
    return exact, magnitude


def assert_parity(got, X, coef, intercept, dtype):
    exact, magnitude = reference(X, coef, intercept)
    eps = np.finfo(dtype).eps
    d = coef.shape[1]
    bound = (4 + 2 * np.sqrt(d)) * eps * magnitude + np.finfo(dtype).tiny
    assert got.dtype == dtype
    assert got.shape == exact.shape
    err = np.abs(got.astype(np.float64) - exact)
    assert np.all(err <= bound), f"max error / bound = {np.max(err / bound):.3g}"


def kernel_max_rows(d, k, dtype):
    """Batches of 2 to this many rows go through the kernel (mls_linear.c)."""
    info = mlserve._core.blas_info()
    if d < info["gemm_small_min_features"]:
        return 0
    return min(info["gemm_small_max_rows"][np.dtype(dtype).name], k // info["gemm_small_outputs_per_row"])


# ------------------------------------------------------------------ parity


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d, k", KERNEL_SHAPES + GEMM_SHAPES)
def test_parity_rows_1_to_40(d, k, dtype):
    model, coef, intercept = build(d, k, dtype)
    X = np.random.default_rng(1).standard_normal((MAX_ROWS, d)).astype(dtype)
    for n in range(1, MAX_ROWS + 1):
        assert_parity(model.predict(X[:n]), X[:n], coef, intercept, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parity_past_the_cutoff_and_super_block(dtype):
    # 32 rows make one super-block of the kernel; around the cutoff the
    # path changes from the kernel to GEMM
    model, coef, intercept = build(130, 1100, dtype)
    X = np.random.default_rng(2).standard_normal((200, 130)).astype(dtype)
    cut = kernel_max_rows(130, 1100, dtype)
    for n in sorted({2, 31, 32, 33, 63, 64, 65, cut - 1, cut, cut + 1, 150} - {0, 1}):
        assert_parity(model.predict(X[:n]), X[:n], coef, intercept, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(lambda X: np.asfortranarray(X), id="F"),
        pytest.param(lambda X: np.repeat(X, 2, axis=0)[::2], id="strided-rows"),
        pytest.param(lambda X: np.hstack([X, X])[:, : X.shape[1]], id="padded-rows"),
        pytest.param(lambda X: np.repeat(X, 2, axis=1)[:, ::2], id="strided-cols"),
        pytest.param(lambda X: np.ascontiguousarray(X[::-1])[::-1], id="negative-stride"),
        pytest.param(lambda X: X.tolist(), id="list"),
    ],
)
def test_layouts(layout, dtype):
    # the same values in another layout (zero-copy with a row stride, or
    # copied): the same kernel, so the same bits
    model, _, _ = build(133, 1100, dtype)
    X = np.random.default_rng(3).standard_normal((12, 133)).astype(dtype)
    np.testing.assert_array_equal(model.predict(layout(X)), model.predict(X))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_other_input_dtype_is_converted(dtype):
    model, coef, intercept = build(133, 1100, dtype)
    other = np.float32 if dtype == np.float64 else np.float64
    X = np.random.default_rng(3).standard_normal((12, 133)).astype(other)
    np.testing.assert_array_equal(model.predict(X), model.predict(X.astype(dtype)))
    assert_parity(model.predict(X), X.astype(dtype), coef, intercept, dtype)


def test_input_not_modified():
    model, _, _ = build(200, 700, np.float64)
    X = np.random.default_rng(4).standard_normal((8, 200))
    before = X.copy()
    model.predict(X)
    np.testing.assert_array_equal(X, before)


# ----------------------------------------------------------- NaN and inf


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows", [2, 5, 16])
@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")])
def test_nan_and_inf_rejected_with_position(rows, value, word, dtype):
    model, _, _ = build(150, 700, dtype)
    X = np.random.default_rng(5).standard_normal((rows, 150)).astype(dtype)
    X[rows - 1, 147] = value  # in the masked tail of the row for every vector width
    with pytest.raises(
        ValueError,
        match=f"input contains {word} at row {rows - 1}, column 147; "
        "this model does not accept NaN or infinity",
    ):
        model.predict(X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_overflowing_scores_from_finite_input_are_returned(dtype):
    d, k = 200, 700
    rng = np.random.default_rng(6)
    sk = sklearn_linear.Ridge()
    sk.coef_ = np.abs(rng.standard_normal((k, d))) + 1.0
    sk.intercept_ = np.zeros(k)
    sk.n_features_in_ = d
    model = mlserve.convert(sk, dtype=dtype)
    big = np.full((4, d), np.finfo(dtype).max / 2, dtype=dtype)
    big[1] *= -1
    out = model.predict(big)
    assert np.all(out[1] == -np.inf) and np.all(np.isposinf(out[[0, 2, 3]]))


# ------------------------------------------------------------ determinism


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d, k", [(129, 1030), (300, 1027)])
def test_row_result_does_not_depend_on_the_batch(d, k, dtype):
    cut = kernel_max_rows(d, k, dtype)
    if cut < 2:
        pytest.skip(KERNEL_OFF_REASON)
    model, _, _ = build(d, k, dtype)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((cut, d)).astype(dtype)
    others = rng.standard_normal((cut, d)).astype(dtype)
    full = model.predict(X)
    # every batch size in the kernel's range, each row at every position
    for n in range(2, cut + 1):
        np.testing.assert_array_equal(model.predict(X[:n]), full[:n])
        np.testing.assert_array_equal(model.predict(X[cut - n :]), full[cut - n :])
    for i in range(cut):
        # next to a stranger, first and last, and amid strangers in the largest batch
        pair = model.predict(np.stack([X[i], others[i]]))
        assert np.array_equal(pair[0], full[i])
        pair = model.predict(np.stack([others[i], X[i]]))
        assert np.array_equal(pair[1], full[i])
        mixed = others.copy()
        mixed[(i * 7) % cut] = X[i]
        assert np.array_equal(model.predict(mixed)[(i * 7) % cut], full[i])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_range_of_a_wide_model(dtype):
    info = mlserve._core.blas_info()
    if info["gemm_small"] == "off":
        pytest.skip(KERNEL_OFF_REASON)
    # the micro-batch case the kernel is for: 2048 features x 1024 outputs
    assert kernel_max_rows(2048, 1024, dtype) == {np.float64: 32, np.float32: 64}[dtype]
    assert kernel_max_rows(127, 100000, dtype) == 0


def test_one_row_and_large_batches_match_closely():
    # 1 row (GEMV) and large batches (GEMM) sum in other orders: the same
    # value within rounding, not necessarily the same bits
    model, coef, intercept = build(300, 50, np.float64)
    X = np.random.default_rng(8).standard_normal((300, 300))
    batch = model.predict(X)
    for i in (0, 1, 17):
        np.testing.assert_allclose(model.predict(X[i]), batch[i:i + 1], rtol=1e-12, atol=1e-12)
    assert_parity(batch, X, coef, intercept, np.float64)


# ----------------------------------------------------------- the variants


def _supported_variants():
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        pass
    variants = ["off", "c"]
    if " avx2" in flags and " fma" in flags:
        variants.append("avx2")
    if " avx512f" in flags and " fma" in flags:
        variants.append("avx512")
    return variants


def run_checks():
    """The parity and determinism checks for the variant this process runs."""
    for dtype in (np.float64, np.float32):
        for d, k in [(129, 1100), (1001, 642), (37, 300), (3001, 2)]:
            model, coef, intercept = build(d, k, dtype)
            X = np.random.default_rng(9).standard_normal((70, d)).astype(dtype)
            full = model.predict(X[:2])
            for n in (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 40, 63, 64, 65, 70):
                got = model.predict(X[:n])
                assert_parity(got, X[:n], coef, intercept, dtype)
                if 2 <= n <= kernel_max_rows(d, k, dtype):
                    assert np.array_equal(got[:2], full), (d, k, n)
            assert np.array_equal(model.predict(X[1::-1])[::-1], full)
    print(mlserve._core.blas_info()["gemm_small"])


@pytest.fixture(scope="module")
def variant_runs():
    """Every variant's run_checks, in subprocesses started together."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(mlserve.__file__)))
    procs = {}
    for variant in _supported_variants():
        env = dict(os.environ, MLSERVE_GEMM_SMALL=variant)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        procs[variant] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "run-checks"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return {variant: (p.communicate(timeout=300)[0], p.returncode) for variant, p in procs.items()}


@pytest.mark.parametrize("variant", _supported_variants())
def test_variant_in_subprocess(variant, variant_runs):
    output, returncode = variant_runs[variant]
    assert returncode == 0, output
    assert output.split()[-1] == variant  # the variant asked for really ran


if __name__ == "__main__" and sys.argv[1:] == ["run-checks"]:
    run_checks()
