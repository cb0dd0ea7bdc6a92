"""The two-stage exact top-k scan (csrc/mls_topk_quant.c) against NumPy and the full scan.

A float32 recommender of at least 1024 items keeps an int8 copy of its item
matrix; up to 4 queries at a time scan that copy first, then rescore exactly
the items whose upper bound reaches the k-th best lower bound. The result
must be the exact top-k: the same items as the full float scan
(``_core.topk(..., full_scan=True)``) and as a float64 NumPy reference, on
ordinary data and on data built to defeat the bound (nearly equal scores,
exact ties, huge and tiny norms, zeros). ``return_rescored=True`` says which
path each query took (-1: the full scan), so each test also pins the path.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import mlserve
from mlserve import _core

K = 10


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = mlserve.get_num_threads()
    mlserve.set_num_threads(request.param)
    yield request.param
    mlserve.set_num_threads(before)


def gaussian(rng, n_items=20000, d=32, n_users=8):
    U = rng.normal(size=(n_users, d)).astype(np.float32)
    V = rng.normal(size=(n_items, d)).astype(np.float32)
    return U, V


def run(model, Q, k=K, indptr=None, indices=None, candidates=None, cosine=False):
    """(indices, scores, rescored) of the default path, and (indices, scores) of the full scan."""
    Q = np.ascontiguousarray(Q, dtype=np.float32)
    fast = _core.topk(
        model._model_, Q, k, indptr, indices, candidates, cosine, False, True
    )
    full = _core.topk(
        model._model_, Q, k, indptr, indices, candidates, cosine, True, False
    )
    return fast, full


def assert_exact(Q, V, k, idx, scores, excluded=None, candidates=None, cosine=False):
    """Rank by rank, the float64 scores of the returned items equal NumPy's top-k
    within float32 rounding; no excluded item, only candidates, no repeats."""
    Q64, V64 = Q.astype(np.float64), V.astype(np.float64)
    S = Q64 @ V64.T
    norms = np.linalg.norm(V64, axis=1)
    if cosine:
        S = np.divide(S, norms, out=np.zeros_like(S), where=norms > 0)
        scale = np.linalg.norm(Q64, axis=1)[:, None] * np.ones_like(S)
    else:
        scale = np.linalg.norm(Q64, axis=1)[:, None] * norms[None, :]
    tol = 4 * (V.shape[1] + 2) * np.finfo(np.float32).eps * scale.max(axis=1) + 1e-30
    allowed = np.ones_like(S, dtype=bool)
    if candidates is not None:
        allowed[:] = False
        allowed[:, candidates] = True
    for row, items in (excluded or {}).items():
        allowed[row, list(items)] = False
    masked = np.where(allowed, S, -np.inf)
    ref = -np.sort(-masked, axis=1)[:, :k]
    for r in range(len(Q)):
        n_ok = int(np.isfinite(ref[r]).sum())
        got = idx[r, :n_ok]
        assert np.all(got >= 0), (r, idx[r])
        assert len(set(got.tolist())) == n_ok
        assert allowed[r, got].all()
        np.testing.assert_allclose(S[r, got], ref[r, :n_ok], rtol=0, atol=tol[r])
        np.testing.assert_allclose(scores[r, :n_ok], S[r, got], rtol=0, atol=tol[r])
        assert np.all(idx[r, n_ok:] == -1) and np.all(np.isneginf(scores[r, n_ok:]))


# ---- ordinary data: the two-stage path, identical to the full scan -----------------


@pytest.mark.parametrize("n_queries", [1, 3])
@pytest.mark.parametrize("cosine", [False, True], ids=["inner", "cosine"])
def test_two_stage_is_taken_and_matches_the_full_scan_and_numpy(
    rng, threads, n_queries, cosine
):
    U, V = gaussian(rng)
    model = mlserve.Recommender(U, V)
    Q = U[:n_queries]
    (idx, scores, rescored), (full_idx, full_scores) = run(model, Q, cosine=cosine)
    assert np.all(rescored >= K) and np.all(rescored < len(V) // 20), rescored
    np.testing.assert_array_equal(idx, full_idx)
    np.testing.assert_allclose(scores, full_scores, rtol=1e-5)
    assert_exact(Q, V, K, idx, scores, cosine=cosine)


def test_public_recommend_and_similar_items_take_it(rng, threads):
    U, V = gaussian(rng)
    model = mlserve.Recommender(U, V)
    items, scores = model.recommend([5], k=K)
    assert_exact(U[5:6], V, K, items, scores)
    similar, sim_scores = model.similar_items([11], k=K)
    excluded = {0: [11]}
    # similar_items normalises the item's vector
    q = V[11:12] / np.linalg.norm(V[11].astype(np.float64))
    assert_exact(q, V, K, similar, sim_scores, excluded=excluded, cosine=True)


def test_exclusions_dict_and_csr(rng, threads):
    U, V = gaussian(rng)
    model = mlserve.Recommender(U, V)
    S = U[:3].astype(np.float64) @ V.T.astype(np.float64)
    # exclude each user's five best items and 200 random ones
    excluded = {
        r: sorted(
            set(np.argsort(-S[r])[:5].tolist()) | set(rng.choice(len(V), 200).tolist())
        )
        for r in range(3)
    }
    indptr = np.zeros(4, dtype=np.int64)
    indptr[1:] = np.cumsum([len(excluded[r]) for r in range(3)])
    indices = np.concatenate([excluded[r] for r in range(3)]).astype(np.int64)
    (idx, scores, rescored), (full_idx, _) = run(
        model, U[:3], indptr=indptr, indices=indices
    )
    assert np.all(rescored >= K)
    np.testing.assert_array_equal(idx, full_idx)
    assert_exact(U[:3], V, K, idx, scores, excluded=excluded)
    by_dict = model.recommend(
        [0, 1, 2], k=K, exclude={u: excluded[u] for u in range(3)}
    )
    np.testing.assert_array_equal(by_dict[0], idx)
    rows, cols = zip(*[(r, c) for r in range(3) for c in excluded[r]])
    csr = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(3, len(V)))
    np.testing.assert_array_equal(model.recommend([0, 1, 2], k=K, exclude=csr)[0], idx)


def test_exclusions_that_leave_fewer_than_k(rng):
    U, V = gaussian(rng, n_items=2048)
    model = mlserve.Recommender(U, V)
    keep = [3, 700, 2047]
    excluded = sorted(set(range(len(V))) - set(keep))
    indptr = np.array([0, len(excluded)], dtype=np.int64)
    (idx, scores, _), (full_idx, _) = run(
        model, U[:1], k=50, indptr=indptr, indices=np.array(excluded, dtype=np.int64)
    )
    np.testing.assert_array_equal(idx, full_idx)
    assert sorted(idx[0, :3].tolist()) == keep and np.all(idx[0, 3:] == -1)
    assert_exact(U[:1], V, 50, idx, scores, excluded={0: excluded})


@pytest.mark.parametrize("n_cand", [1500, 900], ids=["two-stage", "few-full-scan"])
def test_items_restriction(rng, threads, n_cand):
    U, V = gaussian(rng)
    model = mlserve.Recommender(U, V)
    cand = np.sort(rng.choice(len(V), n_cand, replace=False)).astype(np.int64)
    (idx, scores, rescored), (full_idx, _) = run(model, U[:2], candidates=cand)
    assert np.all(rescored >= K) if n_cand >= 1024 else np.all(rescored == -1)
    np.testing.assert_array_equal(idx, full_idx)
    assert_exact(U[:2], V, K, idx, scores, candidates=cand)
    np.testing.assert_array_equal(model.recommend([0, 1], k=K, items=cand)[0], idx)


def test_many_queries_or_a_large_k_take_the_full_scan(rng):
    U, V = gaussian(rng, n_items=4096)
    model = mlserve.Recommender(U, V)
    (_, _, rescored), _ = run(model, U[:5])
    assert np.all(rescored == -1)
    (idx, _, rescored), (full_idx, _) = run(model, U[:1], k=4096 // 32 + 1)
    assert np.all(rescored == -1)
    np.testing.assert_array_equal(idx, full_idx)


def test_float64_models_keep_the_full_scan(rng):
    U, V = gaussian(rng, n_items=4096)
    model = mlserve.Recommender(U.astype(np.float64), V.astype(np.float64))
    fast = _core.topk(model._model_, U[:1].astype(np.float64), K, None, None, None, False,
                      False, True)  # fmt: skip
    assert fast[2][0] == -1


# ---- data built against the bound -------------------------------------------------


def test_nearly_equal_scores_fall_back_to_the_full_scan(rng, threads):
    d = 32
    V = (1 + 1e-6 * rng.normal(size=(20000, d))).astype(np.float32)
    Q = (1 + 1e-6 * rng.normal(size=(2, d))).astype(np.float32)
    model = mlserve.Recommender(Q, V)
    (idx, scores, rescored), _ = run(model, Q)
    assert np.all(rescored == -1)  # the int8 copy cannot separate them
    # (no index equality with the full scan of both rows: float rounding orders
    # these scores, and a one-row GEMV rounds differently from a two-row GEMM)
    assert_exact(Q, V, K, idx, scores)


@pytest.mark.parametrize("spread", [1e-3, 3e-2])
def test_close_scores_stay_exact(rng, threads, spread):
    d = 32
    V = (1 + spread * rng.normal(size=(20000, d))).astype(np.float32)
    Q = rng.normal(size=(3, d)).astype(np.float32)
    model = mlserve.Recommender(Q, V)
    (idx, scores, _), _ = run(model, Q)  # either path, exact either way
    assert_exact(Q, V, K, idx, scores)


def test_exact_ties_go_to_the_lower_index_as_in_the_full_scan(rng, threads):
    # small integers: every dot product is exact in float32, in any order
    base = rng.integers(-3, 4, size=(500, 16)).astype(np.float32)
    V = np.tile(base, (8, 1))  # each row 8 times: ties everywhere
    Q = rng.integers(-3, 4, size=(3, 16)).astype(np.float32)
    model = mlserve.Recommender(Q, V)
    (idx, scores, rescored), (full_idx, full_scores) = run(model, Q, k=20)
    assert np.all(rescored >= 20)
    np.testing.assert_array_equal(idx, full_idx)
    np.testing.assert_array_equal(scores, full_scores)
    S = Q.astype(np.float64) @ V.T.astype(np.float64)
    ref = np.argsort(-S, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(idx, ref)


@pytest.mark.parametrize(
    "scale, two_stage",
    [(1e17, True), (1e-15, True), (2e18, False)],
    ids=["huge", "tiny", "could-overflow"],
)
def test_huge_and_tiny_norms(rng, threads, scale, two_stage):
    U, V = gaussian(rng, n_items=8192)
    U, V = (
        (U * np.float32(scale)).astype(np.float32),
        (V * np.float32(scale)).astype(np.float32),
    )
    model = mlserve.Recommender(U, V)
    (idx, scores, rescored), (full_idx, _) = run(model, U[:2])
    # past FLT_MAX / 16 for |q| |v| a float32 score could overflow: no bound, full scan
    assert np.all(rescored >= K) if two_stage else np.all(rescored == -1)
    np.testing.assert_array_equal(idx, full_idx)
    assert_exact(U[:2], V, K, idx, scores)


def test_mixed_norms_and_zero_items(rng, threads):
    U, V = gaussian(rng)
    V[::2] = 0  # half the catalogue is zero vectors (score 0, norm 0)
    V[1::10] *= 1000  # and a tenth of the rest much longer
    model = mlserve.Recommender(U, V)
    for cosine in (False, True):
        (idx, scores, rescored), (full_idx, _) = run(model, U[:2], cosine=cosine)
        assert np.all(rescored >= K)
        np.testing.assert_array_equal(idx, full_idx)
        assert_exact(U[:2], V, K, idx, scores, cosine=cosine)


def test_a_zero_query_gives_the_lowest_indices(rng):
    _, V = gaussian(rng, n_items=4096)
    model = mlserve.Recommender(V[:2], V)
    (idx, scores, _), (full_idx, _) = run(model, np.zeros((1, V.shape[1]), np.float32))
    np.testing.assert_array_equal(idx, full_idx)
    np.testing.assert_array_equal(idx[0], np.arange(K))
    np.testing.assert_array_equal(scores[0], np.zeros(K, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_query_that_is_not_finite_takes_the_full_scan(rng, bad):
    U, V = gaussian(rng, n_items=4096)
    model = mlserve.Recommender(U, V)
    Q = U[:2].copy()
    Q[0, 3] = bad
    (idx, scores, rescored), (full_idx, full_scores) = run(model, Q)
    assert rescored[0] == -1 and rescored[1] >= K
    np.testing.assert_array_equal(idx, full_idx)
    np.testing.assert_array_equal(scores[0], full_scores[0])


def test_loaded_model_builds_its_copy_and_agrees(rng, tmp_path):
    U, V = gaussian(rng, n_items=4096)
    path = tmp_path / "rec.mls"
    mlserve.save(mlserve.Recommender(U, V), path)
    loaded = mlserve.load(path)
    (idx, _, rescored), (full_idx, _) = run(loaded, U[:1])
    assert rescored[0] >= K
    np.testing.assert_array_equal(idx, full_idx)
