"""mlserve.ALS: the C conjugate-gradient solver against implicit and NumPy,
factor quality on a held-out split, determinism, progress, the GIL, and
input validation (messages pinned)."""

from __future__ import annotations

import threading
import time

import implicit.cpu._als as implicit_als
import numpy as np
import pytest
from als_support import (
    as_implicit_confidence,
    make_interactions,
    precision_at_k,
    split_held_out,
)
from implicit.cpu.als import AlternatingLeastSquares
from memory_support import steady_rss_growth
from scipy import sparse
from threadpoolctl import threadpool_limits

import mlserve
from mlserve import _core


@pytest.fixture(scope="module")
def interactions():
    """3000 users x 1500 items, ~60k interactions, and its held-out split."""
    matrix = make_interactions(3000, 1500, 60_000, rank=12, seed=3)
    train, test = split_held_out(matrix, seed=4)
    return matrix, train, test


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # implicit warns (an error under filterwarnings=error) when OpenBLAS has a
    # thread pool; scipy's BLAS is loaded by the implicit import above
    with threadpool_limits(1, user_api="blas"):
        yield


def csr_arrays(matrix):
    return (
        matrix.indptr.astype(np.int64),
        matrix.indices.astype(np.int32),
        matrix.data.astype(np.float32),
    )


def dense_solve(matrix, other, alpha, regularization):
    """The exact ALS row solutions, with NumPy in float64."""
    Y = other.astype(np.float64)
    gram = Y.T @ Y + regularization * np.eye(Y.shape[1])
    out = np.zeros((matrix.shape[0], Y.shape[1]))
    for u in range(matrix.shape[0]):
        lo, hi = matrix.indptr[u], matrix.indptr[u + 1]
        items, r = matrix.indices[lo:hi], matrix.data[lo:hi].astype(np.float64)
        keep = r > 0
        items, r = items[keep], r[keep]
        if items.size == 0:
            continue
        Yu = Y[items]
        A = gram + Yu.T @ (alpha * r[:, None] * Yu)
        b = Yu.T @ (1 + alpha * r)
        out[u] = np.linalg.solve(A, b)
    return out


# ------------------------------------------------------------------ the solver


def test_one_half_step_matches_implicit_cg(interactions, rng):
    _, train, _ = interactions
    f, alpha, reg = 24, 2.0, 0.1
    X0 = (rng.random((train.shape[0], f)) * 0.01).astype(np.float32)
    Y = rng.normal(size=(train.shape[1], f)).astype(np.float32) * 0.3
    ours = X0.copy()
    _core.als_solve(*csr_arrays(train), ours, Y, alpha, reg, 3, 1)
    theirs = X0.copy()
    implicit_als.least_squares_cg(
        as_implicit_confidence(train, alpha), theirs, Y, reg, 1, 3
    )
    np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=2e-4)
    assert np.abs(ours - X0).max() > 0.1  # it did move


def test_many_cg_steps_reach_the_exact_solution(interactions, rng):
    _, train, _ = interactions
    sub = train[:200]
    f, alpha, reg = 16, 1.5, 0.5
    Y = rng.normal(size=(sub.shape[1], f)).astype(np.float32) * 0.2
    X = np.zeros((sub.shape[0], f), np.float32)
    _core.als_solve(*csr_arrays(sub), X, Y, alpha, reg, 40, 2)
    np.testing.assert_allclose(X, dense_solve(sub, Y, alpha, reg), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("f", [1, 7, 16, 33, 64])
def test_factor_dimensions_off_the_vector_width(f, rng):
    # tails of the AVX2 / AVX-512 loops: f not a multiple of 8 or 16
    matrix = sparse.random(
        60, 40, density=0.2, format="csr", random_state=1, dtype=np.float32
    )
    matrix.data = np.ceil(matrix.data * 5)
    Y = rng.normal(size=(40, f)).astype(np.float32)
    X = np.zeros((60, f), np.float32)
    _core.als_solve(*csr_arrays(matrix), X, Y, 1.0, 1.0, max(40, 2 * f), 1)
    np.testing.assert_allclose(
        X, dense_solve(matrix, Y, 1.0, 1.0), rtol=2e-3, atol=2e-4
    )


def test_fold_in_is_the_exact_least_squares_solution(interactions, rng):
    _, train, _ = interactions
    new_users = train[:50]
    Y = rng.normal(size=(train.shape[1], 20)).astype(np.float32) * 0.3
    got = _core.als_fold_in(*csr_arrays(new_users), Y, _core.als_gram(Y, 0.2), 3.0)
    np.testing.assert_allclose(
        got, dense_solve(new_users, Y, 3.0, 0.2), rtol=1e-4, atol=1e-5
    )
    # and implicit's Cholesky solver (recalculate_user) agrees
    theirs = np.zeros_like(got)
    implicit_als.least_squares(
        as_implicit_confidence(new_users, 3.0), theirs, Y, 0.2, 1
    )
    np.testing.assert_allclose(got, theirs, rtol=1e-3, atol=1e-4)


def test_rows_without_entries_and_explicit_zeros(rng):
    dense = np.array([[0, 2, 0, 1], [0, 0, 0, 0], [3, 0, 0, 0]], np.float32)
    matrix = sparse.csr_matrix(dense)
    # store an explicit zero for (user 0, item 2): the same as no entry
    with_zero = sparse.csr_matrix(
        (
            np.array([2, 0, 1, 3], np.float32),
            np.array([1, 2, 3, 0]),
            np.array([0, 3, 3, 4]),
        ),
        shape=(3, 4),
    )
    Y = rng.normal(size=(4, 3)).astype(np.float32)
    a = np.ones((3, 3), np.float32)
    b = np.ones((3, 3), np.float32)
    _core.als_solve(*csr_arrays(matrix), a, Y, 1.0, 0.1, 3, 1)
    _core.als_solve(*csr_arrays(with_zero), b, Y, 1.0, 0.1, 3, 1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[1], 0)  # no interactions: zero factors


def test_gram_is_yty_plus_regularization(rng):
    Y = rng.normal(size=(500, 24)).astype(np.float32)
    want = Y.astype(np.float64).T @ Y + 0.3 * np.eye(24)
    np.testing.assert_allclose(_core.als_gram(Y, 0.3), want, rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------ quality


def test_precision_metric_matches_implicit_evaluation(interactions):
    _, train, test = interactions
    from implicit.evaluation import precision_at_k as implicit_precision

    model = AlternatingLeastSquares(
        factors=16, iterations=5, random_state=0, num_threads=1
    )
    model.fit(as_implicit_confidence(train, 1.0), show_progress=False)
    ours = precision_at_k(model.user_factors, model.item_factors, train, test, k=10)
    theirs = implicit_precision(
        model, train, test, K=10, show_progress=False, num_threads=1
    )
    assert ours == pytest.approx(theirs, abs=2e-3)


def test_held_out_precision_at_least_095_of_implicit(interactions):
    _, train, test = interactions
    params = {"factors": 32, "regularization": 0.05, "iterations": 15}
    users, items = mlserve.ALS(**params, alpha=2.0, random_state=0).fit_factors(train)
    ours = precision_at_k(users, items, train, test)
    model = AlternatingLeastSquares(**params, alpha=1.0, random_state=0, num_threads=0)
    model.fit(as_implicit_confidence(train, 2.0), show_progress=False)
    theirs = precision_at_k(model.user_factors, model.item_factors, train, test)
    popularity = np.asarray(train.sum(axis=0)).ravel()[:, None].astype(np.float32)
    baseline = precision_at_k(
        np.ones((train.shape[0], 1), np.float32), popularity, train, test
    )
    print(
        f"precision@10: mlserve {ours:.4f}, implicit {theirs:.4f}, popularity {baseline:.4f}"
    )
    assert ours >= 0.95 * theirs
    assert ours > 1.5 * baseline  # the factors learned more than popularity


def test_factors_are_float32_and_shaped(interactions):
    _, train, _ = interactions
    users, items = mlserve.ALS(factors=8, iterations=2, random_state=0).fit_factors(
        train
    )
    assert users.dtype == np.float32 and users.shape == (train.shape[0], 8)
    assert items.dtype == np.float32 and items.shape == (train.shape[1], 8)
    assert users.flags.c_contiguous and items.flags.c_contiguous


# ------------------------------------------------------------------ the Recommender it returns


@pytest.fixture(scope="module")
def fitted(interactions):
    _, train, _ = interactions
    als = mlserve.ALS(
        factors=24, regularization=0.05, iterations=10, alpha=4.0, random_state=2
    )
    return als, als.fit(train)


def test_fit_returns_a_recommender_with_the_factors(interactions, fitted):
    _, train, _ = interactions
    als, rec = fitted
    assert isinstance(rec, mlserve.Recommender)
    users, items = als.fit_factors(train)
    np.testing.assert_array_equal(rec.user_factors, users)
    np.testing.assert_array_equal(rec.item_factors, items)
    assert rec.regularization == 0.05 and rec.alpha == 4.0
    assert rec.dtype == np.float32


def test_recommend_is_the_numpy_top_k_without_train_items(interactions, fitted):
    _, train, _ = interactions
    _, rec = fitted
    users = np.arange(0, 3000, 97)
    got_items, got_scores = rec.recommend(users, k=10, exclude=train[users])
    scores = rec.user_factors[users].astype(np.float64) @ rec.item_factors.T.astype(
        np.float64
    )
    scores[train[users].nonzero()] = -np.inf
    want = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    np.testing.assert_allclose(
        got_scores, np.take_along_axis(scores, want, axis=1), rtol=1e-4, atol=1e-5
    )
    assert (np.take_along_axis(scores, got_items, axis=1) > -np.inf).all()


def test_new_user_fold_in_is_the_als_solution_without_refit(interactions, fitted):
    _, train, _ = interactions
    _, rec = fitted
    items_before = rec.item_factors.copy()
    history = train.indices[train.indptr[5] : train.indptr[6]]
    got = rec.user_vector(list(history))
    row = sparse.csr_matrix(
        (np.ones(history.size, np.float32), history, [0, history.size]),
        shape=(1, train.shape[1]),
    )
    want = dense_solve(row, rec.item_factors, 4.0, 0.05)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(rec.item_factors, items_before)
    # the recommendations are the top k of that vector, the history excluded
    top, scores = rec.recommend_for_history(list(history), k=5)
    expected = want @ rec.item_factors.T.astype(np.float64)
    expected[history] = -np.inf
    best = np.argsort(-expected, kind="stable")[:5]
    np.testing.assert_array_equal(top[0], best)
    np.testing.assert_allclose(scores[0], expected[best], rtol=1e-4)


def test_fold_in_recommends_as_well_as_the_fitted_users(interactions, fitted):
    _, train, test = interactions
    _, rec = fitted
    users = np.flatnonzero(np.diff(test.indptr))[:600]
    folded = np.stack(
        [
            rec.user_vector(list(train.indices[train.indptr[u] : train.indptr[u + 1]]))
            for u in users
        ]
    )
    sub_train, sub_test = train[users], test[users]
    fitted_p = precision_at_k(
        rec.user_factors[users], rec.item_factors, sub_train, sub_test
    )
    folded_p = precision_at_k(folded, rec.item_factors, sub_train, sub_test)
    print(
        f"precision@10 of {users.size} users: fitted {fitted_p:.4f}, folded in {folded_p:.4f}"
    )
    assert folded_p >= 0.95 * fitted_p


def test_saved_model_keeps_the_als_fold_in(fitted, tmp_path):
    _, rec = fitted
    path = tmp_path / "als.mls"
    mlserve.save(rec, path)
    loaded = mlserve.load(path)
    assert loaded.alpha == 4.0 and loaded.regularization == 0.05
    np.testing.assert_array_equal(
        loaded.user_vector([1, 2, 3]), rec.user_vector([1, 2, 3])
    )


def test_fit_passes_ids_on(interactions):
    _, train, _ = interactions
    item_ids = [f"item-{i}" for i in range(train.shape[1])]
    rec = mlserve.ALS(factors=4, iterations=2, random_state=0).fit(
        train, item_ids=item_ids, user_ids=range(100, 100 + train.shape[0])
    )
    items, _ = rec.recommend([100, 101], k=3)
    assert all(isinstance(i, str) and i.startswith("item-") for i in items.ravel())


# ------------------------------------------------------------------ determinism


def test_same_seed_same_factors_whatever_the_threads(interactions):
    _, train, _ = interactions
    fits = [
        mlserve.ALS(
            factors=16, iterations=4, random_state=7, num_threads=t
        ).fit_factors(train)
        for t in (1, 2, 3, 1)
    ]
    for users, items in fits[1:]:
        np.testing.assert_array_equal(users, fits[0][0])
        np.testing.assert_array_equal(items, fits[0][1])
    other = mlserve.ALS(factors=16, iterations=4, random_state=8).fit_factors(train)
    assert not np.array_equal(other[0], fits[0][0])


def test_generator_and_random_state_seeds(interactions):
    _, train, _ = interactions
    a = mlserve.ALS(
        factors=4, iterations=1, random_state=np.random.default_rng(5)
    ).fit_factors(train)
    b = mlserve.ALS(factors=4, iterations=1, random_state=5).fit_factors(train)
    np.testing.assert_array_equal(a[0], b[0])
    c = mlserve.ALS(
        factors=4, iterations=1, random_state=np.random.RandomState(5)
    ).fit_factors(train)
    assert c[0].dtype == np.float32 and np.isfinite(c[0]).all()


def test_input_matrix_is_not_modified_and_duplicates_are_summed(interactions):
    _, train, _ = interactions
    coo = train[:300].tocoo()
    # every entry split in two halves: a non-canonical CSR with duplicates
    rows = np.concatenate([coo.row, coo.row])
    cols = np.concatenate([coo.col, coo.col])
    vals = np.concatenate([coo.data / 2, coo.data / 2])
    order = np.argsort(rows, kind="stable")
    dup_raw = sparse.csr_matrix(
        (
            vals[order],
            cols[order],
            np.r_[0, np.cumsum(np.bincount(rows, minlength=300))],
        ),
        shape=coo.shape,
    )
    assert not dup_raw.has_canonical_format
    before = (dup_raw.data.copy(), dup_raw.indices.copy(), dup_raw.indptr.copy())
    got = mlserve.ALS(factors=8, iterations=3, random_state=1).fit_factors(dup_raw)
    for a, b in zip(before, (dup_raw.data, dup_raw.indices, dup_raw.indptr)):
        np.testing.assert_array_equal(a, b)
    want = mlserve.ALS(factors=8, iterations=3, random_state=1).fit_factors(train[:300])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)


def test_csr_array_and_int64_indices(interactions):
    _, train, _ = interactions
    want = mlserve.ALS(factors=4, iterations=2, random_state=0).fit_factors(train)
    as_array = sparse.csr_array(train)
    wide = train.copy()
    wide.indices = wide.indices.astype(np.int64)
    wide.indptr = wide.indptr.astype(np.int64)
    for matrix in (as_array, wide):
        got = mlserve.ALS(factors=4, iterations=2, random_state=0).fit_factors(matrix)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_integer_and_boolean_values(interactions):
    _, train, _ = interactions
    ints = train.astype(np.int64)
    a = mlserve.ALS(factors=4, iterations=2, random_state=0).fit_factors(ints)
    b = mlserve.ALS(factors=4, iterations=2, random_state=0).fit_factors(train)
    np.testing.assert_array_equal(a[0], b[0])
    binary = train.astype(bool)
    c = mlserve.ALS(factors=4, iterations=2, random_state=0).fit_factors(binary)
    ones = train.copy()
    ones.data[:] = 1
    d = mlserve.ALS(factors=4, iterations=2, random_state=0).fit_factors(ones)
    np.testing.assert_array_equal(c[0], d[0])


# ------------------------------------------------------------------ progress, GIL


def test_progress_callable_is_called_after_each_iteration(interactions):
    _, train, _ = interactions
    calls = []
    mlserve.ALS(
        factors=4, iterations=5, progress=lambda i, n: calls.append((i, n))
    ).fit_factors(train)
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_progress_callable_can_stop_the_fit(interactions):
    _, train, _ = interactions

    def stop(i, n):
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mlserve.ALS(factors=4, iterations=5, progress=stop).fit_factors(train)


def test_progress_true_draws_a_tqdm_bar(interactions, capsys):
    _, train, _ = interactions
    mlserve.ALS(factors=4, iterations=3, progress=True).fit_factors(train)
    err = capsys.readouterr().err
    assert "ALS" in err and "3/3" in err


def test_gil_is_released_during_a_solve():
    matrix = make_interactions(6000, 3000, 200_000, seed=9)
    indptr, indices, values = csr_arrays(matrix)
    Y = np.random.default_rng(0).random((3000, 128), dtype=np.float32)
    X = np.zeros((6000, 128), np.float32)
    window = {}

    def solve():
        window["start"] = time.perf_counter()
        _core.als_solve(indptr, indices, values, X, Y, 1.0, 0.1, 10, 1)
        window["end"] = time.perf_counter()

    ticks = []
    worker = threading.Thread(target=solve)
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    worker.join()
    inside = [t for t in ticks if window["start"] < t < window["end"]]
    assert window["end"] - window["start"] > 0.05, "solve too short to tell"
    # with the GIL held for the whole call, this thread could not run inside it
    assert len(inside) >= 10


# ------------------------------------------------------------------ validation


def fit(user_items, **params):
    return mlserve.ALS(**{"factors": 4, "iterations": 1, **params}).fit_factors(
        user_items
    )


@pytest.mark.parametrize(
    "user_items, kind, message",
    [
        (
            np.ones((3, 3)),
            TypeError,
            "user_items must be a scipy.sparse CSR matrix (users x items), got numpy.ndarray",
        ),
        (
            [[1, 0], [0, 1]],
            TypeError,
            "user_items must be a scipy.sparse CSR matrix (users x items), got builtins.list",
        ),
        (
            sparse.coo_matrix(np.eye(3)),
            TypeError,
            (
                "user_items must be a scipy.sparse CSR matrix (users x items), got a COO matrix: "
                "convert it with .tocsr()"
            ),
        ),
        (
            sparse.csc_array(np.eye(3)),
            TypeError,
            (
                "user_items must be a scipy.sparse CSR matrix (users x items), got a CSC matrix: "
                "convert it with .tocsr()"
            ),
        ),
        (
            sparse.csr_matrix((0, 5)),
            ValueError,
            "user_items is empty (0 users x 5 items); ALS needs at least one user and one item",
        ),
        (
            sparse.csr_matrix((4, 0)),
            ValueError,
            "user_items is empty (4 users x 0 items); ALS needs at least one user and one item",
        ),
        (
            sparse.csr_matrix((4, 5)),
            ValueError,
            "user_items (4 users x 5 items) has no interactions",
        ),
        (
            sparse.csr_matrix(np.array([[1 + 1j, 0], [0, 1]])),
            TypeError,
            (
                "user_items must hold real numbers (interaction counts or strengths), "
                "got dtype complex128"
            ),
        ),
        (
            sparse.csr_matrix(np.array([[1.0, 0], [0, -2.0]])),
            ValueError,
            (
                "user_items has a negative value (-2) at row 1, column 1; expected interaction "
                "strengths >= 0 (confidence is 1 + alpha * value)"
            ),
        ),
        (
            sparse.csr_matrix(np.array([[1.0, 0], [np.nan, 0]])),
            ValueError,
            (
                "user_items has a non-finite value (nan) at row 1, column 0; expected finite "
                "interaction strengths >= 0"
            ),
        ),
        (
            sparse.csr_matrix(np.array([[1.0, np.inf], [0, 0]])),
            ValueError,
            (
                "user_items has a non-finite value (inf) at row 0, column 1; expected finite "
                "interaction strengths >= 0"
            ),
        ),
        (
            sparse.csr_matrix(np.array([[1e300, 0], [0, 1]])),
            ValueError,
            (
                "user_items has a non-finite value (inf) at row 0, column 0; expected finite "
                "interaction strengths >= 0"
            ),
        ),
    ],
    ids=[
        "ndarray",
        "list",
        "coo",
        "csc-array",
        "no-users",
        "no-items",
        "no-interactions",
        "complex",
        "negative",
        "nan",
        "inf",
        "float32-overflow",
    ],
)
def test_bad_user_items(user_items, kind, message):
    with pytest.raises(kind) as info:
        fit(user_items)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "params, kind, message",
    [
        ({"factors": 0}, ValueError, "factors must be >= 1, got 0"),
        ({"factors": 8.0}, TypeError, "factors must be an int, got float"),
        ({"factors": True}, TypeError, "factors must be an int, got bool"),
        ({"regularization": -0.1}, ValueError, "regularization must be >= 0, got -0.1"),
        (
            {"regularization": float("nan")},
            ValueError,
            "regularization must be finite, got nan",
        ),
        (
            {"regularization": "0.1"},
            TypeError,
            "regularization must be a number, got str",
        ),
        ({"iterations": 0}, ValueError, "iterations must be >= 1, got 0"),
        ({"alpha": -1.0}, ValueError, "alpha must be >= 0, got -1.0"),
        ({"alpha": float("inf")}, ValueError, "alpha must be finite, got inf"),
        ({"num_threads": -1}, ValueError, "num_threads must be >= 0, got -1"),
        (
            {"progress": "yes"},
            TypeError,
            (
                "progress must be None, True, False or a callable progress(iteration, "
                "iterations), got str"
            ),
        ),
        (
            {"random_state": "seed"},
            TypeError,
            "random_state must be None, an int, a numpy Generator or RandomState, got str",
        ),
        ({"factors": 5000}, ValueError, "factors must be between 1 and 4096, got 5000"),
    ],
)
def test_bad_parameters(params, kind, message):
    with pytest.raises(kind) as info:
        fit(sparse.csr_matrix(np.eye(3)), **params)
    assert str(info.value) == message


def test_numpy_integers_are_accepted_as_parameters():
    users, _ = fit(
        sparse.csr_matrix(np.eye(3)), factors=np.int64(3), alpha=np.float32(2.0)
    )
    assert users.shape == (3, 3)


# ------------------------------------------------------------------ the binding's own checks


def good_problem():
    matrix = sparse.csr_matrix(np.array([[1, 0, 2], [0, 3, 0]], np.float32))
    return (
        list(csr_arrays(matrix)),
        np.zeros((2, 4), np.float32),
        np.ones((3, 4), np.float32),
    )


@pytest.mark.parametrize(
    "change, kind, message",
    [
        (
            lambda a, X, Y: a.__setitem__(1, a[1].copy()) or a[1].__setitem__(0, 7),
            ValueError,
            "user_items: column index 7 in row 0 is out of range [0, 3)",
        ),
        (
            lambda a, X, Y: a.__setitem__(1, a[1].copy()) or a[1].__setitem__(2, -1),
            ValueError,
            "user_items: column index -1 in row 1 is out of range [0, 3)",
        ),
        (
            lambda a, X, Y: a.__setitem__(0, np.array([0, 3, 2], np.int64)),
            ValueError,
            "user_items: indptr decreases at row 1 (3, then 2)",
        ),
        (
            lambda a, X, Y: a.__setitem__(0, np.array([1, 2, 3], np.int64)),
            ValueError,
            "user_items: indptr must start at 0, starts at 1",
        ),
        (
            lambda a, X, Y: a.__setitem__(0, np.array([0, 2, 9], np.int64)),
            ValueError,
            "user_items: indptr ends at 9 but there are 3 entries",
        ),
        (
            lambda a, X, Y: a.__setitem__(0, a[0].astype(np.int32)),
            TypeError,
            "indptr must be a 1-D numpy array of int64",
        ),
        (
            lambda a, X, Y: a.__setitem__(2, a[2].astype(np.float64)),
            TypeError,
            "values must be a 1-D numpy array of float32",
        ),
        (
            lambda a, X, Y: a.__setitem__(2, a[2][:2]),
            ValueError,
            "indices has 3 entries but values has 2",
        ),
    ],
    ids=[
        "index-high",
        "index-negative",
        "indptr-decreasing",
        "indptr-start",
        "indptr-end",
        "indptr-dtype",
        "values-dtype",
        "values-length",
    ],
)
def test_solve_rejects_a_crafted_matrix(change, kind, message):
    arrays, X, Y = good_problem()
    change(arrays, X, Y)
    with pytest.raises(kind) as info:
        _core.als_solve(*arrays, X, Y, 1.0, 0.1, 3, 1)
    assert str(info.value) == message


def test_solve_rejects_bad_factor_arrays():
    arrays, X, Y = good_problem()
    with pytest.raises(ValueError, match="^the matrix has 2 rows but factors has 3$"):
        _core.als_solve(*arrays, np.zeros((3, 4), np.float32), Y, 1.0, 0.1, 3, 1)
    with pytest.raises(ValueError, match="^factors has 4 columns but other has 5$"):
        _core.als_solve(*arrays, X, np.ones((3, 5), np.float32), 1.0, 0.1, 3, 1)
    with pytest.raises(
        TypeError, match="^factors must be a C-contiguous, writeable 2-D float32"
    ):
        _core.als_solve(*arrays, np.zeros((2, 4)), Y, 1.0, 0.1, 3, 1)
    with pytest.raises(
        TypeError, match="^factors must be a C-contiguous, writeable 2-D float32"
    ):
        _core.als_solve(*arrays, np.zeros((4, 2), np.float32).T, Y, 1.0, 0.1, 3, 1)
    frozen = X.copy()
    frozen.flags.writeable = False
    with pytest.raises(
        TypeError, match="^factors must be a C-contiguous, writeable 2-D float32"
    ):
        _core.als_solve(*arrays, frozen, Y, 1.0, 0.1, 3, 1)
    both = np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match="^factors and other must not share memory$"):
        _core.als_solve(*arrays, both[:2], both[1:4], 1.0, 0.1, 3, 1)
    with pytest.raises(ValueError, match="^cg_steps must be >= 1, got 0$"):
        _core.als_solve(*arrays, X, Y, 1.0, 0.1, 0, 1)
    with pytest.raises(
        ValueError, match="^alpha must be a finite number >= 0, got nan$"
    ):
        _core.als_solve(*arrays, X, Y, float("nan"), 0.1, 3, 1)


def test_transpose_matches_scipy(interactions):
    matrix, _, _ = interactions
    t_indptr, t_indices, t_values = _core.als_transpose(
        *csr_arrays(matrix), matrix.shape[1]
    )
    want = matrix.T.tocsr()
    want.sort_indices()
    np.testing.assert_array_equal(t_indptr, want.indptr)
    np.testing.assert_array_equal(t_indices, want.indices)
    np.testing.assert_array_equal(t_values, want.data)


def test_many_solves_do_not_leak():
    arrays, X, Y = good_problem()

    def run():
        for _ in range(2000):
            _core.als_solve(*arrays, X, Y, 1.0, 0.1, 3, 2)
            _core.als_fold_in(*arrays, Y, _core.als_gram(Y, 0.1), 1.0)

    assert steady_rss_growth(run) < 4 << 20
