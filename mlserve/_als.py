"""Implicit-feedback ALS (Hu, Koren, Volinsky 2008), fitted in C.

The solver (csrc/mls_als.c) is the conjugate-gradient one the `implicit`
library uses on CPU (3 CG steps per row solve, warm-started): this module
only validates the input, draws the initial factors and calls one C
half-step per side per iteration, with the GIL released during each.
"""

from __future__ import annotations

import inspect
import math
import numbers

import numpy as np

from . import _core
from ._progress import Reporter

# Conjugate-gradient steps per row solve, as implicit's CPU default.
CG_STEPS = 3
# Initial factors are uniform in [0, INIT_SCALE), as implicit's.
INIT_SCALE = 0.01


def _check_number(
    name: str, value, *, integer: bool, minimum, allow_equal: bool = True
):
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    if not integer and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < minimum or (not allow_equal and value == minimum):
        bound = ">=" if allow_equal else ">"
        raise ValueError(f"{name} must be {bound} {minimum}, got {value}")


def _as_user_items(user_items) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(indptr int64, indices int32, values float32, n_users, n_items) of a
    scipy CSR matrix, copied only where a dtype or duplicates need it."""
    try:
        from scipy import sparse
    except ImportError:  # then it cannot be a scipy matrix either
        sparse = None
    expected = "user_items must be a scipy.sparse CSR matrix (users x items)"
    if sparse is None or not sparse.issparse(user_items):
        raise TypeError(
            f"{expected}, got {type(user_items).__module__}.{type(user_items).__name__}"
        )
    if user_items.format != "csr":
        raise TypeError(
            f"{expected}, got a {user_items.format.upper()} matrix: convert it with .tocsr()"
        )
    if user_items.ndim != 2:
        raise ValueError(f"{expected}, got a {user_items.ndim}-D array")
    n_users, n_items = user_items.shape
    if n_users == 0 or n_items == 0:
        raise ValueError(
            f"user_items is empty ({n_users} users x {n_items} items); "
            "ALS needs at least one user and one item"
        )
    if user_items.dtype.kind not in "biuf":
        raise TypeError(
            "user_items must hold real numbers (interaction counts or strengths), "
            f"got dtype {user_items.dtype}"
        )
    if user_items.nnz == 0:
        raise ValueError(
            f"user_items ({n_users} users x {n_items} items) has no interactions"
        )
    if not user_items.has_canonical_format:
        # a repeated (user, item) entry means their sum, as in scipy; the
        # caller's matrix is left as it is
        user_items = user_items.copy()
        user_items.sum_duplicates()
    indptr = np.ascontiguousarray(user_items.indptr, dtype=np.int64)
    indices = np.ascontiguousarray(user_items.indices, dtype=np.int32)
    with np.errstate(
        over="ignore"
    ):  # a value beyond float32 becomes inf: rejected in C
        values = np.ascontiguousarray(user_items.data, dtype=np.float32)
    _core.als_check(indptr, indices, values, n_items, "user_items")
    return indptr, indices, values, n_users, n_items


def _progress_reporter(progress, iterations: int):
    """(update(iteration), close(iteration)) for progress=None (a bar when the fit
    runs long and a person watches), True (a tqdm bar), False, or a callable
    progress(iteration, iterations)."""
    if progress is None or progress is True or progress is False:
        reporter = Reporter(progress, iterations, "ALS")
        return reporter.update, reporter.close
    if callable(progress):
        return (lambda done: progress(done, iterations)), (lambda done=None: None)
    raise TypeError(
        "progress must be None, True, False or a callable progress(iteration, iterations), "
        f"got {type(progress).__name__}"
    )


def _initial_factors(random_state, n_users: int, n_items: int, factors: int):
    if isinstance(random_state, np.random.RandomState):
        draw = random_state.random_sample
    else:
        try:
            rng = np.random.default_rng(random_state)
        except (TypeError, ValueError):
            raise TypeError(
                "random_state must be None, an int, a numpy Generator or RandomState, "
                f"got {type(random_state).__name__}"
            ) from None

        def draw(shape):
            return rng.random(shape, dtype=np.float32)

    item_factors = (draw((n_items, factors)) * INIT_SCALE).astype(
        np.float32, copy=False
    )
    user_factors = (draw((n_users, factors)) * INIT_SCALE).astype(
        np.float32, copy=False
    )
    return np.ascontiguousarray(user_factors), np.ascontiguousarray(item_factors)


class ALS:
    """Implicit-feedback matrix factorisation by alternating least squares.

    Hu, Koren and Volinsky (2008), solved per user and per item with
    conjugate-gradient steps as the `implicit` library does (3 steps per solve,
    starting from the previous iteration's factors). Runs in C with the GIL
    released, over ``num_threads`` threads.

    Parameters
    ----------
    factors : int, default 64
        Dimension of the latent factors.
    regularization : float, default 0.01
        L2 penalty on every factor vector (not scaled by its number of interactions).
    iterations : int, default 15
        Alternations (each solves all users, then all items).
    alpha : float, default 1.0
        Confidence of an interaction of strength r is ``1 + alpha * r``; missing entries
        have confidence 1 and preference 0.
    random_state : None, int, numpy Generator or RandomState
        Seeds the initial factors (uniform in [0, 0.01)). The same seed and data give
        the same factors whatever the number of threads.
    progress : None, True, False or callable
        True draws a ``tqdm.auto`` progress bar, False none, None one only when
        the fit runs longer than a second in a notebook or a terminal; a callable
        is called as ``progress(iteration, iterations)`` after each iteration
        (1-based). Ctrl-C stops the fit after the half-step in progress
        (KeyboardInterrupt; no factors are returned).
    num_threads : int, default 0
        Threads of the fit; 0 means every CPU this process may run on (as implicit's
        ``num_threads=0``). A fit is an offline job, so this is independent of
        ``mlserve.set_num_threads`` (OpenBLAS's threads, 1 by default for serving).
    """

    def __init__(
        self,
        factors=64,
        regularization=0.01,
        iterations=15,
        alpha=1.0,
        random_state=None,
        progress=None,
        num_threads=0,
    ):
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.random_state = random_state
        self.progress = progress
        self.num_threads = num_threads

    def __repr__(self) -> str:
        from ._display import params_repr

        return params_repr(self)

    def get_params(self, deep: bool = True) -> dict:
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def _repr_html_(self) -> str:
        from ._display import params_html

        return params_html(self)

    def _check_params(self) -> None:
        _check_number("factors", self.factors, integer=True, minimum=1)
        _check_number("regularization", self.regularization, integer=False, minimum=0)
        _check_number("iterations", self.iterations, integer=True, minimum=1)
        _check_number("alpha", self.alpha, integer=False, minimum=0)
        _check_number("num_threads", self.num_threads, integer=True, minimum=0)

    def fit(self, user_items, *, item_ids=None, user_ids=None):
        """Factorise ``user_items`` (scipy CSR, users x items, counts or strengths >= 0).

        Returns
        -------
        mlserve.Recommender
            With the fitted ``user_factors`` and ``item_factors`` (float32), this
            model's ``regularization`` and ``alpha``; ``item_ids``/``user_ids``
            (optional, one per column/row) are passed on to it. Its
            ``recommend_for_history`` folds a new user in by the ALS objective
            (one least-squares solve, no refit).
        """
        from ._recommender import Recommender

        user_factors, item_factors = self.fit_factors(user_items)
        return Recommender(
            user_factors,
            item_factors,
            item_ids=item_ids,
            user_ids=user_ids,
            regularization=float(self.regularization),
            alpha=float(self.alpha),
        )

    def fit_factors(self, user_items) -> tuple[np.ndarray, np.ndarray]:
        """Factorise ``user_items``; returns (user_factors, item_factors), float32.

        Users and items without interactions get zero factors.
        """
        self._check_params()
        indptr, indices, values, n_users, n_items = _as_user_items(user_items)
        update, close = _progress_reporter(self.progress, self.iterations)
        factors = int(self.factors)
        user_factors, item_factors = _initial_factors(
            self.random_state, n_users, n_items, factors
        )
        t_indptr, t_indices, t_values = _core.als_transpose(
            indptr, indices, values, n_items
        )
        solve_args = (
            float(self.alpha),
            float(self.regularization),
            CG_STEPS,
            int(self.num_threads),
        )
        done = 0
        try:
            for done in range(1, int(self.iterations) + 1):
                _core.als_solve(
                    indptr, indices, values, user_factors, item_factors, *solve_args
                )
                _core.als_solve(
                    t_indptr,
                    t_indices,
                    t_values,
                    item_factors,
                    user_factors,
                    *solve_args,
                )
                update(done)
        finally:
            close(done)
        return user_factors, item_factors


def fold_in(
    item_factors: np.ndarray, gram: np.ndarray, items: np.ndarray, alpha: float
):
    """The factors (f,) of a new user who interacted once with each of ``items``
    (row indices into ``item_factors``, float32, C-contiguous): the exact
    minimiser of the ALS objective with the item factors fixed, one Cholesky
    solve in C. ``gram`` is ``_core.als_gram(item_factors, regularization)``."""
    items = np.asarray(items, dtype=np.int32)
    indptr = np.array([0, items.size], dtype=np.int64)
    values = np.ones(items.size, dtype=np.float32)
    return _core.als_fold_in(indptr, items, values, item_factors, gram, float(alpha))[0]
