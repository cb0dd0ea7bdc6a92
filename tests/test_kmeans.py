"""mlserve.KMeans against scikit-learn's KMeans and a slow NumPy reference.

Parity: with the same explicit init and n_init=1 the labels are equal and the
centers and inertia agree to 1e-6 relative (float64 and float32); k-means++
reaches scikit-learn's inertia within 1%; predict, transform and score agree
on 0/1/many rows and C/Fortran/strided input. Then conversion of fitted
scikit-learn KMeans and MiniBatchKMeans, the .mls file of the kind (round
trip, crafted sections, fuzzed bytes), errors (pinned messages), progress,
feature names and threads.
"""
import pickle
import struct
import threading
import time
import warnings

import numpy as np
import pytest

import mlserve
from mlserve import _core

sklearn_cluster = pytest.importorskip("sklearn.cluster")
from memory_support import steady_rss_growth
from sklearn.datasets import make_blobs
from test_format import _Layout, reseal, section_checksum

DTYPES = [np.float64, np.float32]


def blobs(n=3000, d=6, k=5, seed=0, dtype=np.float64):
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=1.5, random_state=seed)
    return X.astype(dtype)


# ---- the slow, obviously correct reference ----------------------------------------


def reference_lloyd(X, init, max_iter=300, tol=1e-4, sample_weight=None):
    """Lloyd as scikit-learn defines it, in plain NumPy on float64.

    Labels by exact squared distances; a cluster left empty takes the point
    farthest from its center; stop when the labels repeat or the summed squared
    center shift is <= tol * mean feature variance; final labels for the final
    centers. Returns (centers, labels, inertia, n_iter).
    """
    X = np.asarray(X, dtype=np.float64)
    w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, float)
    centers = np.array(init, dtype=np.float64)
    k = len(centers)
    tol = np.var(X, axis=0).mean() * tol
    labels_old = None
    for it in range(1, max_iter + 1):
        dist = ((X[:, None, :] - centers[None]) ** 2).sum(-1)
        labels = dist.argmin(1)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, X * w[:, None])
        weights = np.bincount(labels, weights=w, minlength=k)
        empty = np.flatnonzero(weights == 0)
        if empty.size:
            far = np.argsort(-dist[np.arange(len(X)), labels], kind="stable")[: empty.size]
            for j, i in zip(empty, far):
                sums[labels[i]] -= X[i] * w[i]
                weights[labels[i]] -= w[i]
                sums[j] = X[i] * w[i]
                weights[j] = w[i]
        new = np.where(weights[:, None] > 0, sums / np.where(weights, weights, 1)[:, None], sums)
        shift = ((new - centers) ** 2).sum()
        centers = new
        if labels_old is not None and np.array_equal(labels, labels_old):
            break
        if shift <= tol:
            labels = ((X[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1)
            break
        labels_old = labels
    else:
        labels = ((X[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1)
    inertia = float((w * ((X - centers[labels]) ** 2).sum(1)).sum())
    return centers, labels, inertia, it


def reference_distances(X, centers):
    X = np.asarray(X, dtype=np.float64)
    return np.sqrt(((X[:, None, :] - np.asarray(centers, np.float64)[None]) ** 2).sum(-1))


# ---- fit parity ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_with_explicit_init_matches_sklearn(dtype):
    X = blobs(dtype=dtype)
    init = X[[0, 10, 20, 30, 40]].copy()
    sk = sklearn_cluster.KMeans(5, init=init, n_init=1).fit(X)
    ours = mlserve.KMeans(5, init=init, n_init=1).fit(X)
    np.testing.assert_array_equal(ours.labels_, sk.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, sk.cluster_centers_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours.inertia_, sk.inertia_, rtol=1e-6)
    assert ours.n_iter_ == sk.n_iter_
    assert ours.cluster_centers_.dtype == dtype


def test_fit_matches_the_numpy_reference():
    X = blobs(n=800, d=3, k=4, seed=3)
    init = X[:4].copy()
    centers, labels, inertia, n_iter = reference_lloyd(X, init)
    ours = mlserve.KMeans(4, init=init).fit(X)
    np.testing.assert_array_equal(ours.labels_, labels)
    np.testing.assert_allclose(ours.cluster_centers_, centers, rtol=1e-9)
    np.testing.assert_allclose(ours.inertia_, inertia, rtol=1e-9)
    assert ours.n_iter_ == n_iter


def test_sample_weight_matches_sklearn(rng):
    X = blobs(n=1000, d=4, k=3, seed=1)
    w = rng.uniform(0.1, 3.0, size=len(X))
    init = X[:3].copy()
    sk = sklearn_cluster.KMeans(3, init=init, n_init=1).fit(X, sample_weight=w)
    ours = mlserve.KMeans(3, init=init, n_init=1).fit(X, sample_weight=w)
    np.testing.assert_array_equal(ours.labels_, sk.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, sk.cluster_centers_, rtol=1e-6)
    np.testing.assert_allclose(ours.inertia_, sk.inertia_, rtol=1e-6)


def test_zero_and_fractional_weights_match_sklearn(rng):
    X = blobs(n=1500, d=3, k=3, seed=12)
    w = rng.uniform(0.05, 0.3, size=len(X))  # weights that do not add up exactly
    w[:200] = 0.0
    init = np.vstack([X[:2], X[500:501]])  # the first two centers start on zero-weight rows
    sk = sklearn_cluster.KMeans(3, init=init, n_init=1).fit(X, sample_weight=w)
    ours = mlserve.KMeans(3, init=init, n_init=1).fit(X, sample_weight=w)
    np.testing.assert_array_equal(ours.labels_, sk.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, sk.cluster_centers_, rtol=1e-6)
    np.testing.assert_allclose(ours.inertia_, sk.inertia_, rtol=1e-6)


def test_empty_cluster_is_relocated_as_sklearn_does():
    X = blobs(n=500, d=2, k=3, seed=2)
    init = np.vstack([X[:2], [[1e3, 1e3]]])  # the third center attracts no point
    sk = sklearn_cluster.KMeans(3, init=init, n_init=1).fit(X)
    ours = mlserve.KMeans(3, init=init, n_init=1).fit(X)
    _, labels, inertia, _ = reference_lloyd(X, init)
    np.testing.assert_array_equal(ours.labels_, sk.labels_)
    np.testing.assert_array_equal(ours.labels_, labels)
    np.testing.assert_allclose(ours.cluster_centers_, sk.cluster_centers_, rtol=1e-6)
    np.testing.assert_allclose(ours.inertia_, inertia, rtol=1e-9)


def test_max_iter_stops_and_final_labels_match_centers():
    X = blobs(n=2000, d=5, k=8, seed=4)
    init = X[:8].copy()
    sk = sklearn_cluster.KMeans(8, init=init, n_init=1, max_iter=2).fit(X)
    ours = mlserve.KMeans(8, init=init, n_init=1, max_iter=2).fit(X)
    assert ours.n_iter_ == sk.n_iter_ == 2
    np.testing.assert_array_equal(ours.labels_, sk.labels_)
    np.testing.assert_array_equal(ours.predict(X), ours.labels_)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_init", [1, 3])
def test_kmeans_plus_plus_inertia_within_one_percent_of_sklearn(dtype, n_init):
    X = blobs(n=5000, d=8, k=10, seed=5, dtype=dtype)
    ours = [mlserve.KMeans(10, n_init=n_init, random_state=s).fit(X).inertia_ for s in range(5)]
    sk = [sklearn_cluster.KMeans(10, n_init=n_init, random_state=s).fit(X).inertia_
          for s in range(5)]  # fmt: skip
    assert np.median(ours) <= np.median(sk) * 1.01


def test_random_state_makes_fits_repeatable_and_seeds_differ():
    X = blobs(n=2000, d=4, k=12, seed=6)
    a = mlserve.KMeans(12, random_state=0).fit(X)
    b = mlserve.KMeans(12, random_state=0).fit(X)
    c = mlserve.KMeans(12, random_state=1).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)


def test_random_and_callable_init():
    X = blobs(n=1000, d=3, k=4, seed=7)
    est = mlserve.KMeans(4, init="random", random_state=0).fit(X)
    sk = sklearn_cluster.KMeans(4, init="random", random_state=0).fit(X)
    assert est.inertia_ <= sk.inertia_ * 1.01
    calls = []

    def first_rows(X, k, random_state):
        calls.append(k)
        return X[:k]

    est = mlserve.KMeans(4, init=first_rows, n_init=2).fit(X)
    assert calls == [4, 4]
    ref = mlserve.KMeans(4, init=X[:4]).fit(X)
    np.testing.assert_allclose(est.cluster_centers_, ref.cluster_centers_)


def test_one_row_and_one_cluster():
    X = np.array([[1.0, 2.0, 3.0]])
    est = mlserve.KMeans(1).fit(X)
    np.testing.assert_array_equal(est.cluster_centers_, X)
    assert est.inertia_ == 0.0
    X = blobs(n=300, d=2, k=2)
    est = mlserve.KMeans(1).fit(X)
    np.testing.assert_allclose(est.cluster_centers_[0], X.mean(0), rtol=1e-12)
    np.testing.assert_array_equal(est.labels_, np.zeros(300))


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_the_same_fit(threads):
    X = blobs(n=20000, d=8, k=6, seed=8)
    init = X[:6].copy()
    one = mlserve.KMeans(6, init=init).fit(X)
    before = mlserve.get_num_threads()
    mlserve.set_num_threads(threads)
    try:
        many = mlserve.KMeans(6, init=init).fit(X)
        assert mlserve.get_num_threads() == threads  # restored after the fit
    finally:
        mlserve.set_num_threads(before)
    np.testing.assert_array_equal(one.labels_, many.labels_)
    np.testing.assert_allclose(one.cluster_centers_, many.cluster_centers_, rtol=1e-12)
    assert one.n_iter_ == many.n_iter_


@pytest.mark.parametrize("k", [16, 80], ids=["hamerly", "lloyd-gemm"])
def test_fit_releases_the_gil(k):
    # while a fit runs in a thread, this thread keeps running Python: the largest
    # gap between its ticks stays far below the fit's duration (with the GIL held
    # it would be the whole fit)
    X = blobs(n=100_000, d=16, k=k, seed=11)
    done = threading.Event()
    spans = []

    def fit():
        start = time.perf_counter()
        mlserve.KMeans(k, init=X[:k], max_iter=60, tol=0).fit(X)
        spans.append(time.perf_counter() - start)
        done.set()

    worker = threading.Thread(target=fit)
    ticks = [time.perf_counter()]
    worker.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        sum(range(200))  # a little Python work per tick
    worker.join()
    (duration,) = spans
    assert duration > 0.05  # long enough to tell a held GIL from scheduling noise
    assert max(np.diff(ticks)) < 0.5 * duration


def test_fit_predict_fit_transform_and_input_not_modified():
    X = blobs(n=500, d=3, k=3)
    X_copy = X.copy()
    init = X[:3].copy()
    labels = mlserve.KMeans(3, init=init).fit_predict(X)
    distances = mlserve.KMeans(3, init=init).fit_transform(X)
    sk = sklearn_cluster.KMeans(3, init=init, n_init=1)
    np.testing.assert_array_equal(labels, sk.fit_predict(X))
    np.testing.assert_allclose(distances, sk.fit_transform(X), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(init, X_copy[:3])


# ---- predict, transform, score -----------------------------------------------------


@pytest.fixture(params=DTYPES, ids=["float64", "float32"])
def fitted_pair(request):
    dtype = request.param
    X = blobs(n=2000, d=7, k=6, seed=9, dtype=dtype)
    sk = sklearn_cluster.KMeans(6, n_init=1, random_state=0).fit(X)
    return mlserve.convert(sk, dtype=dtype), sk, X


def _layouts(X):
    yield "C", np.ascontiguousarray(X)
    yield "F", np.asfortranarray(X)
    wide = np.zeros((X.shape[0], 2 * X.shape[1]), dtype=X.dtype)
    wide[:, ::2] = X
    yield "strided columns", wide[:, ::2]
    tall = np.zeros((2 * X.shape[0], X.shape[1]), dtype=X.dtype)
    tall[::2] = X
    yield "strided rows", tall[::2]


@pytest.mark.parametrize("rows", [1, 2, 7, 300, 1000])
def test_predict_transform_score_match_sklearn(fitted_pair, rows):
    ours, sk, X = fitted_pair
    X = X[:rows]
    for layout, Xl in _layouts(X):
        np.testing.assert_array_equal(ours.predict(Xl), sk.predict(X), err_msg=layout)
        np.testing.assert_allclose(ours.transform(Xl), sk.transform(X), rtol=1e-5, atol=1e-5,
                                   err_msg=layout)  # fmt: skip
        np.testing.assert_allclose(ours.score(Xl), sk.score(X), rtol=1e-5, err_msg=layout)
    assert ours.predict(X).dtype == np.int64
    assert ours.transform(X).dtype == X.dtype


def test_transform_matches_the_numpy_reference():
    X = blobs(n=600, d=5, k=4)
    est = mlserve.KMeans(4, random_state=0).fit(X)
    for rows in (1, 3, 600):
        np.testing.assert_allclose(
            est.transform(X[:rows]), reference_distances(X[:rows], est.cluster_centers_),
            rtol=1e-9, atol=1e-9,
        )  # fmt: skip
        expected = reference_distances(X[:rows], est.cluster_centers_).argmin(1)
        np.testing.assert_array_equal(est.predict(X[:rows]), expected)


def test_one_row_as_1d_and_as_list(fitted_pair):
    ours, sk, X = fitted_pair
    row = X[3]
    np.testing.assert_array_equal(ours.predict(row), sk.predict(row[None]))
    np.testing.assert_array_equal(ours.predict(row.tolist()), sk.predict(row[None]))


def test_zero_rows_both_raise(fitted_pair):
    ours, sk, X = fitted_pair
    with pytest.raises(ValueError):
        sk.predict(X[:0])
    with pytest.raises(ValueError, match="expected at least 1 row, got 0"):
        ours.predict(X[:0])
    with pytest.raises(ValueError, match="expected at least 1 row, got 0"):
        ours.transform(X[:0])


def test_other_input_dtypes_are_converted(fitted_pair):
    ours, sk, X = fitted_pair
    other = np.float32 if X.dtype == np.float64 else np.float64
    np.testing.assert_array_equal(ours.predict(X.astype(other)), sk.predict(X))


def test_score_with_sample_weight(fitted_pair, rng):
    ours, sk, X = fitted_pair
    w = rng.uniform(size=len(X))
    np.testing.assert_allclose(ours.score(X, sample_weight=w), sk.score(X, sample_weight=w),
                               rtol=1e-5)  # fmt: skip


def test_predict_rejects_nan_naming_the_position(fitted_pair):
    ours, _, X = fitted_pair
    X = X[:10].copy()
    X[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"row 4, column 2"):
        ours.predict(X)
    with pytest.raises(ValueError, match=r"row 4, column 2"):
        ours.transform(X)


def test_predict_rejects_wrong_width(fitted_pair):
    ours, _, X = fitted_pair
    with pytest.raises(ValueError, match=r"expected 7 features, got 3 \(X has 3 features, "
                                         r"but KMeans is expecting 7 features as input\)"):
        ours.predict(X[:, :3])


def test_model_has_no_probabilities():
    est = mlserve.KMeans(2, random_state=0).fit(blobs(n=50, d=2, k=2))
    with pytest.raises(NotImplementedError, match="a kmeans model has predict and transform"):
        est.model_.predict_proba(np.zeros((1, 2)))


def test_predict_many_calls_do_not_leak():
    est = mlserve.KMeans(4, random_state=0).fit(blobs(n=500, d=4, k=4))
    row = np.zeros((1, 4))
    batch = np.zeros((500, 4))

    def run():
        for _ in range(2000):
            est.predict(row), est.transform(batch)

    # one leaked transform output per call would be 32 MB a round
    assert steady_rss_growth(run) < 8 << 20


# ---- convert --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["KMeans", "MiniBatchKMeans"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_convert_sklearn(cls, dtype):
    X = blobs(n=3000, d=5, k=4, seed=10)
    sk = getattr(sklearn_cluster, cls)(4, n_init=1, random_state=0).fit(X)
    ours = mlserve.convert(sk, dtype=dtype)
    assert isinstance(ours, mlserve.KMeans)
    assert ours.cluster_centers_.dtype == dtype
    # (scikit-learn's own predict refuses float32 rows for float64 centers)
    np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
    np.testing.assert_array_equal(
        ours.predict(X.astype(dtype)),
        reference_distances(X.astype(dtype), ours.cluster_centers_).argmin(1),
    )
    tol = 1e-9 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(ours.transform(X), sk.transform(X), rtol=tol, atol=tol)
    assert ours.inertia_ == pytest.approx(sk.inertia_)
    np.testing.assert_array_equal(ours.labels_, sk.labels_)
    meta = ours.metadata
    assert meta["task"] == "clustering" and meta["n_clusters"] == 4
    assert meta["source"]["estimator"] == f"sklearn.cluster._kmeans.{cls}"


def test_convert_unfitted_is_refused():
    with pytest.raises(mlserve.NotFittedError, match=r"KMeans is not fitted \(missing "
                                                     r"cluster_centers_\)"):
        mlserve.convert(sklearn_cluster.KMeans(3))


def test_convert_keeps_feature_names():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(blobs(n=200, d=3, k=2), columns=["a", "b", "c"])
    sk = sklearn_cluster.KMeans(2, n_init=1, random_state=0).fit(X)
    ours = mlserve.convert(sk)
    assert list(ours.feature_names_in_) == ["a", "b", "c"]
    np.testing.assert_array_equal(ours.predict(X[["c", "a", "b"]]), sk.predict(X))


# ---- parameters and errors (pinned messages) ----------------------------------------


@pytest.mark.parametrize("params, message", [
    ({"n_clusters": 0}, "n_clusters must be an integer >= 1, got 0"),
    ({"n_clusters": 2.5}, "n_clusters must be an integer >= 1, got 2.5"),
    ({"max_iter": 0}, "max_iter must be an integer >= 1, got 0"),
    ({"tol": -1.0}, "tol must be a finite number >= 0, got -1.0"),
    ({"n_init": 0}, "n_init must be 'auto' or an integer >= 1, got 0"),
    ({"init": "kmeans"}, ("init must be 'k-means++', 'random', a callable or an array of shape "
                         "(n_clusters, n_features), got 'kmeans'")),
    ({"init": np.zeros((2, 2))}, (r"init must have shape (3, 2) (n_clusters, n_features), "
                                 r"got (2, 2)")),
    ({"init": np.full((3, 2), np.nan)}, "init must hold finite numbers"),
    ({"random_state": "x"}, ("random_state must be None, an int or a numpy.random.RandomState, "
                            "got 'x'")),
], ids=lambda v: str(v)[:30])  # fmt: skip
def test_bad_parameters(params, message):
    X = blobs(n=20, d=2, k=3)
    params = {"n_clusters": 3, **params}
    with pytest.raises(ValueError) as info:
        mlserve.KMeans(**params).fit(X)
    assert str(info.value) == message


def test_more_clusters_than_samples():
    with pytest.raises(ValueError, match=r"^n_samples=3 should be >= n_clusters=4\.$"):
        mlserve.KMeans(4).fit(np.zeros((3, 2)))


def test_fit_rejects_nan_and_bad_input():
    X = blobs(n=20, d=2, k=2)
    X[5, 1] = np.inf
    with pytest.raises(ValueError, match="input X contains infinity at row 5, column 1; "
                                         "KMeans does not accept NaN or infinity"):
        mlserve.KMeans(2).fit(X)
    with pytest.raises(ValueError, match="expected a 2-D array"):
        mlserve.KMeans(2).fit(np.zeros(5))
    with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\)"):
        mlserve.KMeans(2).fit(np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(20,\)"):
        mlserve.KMeans(2).fit(blobs(n=20, d=2, k=2), sample_weight=np.ones(3))


def test_explicit_init_with_n_init_warns():
    X = blobs(n=50, d=2, k=2)
    with pytest.warns(RuntimeWarning, match="Explicit initial center position passed: "
                                            "performing only one init in KMeans instead of "
                                            "n_init=3"):
        mlserve.KMeans(2, init=X[:2], n_init=3).fit(X)


def test_duplicate_points_warn_about_fewer_distinct_clusters():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 10, axis=0)
    with pytest.warns(mlserve.ConvergenceWarning, match=r"Number of distinct clusters \(2\) "
                                                        r"found smaller than n_clusters \(3\)"):
        mlserve.KMeans(3, random_state=0).fit(X)


def test_unfitted():
    with pytest.raises(mlserve.NotFittedError, match="this KMeans instance is not fitted yet"):
        mlserve.KMeans().predict(np.zeros((1, 2)))


# ---- progress ---------------------------------------------------------------------------


def test_progress_callable_sees_every_iteration():
    X = blobs(n=2000, d=4, k=6)
    calls = []
    est = mlserve.KMeans(6, n_init=2, random_state=0,
                         progress=lambda *args: calls.append(args)).fit(X)  # fmt: skip
    inits = sorted({c[0] for c in calls})
    assert inits == [0, 1]
    for r in inits:
        iters = [c[1] for c in calls if c[0] == r]
        assert iters == list(range(1, len(iters) + 1))
    assert all(c[2] >= 0 for c in calls)
    assert est.n_iter_ in {len([c for c in calls if c[0] == r]) for r in inits}


def test_progress_tqdm_like_gets_updates():
    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    est = mlserve.KMeans(3, init=blobs(n=500, d=2, k=3)[:3], progress=bar).fit(
        blobs(n=500, d=2, k=3)
    )
    assert bar.n == est.n_iter_


def test_progress_exception_stops_the_fit():
    def stop(init, iteration, shift):
        if iteration == 2:
            raise KeyboardInterrupt("stop here")

    with pytest.raises(KeyboardInterrupt, match="stop here"):
        mlserve.KMeans(8, progress=stop, max_iter=100, tol=0).fit(blobs(n=3000, d=4, k=8))


def test_progress_must_be_callable():
    with pytest.raises(TypeError, match="progress must be None, True, False, a callable"):
        mlserve.KMeans(2, progress=3).fit(blobs(n=20, d=2, k=2))


# ---- feature names (issue 12) -----------------------------------------------------------


def test_dataframe_names_are_kept_and_matched():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(blobs(n=300, d=3, k=3), columns=["x", "y", "z"])
    est = mlserve.KMeans(3, random_state=0).fit(X)
    assert list(est.feature_names_in_) == ["x", "y", "z"]
    expected = est.predict(X.to_numpy())
    np.testing.assert_array_equal(est.predict(X[["z", "x", "y"]]), expected)
    np.testing.assert_allclose(est.transform(X[["y", "z", "x"]]), est.transform(X.to_numpy()))
    with pytest.raises(ValueError, match="X is missing feature 'z' that the model was fitted "
                                         "with, and has feature 'w' that the model was not "
                                         "fitted with"):
        est.predict(X.rename(columns={"z": "w"}))
    with pytest.raises(ValueError, match="X has feature 'extra' that the model was not fitted"):
        est.transform(X.assign(extra=1.0))
    loaded = mlserve.load(_saved(est))
    np.testing.assert_array_equal(loaded.predict(X[["z", "x", "y"]]), expected)


# ---- the .mls file -----------------------------------------------------------------------


_TMP = []


def _saved(est):
    import tempfile

    d = tempfile.mkdtemp(prefix="mlserve-kmeans-")
    _TMP.append(d)
    path = f"{d}/model.mls"
    mlserve.save(est, path)
    return path


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_load_round_trip_is_mapped(dtype, tmp_path):
    X = blobs(n=500, d=4, k=3, dtype=dtype)
    est = mlserve.KMeans(3, random_state=0).fit(X)
    path = tmp_path / "k.mls"
    mlserve.save(est, path)
    loaded = mlserve.load(path)
    assert isinstance(loaded, mlserve.KMeans)
    assert loaded.model_.mapping is not None  # centers used in place
    np.testing.assert_array_equal(loaded.cluster_centers_, est.cluster_centers_)
    np.testing.assert_array_equal(loaded.predict(X), est.labels_)
    np.testing.assert_array_equal(loaded.transform(X), est.transform(X))
    assert loaded.inertia_ == est.inertia_ and loaded.n_iter_ == est.n_iter_
    assert loaded.get_params() == {**est.get_params(), "progress": None}
    assert _Layout(path.read_bytes()).kind == 4  # MLS_KIND_KMEANS
    assert not hasattr(loaded, "labels_")  # training labels are not in the file


def test_pickle_keeps_labels():
    est = mlserve.KMeans(3, random_state=0).fit(blobs(n=100, d=2, k=3))
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.labels_, est.labels_)
    np.testing.assert_array_equal(back.cluster_centers_, est.cluster_centers_)


@pytest.fixture
def kmeans_file(tmp_path):
    est = mlserve.KMeans(3, random_state=0).fit(blobs(n=100, d=2, k=3))
    path = tmp_path / "k.mls"
    mlserve.save(est, path)
    return path.read_bytes()


def _with_section(data, name="cluster_centers", payload=None, **fields):
    """``data`` with the section's entry patched and its data replaced, checksums resealed."""
    data = bytearray(data)
    sec = _Layout(data).sections[name]
    entry = sec["entry"]
    if payload is not None:
        data[sec["offset"]:sec["offset"] + len(payload)] = payload
    for key, value in fields.items():
        if key == "shape":
            for d in range(4):
                struct.pack_into("<Q", data, entry + 72 + 8 * d, value[d] if d < len(value) else 0)
        else:
            offset = {"dtype": 64, "ndim": 68, "length": 112}[key]
            fmt = "<I" if key in ("dtype", "ndim") else "<Q"
            struct.pack_into(fmt, data, entry + offset, value)
    new = _Layout(data).sections[name]
    if new["length"] < sec["length"]:  # the bytes given up become padding, which is zero
        data[new["offset"] + new["length"]:sec["offset"] + sec["length"]] = bytes(
            sec["length"] - new["length"]
        )
    sec = new
    raw = bytes(data[sec["offset"]:sec["offset"] + sec["length"]])
    struct.pack_into("<Q", data, entry + 120, section_checksum(raw))
    return reseal(data)


@pytest.mark.parametrize("patch, message", [
    ({"dtype": 3, "length": 6 * 4}, ("section 'cluster_centers' must be float32 or float64, "
                                    "got int32")),
    ({"ndim": 1, "shape": [6]}, (r"section 'cluster_centers' must be 2-D \(n_clusters, "
                                r"n_features\), got 1 dimensions")),
    ({"shape": [0, 2], "length": 0}, (r"section 'cluster_centers' has an unusable shape "
                                     r"\(0, 2\); at least 1 cluster")),
    ({"shape": [3, 0], "length": 0}, r"unusable shape \(3, 0\)"),
    ({"shape": [2, 2], "length": 32}, None),  # fewer clusters: a valid model of 2
], ids=["dtype", "ndim", "zero clusters", "zero features", "two clusters"])  # fmt: skip
def test_crafted_centers_section(kmeans_file, patch, message):
    data = _with_section(kmeans_file, **patch)
    if message is None:
        model = _core.loads(data)
        assert model.transform(np.zeros((1, 2))).shape == (1, 2)
        return
    with pytest.raises(mlserve.ModelFormatError, match=message):
        _core.loads(data)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_centers_are_rejected(kmeans_file, value):
    payload = np.array([[0.0, 1.0], [value, 2.0], [3.0, 4.0]]).tobytes()
    with pytest.raises(mlserve.ModelFormatError,
                       match="section 'cluster_centers' contains NaN or infinity"):
        _core.loads(_with_section(kmeans_file, payload=payload))


def test_missing_centers_section(kmeans_file):
    data = bytearray(kmeans_file)
    entry = _Layout(data).sections["cluster_centers"]["entry"]
    data[entry:entry + 7] = b"centers"  # renamed: "centersr_centers"
    with pytest.raises(mlserve.ModelFormatError,
                       match="a kmeans model needs a section 'cluster_centers'"):
        _core.loads(reseal(data))


def test_create_rejects_bad_centers():
    with pytest.raises(ValueError, match="contains NaN or infinity"):
        _core.create("kmeans", {"cluster_centers": np.array([[np.nan, 1.0]])}, "{}")
    with pytest.raises(ValueError, match=r"unusable shape \(0, 3\)"):
        _core.create("kmeans", {"cluster_centers": np.zeros((0, 3))}, "{}")


def test_truncated_and_fuzzed_files_never_crash(kmeans_file, rng):
    data = kmeans_file
    for length in range(0, len(data), max(1, len(data) // 97)):
        with pytest.raises(mlserve.ModelFormatError):
            _core.loads(data[:length])
    lay = _Layout(data)
    sec = lay.sections["cluster_centers"]
    accepted = 0
    for _ in range(400):
        mutated = bytearray(data)
        # mutate the section entry or data, then reseal, so the kind's own checks run
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.5:
                pos = sec["entry"] + int(rng.integers(64, 120))
            else:
                pos = sec["offset"] + int(rng.integers(0, sec["length"]))
            mutated[pos] = int(rng.integers(0, 256))
        try:
            fields = _Layout(mutated).sections["cluster_centers"]
            raw = bytes(mutated[fields["offset"]:fields["offset"] + fields["length"]])
            struct.pack_into("<Q", mutated, fields["entry"] + 120, section_checksum(raw))
        except (struct.error, KeyError, UnicodeDecodeError):
            pass
        try:
            model = _core.loads(reseal(mutated))
        except mlserve.ModelFormatError:
            continue
        accepted += 1
        rows = np.zeros((2, model.n_features), dtype=model.dtype)
        out = model.transform(rows)  # huge finite centers may give inf, never NaN
        assert out.shape[0] == 2 and not np.isnan(out).any()
        labels = model.predict(rows)
        assert ((labels >= 0) & (labels < out.shape[1])).all()
    assert accepted < 400  # most mutations are caught


def test_kind_constants():
    assert _core.METHOD_TRANSFORM == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = mlserve.KMeans(2, random_state=0).fit(blobs(n=40, d=2, k=2))
    assert est.model_.kind == "kmeans"
    assert est.model_.output_spec(_core.METHOD_TRANSFORM) == (2, 2, "float64")
    assert est.model_.output_spec(_core.METHOD_PREDICT) == (1, 1, "int64")


@pytest.mark.parametrize(("n_clusters", "d"), [(1, 1), (1, 6), (3, 1), (2, 2)])
def test_convert_matches_sklearn_on_edge_shapes_and_both_refuse_nan(n_clusters, d):
    X = np.random.default_rng(n_clusters * 10 + d).normal(size=(50, d))
    sk = sklearn_cluster.KMeans(n_clusters, n_init=1, random_state=0).fit(X)
    ours = mlserve.convert(sk)
    for rows in (X[:1], X[:2], X):  # one row, two rows, all
        np.testing.assert_array_equal(ours.predict(rows), sk.predict(rows))
        np.testing.assert_allclose(ours.transform(rows), sk.transform(rows), rtol=1e-9, atol=1e-12)
        assert ours.score(rows) == pytest.approx(sk.score(rows), rel=1e-9, abs=1e-12)
    bad = X[:3].copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError):
        sk.predict(bad)
    with pytest.raises(ValueError, match=r"row 1, column 0"):
        ours.predict(bad)
