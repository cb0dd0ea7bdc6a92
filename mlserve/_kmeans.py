"""k-means clustering whose fit, predict and transform run in C (csrc/mls_kmeans.c).

``KMeans`` follows scikit-learn's ``sklearn.cluster.KMeans``: the same
parameters (the ``lloyd`` algorithm), attributes and results (with the same
explicit ``init`` and ``n_init=1`` the labels are equal and the centers and
inertia agree to rounding). The model file holds the centers only; ``labels_``
of the training data live in memory (and in a pickle), not in the ``.mls`` file.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np

from . import _core
from ._errors import ConvergenceWarning
from ._estimators import (
    ESTIMATORS,
    _as_feature_matrix,
    _as_sample_weight,
    _MLServeEstimator,
    _store_reference_statistics,
    _training_statistics,
)
from ._mixins import _by_name, _ndarray
from ._progress import Reporter

_INIT_STRINGS = ("k-means++", "random")


def _check_random_state(seed) -> np.random.RandomState:
    """scikit-learn's check_random_state, without importing scikit-learn."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(
        f"random_state must be None, an int or a numpy.random.RandomState, got {seed!r}"
    )


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


INTERVAL = 0.1  # seconds between the GIL takes of a fit without a callable (ten a second)


class _LloydReporter:
    """Adapts the C fit's (init, iteration, center_shift) reports to a Reporter
    of all Lloyd iterations so far (reports come at most ten times a second, so
    the count is rebuilt from the iteration numbers, not from the calls)."""

    def __init__(self, reporter: Reporter, max_iter: int):
        self.reporter = reporter
        self.max_iter = max_iter
        self.base = 0  # iterations of the inits before the current one
        self.init = 0
        self.last = 0

    def next_run(self) -> None:  # a new C call (explicit inits: one init each)
        self.base += self.last
        self.init, self.last = 0, 0

    def __call__(self, init, iteration, shift):
        if init != self.init:
            self.base += self.last
            self.init = init
        self.last = int(iteration)
        self.reporter.update(self.base + self.last)

    def close(self) -> None:
        self.reporter.close(self.base + self.last)


class KMeans(_MLServeEstimator):
    """k-means clustering (Lloyd), fitted and evaluated in C.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters (centers); at most the number of training rows.
    init : {"k-means++", "random"}, callable or array-like of shape (n_clusters, n_features)
        "k-means++": greedy k-means++ (``2 + int(log(n_clusters))`` candidates per
        center, as scikit-learn); "random": ``n_clusters`` distinct rows; a callable
        ``init(X, n_clusters, random_state)`` returns the centers; an array gives
        them (then one init runs).
    n_init : "auto" or int, default="auto"
        Inits to run, keeping the one of the lowest inertia. "auto": 1 for
        "k-means++" or an array, 10 for "random" or a callable.
    max_iter : int, default=300
        Lloyd iterations per init.
    tol : float, default=1e-4
        Stop when the summed squared movement of the centers is at most
        ``tol`` times the mean per-feature variance of X (or when no label changes).
    random_state : None, int or numpy.random.RandomState
        Seeds the inits.
    progress : None, True, False, callable or tqdm-like, default=None
        True draws a ``tqdm.auto`` bar of the Lloyd iterations, False none, None
        one only when the fit runs longer than a second in a notebook or a
        terminal (these take the GIL at most ten times a second). A callable is
        called after every Lloyd iteration as
        ``progress(init, iteration, center_shift)`` (init counts from 0,
        iteration from 1); an object with an ``update`` method (a ``tqdm`` bar)
        gets ``update(1)``. An exception it raises stops the fit and propagates.
        Ctrl-C stops the fit within a fraction of a second (KeyboardInterrupt;
        the estimator is left unfitted).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        float32 for float32 training data, else float64 (read-only view of the model).
    labels_ : ndarray of shape (n_samples,), int64
        Cluster of each training row (after fit; not stored in .mls files).
    inertia_ : float
        Weighted sum of squared distances of the training rows to their centers.
    n_iter_ : int
        Lloyd iterations of the kept init.
    n_features_in_ : int
    feature_names_in_ : ndarray of str, when fit on a DataFrame with string columns

    Notes
    -----
    The Lloyd passes run on ``mlserve.get_num_threads()`` threads (OpenBLAS is
    held at 1 thread meanwhile, so threads do not multiply), with the GIL released.
    """

    _kind = "kmeans"
    _estimator_type = "clusterer"

    def __init__(
        self,
        n_clusters=8,
        *,
        init="k-means++",
        n_init="auto",
        max_iter=300,
        tol=1e-4,
        random_state=None,
        progress=None,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.progress = progress

    def __sklearn_tags__(self):
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type="clusterer",
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]),
            input_tags=InputTags(),
        )

    # ------------------------------------------------------------- parameters

    def _check_params(self, n_features: int):
        k, n_init, max_iter, tol = self.n_clusters, self.n_init, self.max_iter, self.tol
        if not _is_int(k) or k < 1:
            raise ValueError(f"n_clusters must be an integer >= 1, got {k!r}")
        if not (_is_int(max_iter) and max_iter >= 1):
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        if not (_is_real(tol) and np.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
        init = self.init
        is_array = not isinstance(init, str) and not callable(init)
        if isinstance(init, str) and init not in _INIT_STRINGS:
            raise ValueError(
                f"init must be 'k-means++', 'random', a callable or an array of shape "
                f"(n_clusters, n_features), got {init!r}"
            )
        if n_init == "auto":
            n_init = 1 if is_array or init == "k-means++" else 10
        elif not (_is_int(n_init) and n_init >= 1):
            raise ValueError(f"n_init must be 'auto' or an integer >= 1, got {n_init!r}")
        elif is_array and n_init != 1:
            warnings.warn(
                "Explicit initial center position passed: performing only one init in "
                f"{type(self).__name__} instead of n_init={n_init}.",
                RuntimeWarning,
                stacklevel=3,
            )
            n_init = 1
        return int(k), int(n_init), int(max_iter), float(tol)

    def _init_centers(self, X, k, rs, w):
        """Explicit centers for an array, "random" or callable init; None for k-means++."""
        init = self.init
        if isinstance(init, str):
            if init == "k-means++":
                return None
            p = None if w is None else w / w.sum()
            ids = rs.choice(X.shape[0], size=k, replace=False, p=p)
            return X[ids]
        centers = init(X, k, rs) if callable(init) else init
        centers = np.asarray(centers)
        if centers.ndim != 2 or centers.shape != (k, X.shape[1]):
            raise ValueError(
                f"init must have shape ({k}, {X.shape[1]}) (n_clusters, n_features), "
                f"got {centers.shape}"
            )
        if centers.dtype.kind not in "fiub" or not np.isfinite(centers).all():
            raise ValueError("init must hold finite numbers")
        return np.ascontiguousarray(centers, dtype=X.dtype)

    def _progress_callable(self, n_init: int, max_iter: int):
        """(callable for the C fit, interval in seconds, reporter or None)."""
        progress = self.progress
        if progress is None or progress is True or progress is False:
            reporter = _LloydReporter(Reporter(progress, n_init * max_iter, "KMeans"), max_iter)
            return (reporter if progress is not False else None), INTERVAL, reporter
        update = getattr(progress, "update", None)
        if callable(update):
            return (lambda init, iteration, shift: update(1)), 0.0, None
        if callable(progress):
            return progress, 0.0, None
        raise TypeError(
            "progress must be None, True, False, a callable (init, iteration, center_shift) "
            f"or an object with an update method (tqdm), got {type(progress).__name__}"
        )

    # -------------------------------------------------------------------- fit

    def fit(self, X, y=None, sample_weight=None):
        """Fit in C.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            float32 data is clustered in float32, anything else in float64.
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        name = type(self).__name__
        X, feature_names = _as_feature_matrix(X, name, keep_float32=True)
        k, n_init, max_iter, tol = self._check_params(X.shape[1])
        if X.shape[0] < k:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={k}.")
        w = _as_sample_weight(sample_weight, X.shape[0])
        rs = _check_random_state(self.random_state)
        progress, interval, reporter = self._progress_callable(n_init, max_iter)
        try:
            best = self._fit_inits(X, w, k, n_init, max_iter, tol, rs, progress, interval)
        except KeyboardInterrupt:
            self._forget_fit()
            raise
        finally:
            if reporter is not None:
                reporter.close()
        centers, labels, inertia, n_iter = best
        n_distinct = np.unique(labels).shape[0]
        if n_distinct < k:
            warnings.warn(
                f"Number of distinct clusters ({n_distinct}) found smaller than "
                f"n_clusters ({k}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._set_features(X, feature_names)
        metadata = self._build_metadata(
            1,
            [],
            {
                "task": "clustering",
                "n_clusters": k,
                "inertia": float(inertia),
                "n_iter": int(n_iter),
                "dtype": X.dtype.name,
                "training": _training_statistics(X),
            },
        )
        self._install(_core.create(self._kind, {"cluster_centers": centers}, metadata))
        _store_reference_statistics(self, X)
        self.labels_ = labels
        return self

    def _fit_inits(self, X, w, k, n_init, max_iter, tol, rs, progress, interval):
        """(centers, labels, inertia, n_iter) of the best init."""
        # scikit-learn's tolerance: relative to the mean variance of the features
        abs_tol = float(np.mean(np.var(X, axis=0, dtype=np.float64)) * tol) if tol else 0.0
        threads = _core.get_num_threads()
        best = None
        # explicit inits are drawn in Python (one C call each); k-means++ runs all its
        # inits in one C call
        explicit = self._init_centers(X, k, rs, w)
        if explicit is None:
            seed = int(rs.randint(np.iinfo(np.int32).max)) << 31 | int(
                rs.randint(np.iinfo(np.int32).max)
            )
            best = self._run(X, w, k, None, n_init, max_iter, abs_tol, seed, threads, progress, interval)
        else:
            for r in range(n_init):
                init = explicit if r == 0 else self._init_centers(X, k, rs, w)
                if r and isinstance(progress, _LloydReporter):
                    progress.next_run()
                result = self._run(X, w, k, init, 1, max_iter, abs_tol, 0, threads, progress, interval)
                if best is None or result[2] < best[2]:
                    best = result
        return best

    @staticmethod
    def _run(X, w, k, init, n_init, max_iter, tol, seed, threads, progress, interval):
        if threads <= 1:
            return _core.kmeans_fit(
                X, w, k, init, n_init, max_iter, tol, seed, 1, progress, interval
            )
        # the Lloyd passes run on `threads` threads; BLAS inside each stays at 1
        _core.set_num_threads(1)
        try:
            return _core.kmeans_fit(
                X, w, k, init, n_init, max_iter, tol, seed, threads, progress, interval
            )
        finally:
            _core.set_num_threads(threads)

    def _install_arrays(self, arrays: dict, meta: dict) -> None:
        self.cluster_centers_ = arrays["cluster_centers"]
        self.inertia_ = float(meta.get("inertia", float("nan")))
        self.n_iter_ = int(meta.get("n_iter", 0))
        if hasattr(self, "labels_"):
            del self.labels_  # a new model: the previous fit's labels no longer apply

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then the cluster of each training row (``labels_``)."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def fit_transform(self, X, y=None, sample_weight=None):
        """Fit, then the distances of the training rows to every center."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    # ---------------------------------------------------------------- predict

    def predict(self, X):
        """Index of the nearest center for one row (1-D) or a batch (2-D), in C.

        Returns
        -------
        ndarray of shape (n_samples,), int64
        """
        if type(X) is not _ndarray:
            X = _by_name(self, X)
        return self._fitted_model().predict(X)

    def transform(self, X):
        """Euclidean distance of each row to every center, in C.

        Returns
        -------
        ndarray of shape (n_samples, n_clusters), the dtype of ``cluster_centers_``
        """
        if type(X) is not _ndarray:
            X = _by_name(self, X)
        return self._fitted_model().transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of X against the centers (higher is better)."""
        model = self._fitted_model()
        if type(X) is not _ndarray:
            X = _by_name(self, X)
        labels = model.predict(X)  # validates X (shape, NaN) in C
        X = np.asarray(X, dtype=self.cluster_centers_.dtype).reshape(labels.shape[0], -1)
        w = _as_sample_weight(sample_weight, X.shape[0])
        diff = X - self.cluster_centers_[labels]
        dist = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
        return -float(dist.sum() if w is None else dist @ w)

    def get_feature_names_out(self, input_features=None):
        """``kmeans0``, ``kmeans1``, ...: the names of transform's columns."""
        self._fitted_model()
        return np.asarray([f"kmeans{i}" for i in range(self.cluster_centers_.shape[0])],
                          dtype=object)  # fmt: skip

    # labels_ of the training data travel with a pickle (not with an .mls file)
    def __getstate__(self):
        state = super().__getstate__()
        if hasattr(self, "labels_"):
            state["labels_"] = self.labels_
        return state

    def __setstate__(self, state):
        state = dict(state)
        labels = state.pop("labels_", None)
        super().__setstate__(state)
        if labels is not None:
            self.labels_ = labels


ESTIMATORS[KMeans.__name__] = KMeans  # mlserve.load finds it

__all__ = ["KMeans"]
