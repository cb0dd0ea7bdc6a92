"""mlserve.Recommender: exact top-k in C against NumPy, implicit and faiss.

Parity uses float64 factors drawn from a continuous distribution (ties have
probability zero), so the item indices must match exactly; float32 compares
scores within rounding and indices wherever neighbouring reference scores
are apart by more than that rounding. Tie-breaking (lower index first) has
its own test with deliberately equal scores.
"""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from memory_support import steady_rss_growth

import mlserve
from mlserve import _core


def reference_topk(S, k):
    """Best first, ties by lower index: a stable sort of -S."""
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(S, order, axis=1)


@pytest.fixture
def factors(rng):
    return rng.normal(size=(60, 12)), rng.normal(size=(3000, 12))


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = mlserve.get_num_threads()
    mlserve.set_num_threads(request.param)
    yield request.param
    mlserve.set_num_threads(before)


# ---- parity with NumPy ---------------------------------------------------------


@pytest.mark.parametrize("n_users", [1, 2, 7, 60])
@pytest.mark.parametrize("k", [1, 10, 3000])
def test_recommend_matches_numpy(factors, threads, n_users, k):
    U, V = factors
    model = mlserve.Recommender(U, V)
    users = np.arange(n_users)
    items, scores = model.recommend(users, k=k)
    ref_items, ref_scores = reference_topk(U[users] @ V.T, k)
    assert items.shape == scores.shape == (n_users, k)
    assert items.dtype == np.int64 and scores.dtype == np.float64
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32_and_matches_within_rounding(rng, threads):
    U = rng.normal(size=(300, 32)).astype(np.float32)
    V = rng.normal(size=(5000, 32)).astype(np.float32)
    model = mlserve.Recommender(U, V)
    assert model.dtype == np.float32 and model.item_factors.dtype == np.float32
    items, scores = model.recommend(np.arange(300), k=20)
    assert scores.dtype == np.float32
    S = U.astype(np.float64) @ V.astype(np.float64).T
    ref_items, ref_scores = reference_topk(S, 21)
    np.testing.assert_allclose(scores, ref_scores[:, :20], atol=1e-4)
    gaps = np.minimum(
        np.diff(ref_scores, axis=1)[:, :-1] * -1,
        np.diff(ref_scores, axis=1)[:, 1:] * -1,
    )
    clear = np.concatenate(
        [(ref_scores[:, :1] - ref_scores[:, 1:2]) > 1e-4, gaps > 1e-4], axis=1
    )
    assert (items[clear] == ref_items[:, :20][clear]).all()


def test_single_query_over_many_items_splits_by_items(rng, threads):
    """One user against enough items that 2 threads each take half, then merge."""
    U, V = rng.normal(size=(3, 16)), rng.normal(size=(50_000, 16))
    model = mlserve.Recommender(U, V)
    items, scores = model.recommend([1], k=50)
    ref_items, ref_scores = reference_topk(U[1:2] @ V.T, 50)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-12)


def test_ties_go_to_the_lower_index(threads):
    V = np.zeros((4000, 2))
    V[:, 0] = 1.0  # every item scores the same ...
    V[[3999, 17, 2500], 0] = 2.0  # ... except three, which tie with each other
    model = mlserve.Recommender(np.array([[1.0, 0.0]]), V)
    items, scores = model.recommend([0], k=6)
    assert items.tolist() == [[17, 2500, 3999, 0, 1, 2]]
    assert scores.tolist() == [[2.0, 2.0, 2.0, 1.0, 1.0, 1.0]]


def test_exclusions_dict_and_csr_match_numpy(factors, threads, rng):
    U, V = factors
    model = mlserve.Recommender(U, V)
    users = [5, 0, 17]
    S = U[users] @ V.T
    bought = {u: rng.choice(3000, size=40, replace=False).tolist() for u in (5, 17)}
    bought[5] += reference_topk(S[:1], 5)[0][
        0
    ].tolist()  # the best ones must be skipped
    items, scores = model.recommend(users, k=25, exclude=bought)
    masked = S.copy()
    for row, u in enumerate(users):
        masked[row, bought.get(u, [])] = -np.inf
    ref_items, ref_scores = reference_topk(masked, 25)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_allclose(scores, ref_scores)
    # the same as a CSR matrix with one row per requested user (implicit's user_items)
    rows = [bought.get(u, []) for u in users]
    csr = sp.csr_matrix(
        (np.ones(sum(map(len, rows))), np.concatenate(rows).astype(int),
         np.cumsum([0] + [len(r) for r in rows])),
        shape=(3, 3000),
    )  # fmt: skip
    items_csr, _ = model.recommend(users, k=25, exclude=csr)
    np.testing.assert_array_equal(items_csr, ref_items)


def test_unsorted_and_duplicate_exclusions_are_fine(factors):
    U, V = factors
    model = mlserve.Recommender(U, V)
    best = model.recommend([0], k=3)[0][0].tolist()
    items, _ = model.recommend([0], k=3, exclude={0: [best[2], best[0], best[0]]})
    assert items[0, 0] == best[1] and best[0] not in items and best[2] not in items


def test_exclusions_that_leave_fewer_than_k_pad_with_minus_one():
    V = np.eye(4)
    model = mlserve.Recommender(np.ones((1, 4)), V)
    items, scores = model.recommend([0], k=4, exclude={0: [1, 2]})
    assert items.tolist() == [[0, 3, -1, -1]]
    assert scores[0, :2].tolist() == [1.0, 1.0] and np.isneginf(scores[0, 2:]).all()


def test_restricted_items_match_numpy(factors, threads, rng):
    U, V = factors
    model = mlserve.Recommender(U, V)
    candidates = rng.choice(3000, size=500, replace=False)
    items, scores = model.recommend(np.arange(20), k=15, items=candidates)
    S = U[:20] @ V.T
    masked = np.full_like(S, -np.inf)
    masked[:, candidates] = S[:, candidates]
    ref_items, ref_scores = reference_topk(masked, 15)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_allclose(scores, ref_scores)
    # with exclusions on top
    excl = {3: ref_items[3, :4].tolist()}
    items, _ = model.recommend(np.arange(20), k=15, items=candidates, exclude=excl)
    masked[3, excl[3]] = -np.inf
    np.testing.assert_array_equal(items, reference_topk(masked, 15)[0])


def test_similar_items_by_cosine_without_the_item_itself(factors, threads):
    _, V = factors
    V = V.copy()
    V[7] = 0.0  # an item of norm 0: cosine 0 with everything
    model = mlserve.Recommender(np.zeros((1, V.shape[1])), V)
    query = [0, 7, 2999, 42]
    items, scores = model.similar_items(query, k=30)
    norms = np.linalg.norm(V, axis=1)
    safe = np.where(norms > 0, norms, 1)
    cos = (V[query] / safe[query, None]) @ (V / safe[:, None]).T
    cos[np.arange(4), query] = -np.inf
    ref_items, ref_scores = reference_topk(cos, 30)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-12)
    assert items[1].tolist() == [i for i in range(31) if i != 7][:30]  # all 0: by index


# ---- reference libraries ---------------------------------------------------------


def test_matches_implicit_recommend_and_similar_items(rng):
    import threadpoolctl
    from implicit.cpu.als import AlternatingLeastSquares

    U = rng.normal(size=(40, 8)).astype(np.float32)
    V = rng.normal(size=(800, 8)).astype(np.float32)
    with threadpoolctl.threadpool_limits(
        1, "blas"
    ):  # implicit warns about BLAS threads
        als = AlternatingLeastSquares(factors=8, random_state=0)
    als.user_factors, als.item_factors = U, V
    user_items = sp.random(
        40, 800, density=0.02, format="csr", random_state=1, dtype=np.float32
    )
    users = np.arange(40)
    ref_items, ref_scores = als.recommend(users, user_items[users], N=10)
    model = mlserve.Recommender(U, V)
    items, scores = model.recommend(users, k=10, exclude=user_items[users])
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert (items == ref_items).mean() > 0.99  # float32 near-ties may swap
    sim_ref, _ = als.similar_items(np.arange(30), N=11)
    sim, _ = model.similar_items(np.arange(30), k=10)
    assert (
        sim == sim_ref[:, 1:]
    ).mean() > 0.99  # implicit returns the item itself first


def test_matches_faiss_index_flat_ip(rng):
    import faiss

    U = rng.normal(size=(100, 16)).astype(np.float32)
    V = rng.normal(size=(20_000, 16)).astype(np.float32)
    index = faiss.IndexFlatIP(16)
    index.add(V)
    ref_scores, ref_items = index.search(U, 10)
    items, scores = mlserve.Recommender(U, V).recommend(np.arange(100), k=10)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert (items == ref_items).mean() > 0.99


# ---- ids --------------------------------------------------------------------


@pytest.mark.parametrize(
    "item_ids",
    [
        [f"sku-{i}" for i in range(50)],
        list(range(1000, 1050)),  # increasing: binary search in the mapped array
        list(range(50, 0, -1)),  # not increasing: a dictionary
    ],
    ids=["str", "int-sorted", "int-unsorted"],
)
def test_ids_in_and_out(rng, item_ids, tmp_path):
    U, V = rng.normal(size=(5, 4)), rng.normal(size=(50, 4))
    user_ids = ["ann", "bob", "cy", "dee", "eve"]
    model = mlserve.Recommender(U, V, item_ids=item_ids, user_ids=user_ids)
    plain = mlserve.Recommender(U, V)
    for m in (model, _reloaded(model, tmp_path)):
        items, scores = m.recommend(["bob", "eve"], k=5, exclude={"bob": [item_ids[3]]},
                                    items=item_ids[:40])  # fmt: skip
        ref, ref_scores = plain.recommend(
            [1, 4], k=5, exclude={1: [3]}, items=range(40)
        )
        assert items.tolist() == [[item_ids[j] for j in row] for row in ref.tolist()]
        np.testing.assert_array_equal(scores, ref_scores)
        sim, _ = m.similar_items([item_ids[0]], k=3)
        assert sim.tolist() == [
            [item_ids[j] for j in plain.similar_items([0], k=3)[0][0]]
        ]
        assert list(m.item_ids) == item_ids and list(m.user_ids) == user_ids


def test_padding_with_ids_is_none():
    model = mlserve.Recommender(np.ones((1, 2)), np.eye(2), item_ids=["a", "b"])
    items, _ = model.recommend(0, k=2, exclude={0: ["a"]})
    assert items.tolist() == [["b", None]]


# ---- fold-in ------------------------------------------------------------------


@pytest.mark.parametrize("reg", [0.01, 1.0])
def test_fold_in_is_the_documented_least_squares(factors, reg):
    _, V = factors
    model = mlserve.Recommender(np.zeros((1, 12)), V, regularization=reg)
    history = [3, 99, 1500, 2999, 3]  # a repeat counts once
    VI = V[[3, 99, 1500, 2999]]
    expected = np.linalg.solve(VI.T @ VI + reg * np.eye(12), VI.T @ np.ones(4))
    np.testing.assert_allclose(model.user_vector(history), expected, rtol=1e-10)
    items, scores = model.recommend_for_history(history, k=8)
    S = (V @ expected)[None, :]
    S[0, [3, 99, 1500, 2999]] = -np.inf
    ref_items, ref_scores = reference_topk(S, 8)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-10)
    kept, _ = model.recommend_for_history(history, k=8, exclude_history=False)
    np.testing.assert_array_equal(kept, reference_topk((V @ expected)[None, :], 8)[0])


def test_regularization_is_saved(factors, tmp_path):
    U, V = factors
    model = mlserve.Recommender(U, V, regularization=0.5)
    loaded = _reloaded(model, tmp_path)
    assert loaded.regularization == 0.5 and loaded.metadata["regularization"] == 0.5
    np.testing.assert_array_equal(loaded.user_vector([1, 2]), model.user_vector([1, 2]))


# ---- .mls: mapped, round trip -----------------------------------------------------


def _reloaded(model, tmp_path, name="rec.mls"):
    path = tmp_path / name
    mlserve.save(model, path)
    return mlserve.load(path)


def test_loaded_factors_are_views_of_the_mapping(factors, tmp_path):
    U, V = factors
    loaded = _reloaded(mlserve.Recommender(U, V), tmp_path)
    assert isinstance(loaded, mlserve.Recommender)
    base, length = loaded.model_.mapping
    for arr in (loaded.user_factors, loaded.item_factors):
        address = arr.__array_interface__["data"][0]
        assert base <= address and address + arr.nbytes <= base + length
        assert not arr.flags.writeable
    np.testing.assert_array_equal(loaded.item_factors, V)
    np.testing.assert_array_equal(loaded.recommend([3], k=7)[0],
                                  mlserve.Recommender(U, V).recommend([3], k=7)[0])  # fmt: skip


def test_pickle_round_trip(factors):
    model = mlserve.Recommender(*factors, item_ids=[f"i{j}" for j in range(3000)])
    again = pickle.loads(pickle.dumps(model))
    assert again.recommend(0, k=3)[0].tolist() == model.recommend(0, k=3)[0].tolist()


def test_metadata_describes_the_model(factors):
    meta = mlserve.Recommender(*factors, user_ids=list(range(60))).metadata
    assert meta["kind"] == "recommender" and meta["task"] == "recommender"
    assert (meta["n_users"], meta["n_items"], meta["n_factors"]) == (60, 3000, 12)
    assert meta["user_id_type"] == "int" and meta["item_id_type"] is None


def test_a_recommender_has_no_predict(factors):
    model = mlserve.Recommender(*factors)
    with pytest.raises(NotImplementedError, match="a recommender has no predict"):
        model.model_.predict(np.zeros((1, 12)))


# ---- bad input: a clear error naming the problem ------------------------------------


@pytest.mark.parametrize(
    ("call", "exc", "message"),
    [
        (lambda m: m.recommend([0], k=0), ValueError, "k must be between 1 and the 3000 items, got 0"),
        (lambda m: m.recommend([0], k=3001), ValueError, "k must be between 1 and the 3000 items, got 3001"),
        (lambda m: m.recommend([0], k=2.5), TypeError, "k must be an integer, got float 2.5"),
        (lambda m: m.recommend([0], k=True), TypeError, "k must be an integer, got bool True"),
        (lambda m: m.recommend([60]), ValueError, r"user index 60 is out of range \[0, 60\)"),
        (lambda m: m.recommend([-1]), ValueError, r"user index -1 is out of range \[0, 60\)"),
        (lambda m: m.recommend(["a"]), TypeError, "users must be integer user indices .* got str 'a'"),
        (lambda m: m.recommend([0], k=5, items=[1, 2]), ValueError, "k must be between 1 and the 2 candidate items, got 5"),
        (lambda m: m.recommend([0], items=[]), ValueError, r"items \(the candidates\) is empty"),
        (lambda m: m.recommend([0], items=[3000]), ValueError, r"item index 3000 is out of range \[0, 3000\)"),
        (lambda m: m.recommend([0], exclude={0: [5000]}), ValueError, r"item index 5000 is out of range"),
        (lambda m: m.recommend([0], exclude=[1, 2]), TypeError, "exclude must be a dict"),
        (lambda m: m.recommend([0, 1], exclude=sp.csr_matrix((1, 3000))), ValueError, r"exclude must have shape \(2, 3000\)"),
        (lambda m: m.similar_items([0], k=3000), ValueError, "k must be between 1 and the 2999 other items, got 3000"),
        (lambda m: m.user_vector([]), ValueError, "the history has no items"),
        (lambda m: m.recommend(np.zeros((2, 2), dtype=int)), ValueError, "users must be 1-D"),
    ],
)  # fmt: skip
def test_bad_queries_raise_clear_errors(factors, call, exc, message):
    with pytest.raises(exc, match=message):
        call(mlserve.Recommender(*factors))


def test_unknown_ids_are_named(rng):
    model = mlserve.Recommender(rng.normal(size=(2, 3)), rng.normal(size=(4, 3)),
                                item_ids=[10, 20, 30, 40], user_ids=["a", "b"])  # fmt: skip
    with pytest.raises(ValueError, match="unknown user id 'zed'"):
        model.recommend(["zed"])
    with pytest.raises(ValueError, match="unknown item id 25"):
        model.recommend(["a"], k=1, items=[25])
    with pytest.raises(
        TypeError, match="items must be item ids of type int, got str '10'"
    ):
        model.similar_items(["10"], k=1)
    with pytest.raises(
        TypeError, match="users must be user ids of type str, got int 0"
    ):
        model.recommend([0], k=1)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "message"),
    [
        ((np.ones((2, 3)), np.ones((4, 2))), {}, ValueError, "user_factors has 3 factors per row but item_factors has 2"),
        ((np.ones((2, 3)), np.ones((0, 3))), {}, ValueError, "item_factors must have at least 1 item"),
        ((np.ones((2, 3)), np.ones(3)), {}, ValueError, "item_factors must be 2-D"),
        ((np.ones((2, 3)), np.array([["a"]])), {}, TypeError, "item_factors must hold real numbers"),
        ((np.ones((2, 3)), np.full((4, 3), np.nan)), {}, ValueError, "item_factors contains NaN or infinity at row 0, factor 0"),
        ((np.ones((2, 3)), sp.csr_matrix(np.ones((4, 3)))), {}, TypeError, "must be a dense 2-D array"),
        ((np.ones((2, 3)), np.ones((4, 3))), {"item_ids": [1, 2, 3]}, ValueError, "item_ids has 3 ids but there are 4 items"),
        ((np.ones((2, 3)), np.ones((4, 3))), {"item_ids": [1, 2, 3, 1]}, ValueError, "item_ids must be unique; 1 repeats"),
        ((np.ones((2, 3)), np.ones((4, 3))), {"user_ids": [1, "b"]}, TypeError, "user_ids must be all integers or all strings"),
        ((np.ones((2, 3)), np.ones((4, 3))), {"regularization": -1}, ValueError, "regularization must be a finite number >= 0"),
    ],
)  # fmt: skip
def test_bad_construction_raises_clear_errors(args, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        mlserve.Recommender(*args, **kwargs)


def test_core_checks_every_index_it_is_given(factors):
    """The C entry point refuses bad CSR pairs and candidates by itself."""
    model = mlserve.Recommender(*factors).model_
    q = np.zeros((2, 12))
    cases = [
        ((np.array([0, 1, 5]), np.array([1, 2])), None, "exclusion indptr must run from 0 to 2"),
        ((np.array([0, 2, 1]), np.array([1])), None, "exclusion indptr decreases at row 1"),
        ((np.array([0, 2, 1, ]), np.array([1, 2])), None, r"exclusion indptr must run from 0 to 2 \(the number of excluded indices\), got 0 to 1"),
        ((np.array([0, 2, 2]), np.array([3, 1])), None, "excluded item indices of row 0 are not sorted"),
        ((np.array([0, 1, 1]), np.array([3000])), None, r"excluded item index 3000 \(row 0\) is out of range"),
        ((None, None), np.array([2, 1]), "candidate item indices must be strictly increasing"),
        ((None, None), np.array([1, 1]), "candidate item indices must be strictly increasing"),
        ((None, None), np.array([-1]), "candidate item index -1 is out of range"),
        ((np.array([0, 1]), np.array([1])), None, "exclude_indptr must have 3 values"),
    ]  # fmt: skip
    for (indptr, indices), cand, message in cases:
        with pytest.raises(ValueError, match=message):
            _core.topk(model, q, 1, indptr, indices, cand, False)
    with pytest.raises(ValueError, match="query vectors must have 12 factors, got 3"):
        _core.topk(model, np.zeros((1, 3)), 1, None, None, None, False)
    with pytest.raises(TypeError, match="expected an mlserve.Model"):
        _core.topk(object(), q, 1, None, None, None, False)
    linear = mlserve.LinearRegression().fit(np.eye(3), [1, 2, 3]).model_
    with pytest.raises(
        ValueError, match="expected a recommender model, got a linear_regressor"
    ):
        _core.topk(linear, q, 1, None, None, None, False)


def test_inputs_are_not_modified_and_calls_do_not_leak(factors):
    U, V = factors
    model = mlserve.Recommender(U, V)
    users = np.array([3, 1, 2])
    excl = {3: [5, 1]}
    model.recommend(users, k=5, exclude=excl)
    assert users.tolist() == [3, 1, 2] and excl == {3: [5, 1]}

    def run():
        for _ in range(2000):
            model.recommend(users, k=5, exclude=excl, items=range(100))
            model.similar_items([1, 2], k=3)

    assert steady_rss_growth(run) < 8 << 20


# ---- store compatibility and serving warm-up --------------------------------------


def _meta(rng, d=4, item_ids=None, user_ids=None, dtype=np.float64):
    U, V = rng.normal(size=(3, d)).astype(dtype), rng.normal(size=(5, d)).astype(dtype)
    return mlserve.Recommender(U, V, item_ids=item_ids, user_ids=user_ids).metadata


def test_compatibility_is_about_the_ids_a_client_sends_and_gets(rng):
    from mlserve._compatibility import compatibility_problems

    base = _meta(rng, user_ids=[1, 2, 3], item_ids=list("abcde"))
    # another factor dimension, dtype, catalogue or user set: still compatible (ids in, ids out)
    assert (
        compatibility_problems(
            base, _meta(rng, d=9, user_ids=[1, 2, 3], item_ids=list("abcde"))
        )
        == []
    )
    assert (
        compatibility_problems(
            base,
            _meta(rng, dtype=np.float32, user_ids=[7, 8, 9], item_ids=list("vwxyz")),
        )
        == []
    )
    assert compatibility_problems(
        base, _meta(rng, user_ids=["a", "b", "c"], item_ids=list("abcde"))
    ) == ["the new version takes string user ids, the alias serves integer user ids"]
    assert compatibility_problems(base, _meta(rng, user_ids=[1, 2, 3])) == [
        "the new version returns item indices (no item ids), the alias serves string item ids"
    ]
    regressor = mlserve.LinearRegression().fit(np.eye(4), [1, 2, 3, 4]).metadata
    assert compatibility_problems(regressor, base, served_version=2) == [
        "the new version is a recommender model, the alias serves a regression model (version 2)"
    ]  # fmt: skip


def test_serving_warm_up_runs_a_query_and_builds_the_id_lookups(rng):
    from mlserve.serving.runtime import LoadedModel

    model = mlserve.Recommender(rng.normal(size=(3, 4)), rng.normal(size=(5, 4)),
                                item_ids=list("abcde"), user_ids=[30, 10, 20])  # fmt: skip
    loaded = LoadedModel.from_model("rec", 1, model)
    assert loaded.is_recommender and model._items_._lookup is None
    loaded.warm_up()
    assert model._items_._lookup == {c: j for j, c in enumerate("abcde")}
    assert model._users_._lookup == {30: 0, 10: 1, 20: 2}
