"""Exact top-k recommendations from factor matrices, in C (csrc/mls_topk.c).

:class:`Recommender` holds a user factor matrix ``U`` (n_users, d) and an
item factor matrix ``V`` (n_items, d), from any matrix factorisation (ALS,
``mlserve``'s own or ``implicit``'s, BPR, ...). ``recommend`` returns for each
user the k items of highest inner product ``U[u] @ V.T``, computed exactly
(blocked GEMM over the items and a bounded heap per user, never the full
score matrix), ``similar_items`` the k items of highest cosine.

Ties go to the lower item index. Saved in one ``.mls`` file; a loaded
model's factors are views of the file mapping, so gunicorn workers share
one copy of a large catalogue.

Ids: with ``item_ids``/``user_ids`` (all ints, or all strings; unique) the
methods take and return ids instead of row indices. Integer ids are stored
as an int64 array and, when increasing, looked up by binary search in the
mapped array (no per-worker copy); other ids get a dictionary, built on
first use.

Fold-in (a new user from their history, without refitting): the user
vector is the ridge least-squares solution of ``V_I u = 1`` over the items I
of the history,

    u = (V_I^T V_I + regularization * I)^-1 V_I^T 1,

the simplest form of implicit's ``recalculate_user`` (all confidences 1).
``regularization`` is stored with the model (ALS sets it to its own).

A model fitted by ``mlserve.ALS`` also stores its ``alpha``; its fold-in is
then the ALS objective itself with the item factors fixed (the full Gram
matrix V^T V of every item, confidence 1 + alpha on the history's items:
what ALS would compute for that user, see csrc/mls_als.c), one Cholesky
solve in C per user.
"""

from __future__ import annotations

import datetime
import json
import numbers
import os
import tempfile

import numpy as np

from . import _core
from ._estimators import ESTIMATORS, FORMAT_VERSION, _library_version, _MLServeEstimator

__all__ = ["Recommender"]

DEFAULT_REGULARIZATION = 0.01  # implicit's ALS default


def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def _factor_matrix(values, name: str, dtype=None) -> np.ndarray:
    if hasattr(values, "toarray"):
        raise TypeError(f"{name} must be a dense 2-D array, got a sparse matrix")
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, factors), got {arr.ndim}-D")
    if dtype is None:
        dtype = np.float32 if arr.dtype == np.float32 else np.float64
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if arr.size and not np.isfinite(arr).all():
        row, col = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contains NaN or infinity at row {row}, factor {col}")
    return arr


def _id_sections(ids, n: int, who: str) -> tuple[dict, str | None]:
    """The .mls sections of ``n`` ids and their type ("int" or "str")."""
    if ids is None:
        return {}, None
    if isinstance(ids, (str, bytes)):
        raise TypeError(
            f"{who}_ids must be a sequence of ids, got a single {type(ids).__name__}"
        )
    ids = list(ids) if not isinstance(ids, np.ndarray) else ids.tolist()
    if len(ids) != n:
        raise ValueError(
            f"{who}_ids has {len(ids)} ids but there are {n} {who}s (factor rows)"
        )
    if all(_is_int(i) for i in ids):
        arr = np.asarray(ids, dtype=np.int64)
        if len(np.unique(arr)) != n:
            raise ValueError(
                f"{who}_ids must be unique; {_first_duplicate(ids)!r} repeats"
            )
        return {f"{who}_ids": arr}, "int"
    if all(isinstance(i, str) for i in ids):
        if len(set(ids)) != n:
            raise ValueError(
                f"{who}_ids must be unique; {_first_duplicate(ids)!r} repeats"
            )
        encoded = [i.encode("utf-8") for i in ids]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        return {f"{who}_id_offsets": offsets, f"{who}_id_bytes": blob}, "str"
    kinds = sorted({type(i).__name__ for i in ids})
    raise TypeError(f"{who}_ids must be all integers or all strings, got types {kinds}")


def _first_duplicate(values):
    seen = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


class _IdIndex:
    """Ids <-> row indices for users or items (over the model's arrays, no copy
    for increasing integer ids)."""

    def __init__(self, arrays: dict, who: str, n: int):
        self.who, self.n = who, n
        self._ints = arrays.get(f"{who}_ids")
        self._offsets = arrays.get(f"{who}_id_offsets")
        self._bytes = arrays.get(f"{who}_id_bytes")
        self.kind = (
            "int"
            if self._ints is not None
            else ("str" if self._bytes is not None else None)
        )
        self._sorted = self._ints is not None and bool(
            np.all(self._ints[1:] > self._ints[:-1])
        )
        self._lookup: dict | None = None
        self._values: np.ndarray | None = None

    def values(self) -> np.ndarray | None:
        """The ids as an array: int64 (a view of the model) or object (str)."""
        if self.kind == "int":
            return self._ints
        if self.kind == "str" and self._values is None:
            raw, off = self._bytes.tobytes(), self._offsets
            self._values = np.array(
                [raw[off[i] : off[i + 1]].decode("utf-8") for i in range(self.n)],
                dtype=object,
            )
        return self._values

    def _dict(self) -> dict:
        if self._lookup is None:
            self._lookup = {v: i for i, v in enumerate(self.values().tolist())}
        return self._lookup

    def to_index(self, values, what: str) -> np.ndarray:
        """Row indices of ``values`` (ids, or indices when the model has none)."""
        values = list(values)
        if self.kind is None:
            for v in values:
                if not _is_int(v):
                    raise TypeError(
                        f"{what} must be integer {self.who} indices (the model has no "
                        f"{self.who} ids), got {type(v).__name__} {v!r}"
                    )
            out = np.asarray(values, dtype=np.int64).reshape(-1)
            bad = (out < 0) | (out >= self.n)
            if bad.any():
                raise ValueError(
                    f"{self.who} index {int(out[bad][0])} is out of range [0, {self.n})"
                )
            return out
        want = int if self.kind == "int" else str
        for v in values:
            if not (_is_int(v) if want is int else isinstance(v, str)):
                raise TypeError(
                    f"{what} must be {self.who} ids of type {self.kind}, got "
                    f"{type(v).__name__} {v!r}"
                )
        if self.kind == "int" and self._sorted:
            keys = np.asarray(values, dtype=np.int64).reshape(-1)
            pos = np.searchsorted(self._ints, keys)
            pos_clipped = np.minimum(pos, self.n - 1)
            unknown = self._ints[pos_clipped] != keys
            if unknown.any():
                raise ValueError(f"unknown {self.who} id {int(keys[unknown][0])!r}")
            return pos.astype(np.int64)
        lookup = self._dict()
        out = np.empty(len(values), dtype=np.int64)
        for j, v in enumerate(values):
            try:
                out[j] = lookup[int(v) if want is int else v]
            except KeyError:
                raise ValueError(f"unknown {self.who} id {v!r}") from None
        return out

    def from_index(self, index: np.ndarray) -> np.ndarray:
        """Ids of row indices (-1, "no item", becomes None in an object array)."""
        values = self.values()
        if values is None:
            return index
        missing = index < 0
        out = values.take(np.where(missing, 0, index))
        if missing.any():
            out = out.astype(object)
            out[missing] = None
        return out


def _as_list(values, what: str) -> list:
    if isinstance(values, (str, bytes)) or _is_int(values):
        return [values]
    if isinstance(values, np.ndarray):
        if values.ndim > 1:
            raise ValueError(
                f"{what} must be 1-D, got an array of {values.ndim} dimensions"
            )
        return values.tolist()
    try:
        return list(values)
    except TypeError:
        raise TypeError(
            f"{what} must be an id, an index or a sequence of them, got {type(values).__name__}"
        ) from None


def _check_k(k, limit: int, what: str) -> int:
    if not _is_int(k):
        raise TypeError(f"k must be an integer, got {type(k).__name__} {k!r}")
    if k < 1 or k > limit:
        raise ValueError(f"k must be between 1 and the {limit} {what}, got {k}")
    return int(k)


class Recommender(_MLServeEstimator):
    """Exact top-k recommendations by inner product, in C.

    Parameters
    ----------
    user_factors : array-like of shape (n_users, n_factors)
    item_factors : array-like of shape (n_items, n_factors)
        float32 stays float32 (when both are); anything else becomes float64.
    item_ids, user_ids : sequence, optional
        One unique id per row (all ints or all strings). With ids the methods
        take and return ids instead of row indices.
    regularization : float, default=0.01
        The ridge term of the fold-in of a new user (:meth:`user_vector`).
    alpha : float, optional
        Set by ``mlserve.ALS``: the confidence weight of its fit. With it the
        fold-in solves the implicit-feedback ALS objective (see the module notes).

    Notes
    -----
    Scores are exact inner products (float32 or float64 as the factors);
    equal scores go to the lower item index. Where exclusions leave fewer
    than k items, the remaining places hold index -1 (``None`` with ids) and
    score ``-inf``.
    """

    _kind = "recommender"
    _estimator_type = "recommender"

    def __init__(self, user_factors, item_factors, item_ids=None, user_ids=None, *,
                 regularization=DEFAULT_REGULARIZATION, alpha=None):  # fmt: skip
        items = _factor_matrix(item_factors, "item_factors")
        users = _factor_matrix(user_factors, "user_factors", dtype=items.dtype)
        if users.dtype != items.dtype:  # float64 users with float32 items: both float64
            items = items.astype(np.float64)
        if items.shape[0] < 1:
            raise ValueError("item_factors must have at least 1 item (row)")
        if items.shape[1] < 1:
            raise ValueError("item_factors must have at least 1 factor (column)")
        if users.shape[1] != items.shape[1]:
            raise ValueError(
                f"user_factors has {users.shape[1]} factors per row but item_factors has "
                f"{items.shape[1]}; both must have the same factor dimension"
            )
        reg = regularization
        if (
            not isinstance(reg, (numbers.Real, np.floating))
            or isinstance(reg, bool)
            or not (np.isfinite(reg) and reg >= 0)
        ):
            raise ValueError(
                f"regularization must be a finite number >= 0, got {reg!r}"
            )
        if alpha is not None and (
            not isinstance(alpha, (numbers.Real, np.floating))
            or isinstance(alpha, bool)
            or not (np.isfinite(alpha) and alpha >= 0)
        ):
            raise ValueError(f"alpha must be None or a finite number >= 0, got {alpha!r}")
        arrays = {
            "user_factors": users,
            "item_factors": items,
            "item_norms": np.linalg.norm(items, axis=1).astype(items.dtype),
        }
        item_sections, item_kind = _id_sections(item_ids, items.shape[0], "item")
        user_sections, user_kind = _id_sections(user_ids, users.shape[0], "user")
        arrays.update(item_sections)
        arrays.update(user_sections)
        meta = {
            "kind": self._kind,
            "estimator": "Recommender",
            "task": "recommender",
            "params": {"regularization": float(reg)},
            "n_features": int(items.shape[1]),
            "n_factors": int(items.shape[1]),
            "n_users": int(users.shape[0]),
            "n_items": int(items.shape[0]),
            "item_id_type": item_kind,
            "user_id_type": user_kind,
            "regularization": float(reg),
            "als_alpha": None if alpha is None else float(alpha),
            "n_outputs": 1,
            "output_shape": [],
            "classes": None,
            "classes_dtype": None,
            "feature_names": None,
            "dtype": str(items.dtype),
            "mlserve_version": _library_version(),
            "format_version": FORMAT_VERSION,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        self._install(_core.create(self._kind, arrays, json.dumps(meta)))

    # -- fitted state (a Recommender is always fitted)
    def _install(self, model) -> None:
        model._set_display_name("Recommender")
        meta = json.loads(model.metadata)
        arrays = model.arrays()
        self._model_ = model
        self._arrays_ = arrays
        self.regularization = float(meta.get("regularization", DEFAULT_REGULARIZATION))
        alpha = meta.get("als_alpha")
        self.alpha = None if alpha is None else float(alpha)
        self._als_gram_ = None  # V^T V + reg I for the ALS fold-in, on first use
        self.n_features_in_ = int(arrays["item_factors"].shape[1])
        self._users_ = _IdIndex(arrays, "user", arrays["user_factors"].shape[0])
        self._items_ = _IdIndex(arrays, "item", arrays["item_factors"].shape[0])

    @classmethod
    def _from_core_model(cls, model) -> Recommender:
        self = cls.__new__(cls)
        self._install(model)
        return self

    def get_params(self, deep: bool = True) -> dict:
        return {"regularization": self.regularization, "alpha": self.alpha}

    def __repr__(self) -> str:
        return (
            f"Recommender(n_users={self.n_users}, n_items={self.n_items}, "
            f"n_factors={self.n_factors}, dtype={self.dtype})"
        )

    def __getstate__(self):
        with tempfile.TemporaryDirectory(prefix="mlserve-pickle-") as tmp:
            path = os.path.join(tmp, "model.mls")
            self._model_.save(path, self._model_.metadata)
            with open(path, "rb") as f:
                return {"_model_mls_": f.read()}

    def __setstate__(self, state):
        self._install(_core.loads(state["_model_mls_"]))

    # -- properties
    @property
    def user_factors(self) -> np.ndarray:
        """(n_users, n_factors), read-only (a view of the file mapping when loaded)."""
        return self._arrays_["user_factors"]

    @property
    def item_factors(self) -> np.ndarray:
        """(n_items, n_factors), read-only (a view of the file mapping when loaded)."""
        return self._arrays_["item_factors"]

    @property
    def item_ids(self) -> np.ndarray | None:
        return self._items_.values()

    @property
    def user_ids(self) -> np.ndarray | None:
        return self._users_.values()

    @property
    def n_users(self) -> int:
        return int(self.user_factors.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])

    @property
    def n_factors(self) -> int:
        return int(self.item_factors.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.item_factors.dtype

    # -- queries
    def recommend(self, users, k=10, exclude=None, items=None):
        """The k items of highest score ``user_factors[u] @ item_factors.T`` per user.

        Parameters
        ----------
        users : id or index, or a sequence of them
        k : int, default=10
            1 <= k <= n_items (or the number of ``items``).
        exclude : dict or scipy sparse matrix, optional
            Items never returned for a user (already bought): ``{user: [item, ...]}``
            with users and items as ``users`` names them, or a sparse matrix of
            shape (len(users), n_items) whose row j lists the items of
            ``users[j]`` (implicit's ``user_items``); its values are ignored.
        items : sequence, optional
            Restricts the candidates to these items.

        Returns
        -------
        (items, scores) : two arrays of shape (len(users), k), best first.
        """
        user_list = _as_list(users, "users")
        index = self._users_.to_index(user_list, "users")
        candidates = self._candidates(items)
        limit = len(candidates) if candidates is not None else self.n_items
        k = _check_k(k, limit, "candidate items" if candidates is not None else "items")
        indptr, indices = self._exclusions(exclude, user_list, index)
        queries = self.user_factors[index]
        return self._run(queries, k, indptr, indices, candidates, cosine=False)

    def similar_items(self, items, k=10):
        """The k items of highest cosine similarity to each item, the item itself excluded.

        Returns
        -------
        (items, scores) : two arrays of shape (len(items), k), best first;
        an item of norm 0 has cosine 0 with every item.
        """
        index = self._items_.to_index(_as_list(items, "items"), "items")
        k = _check_k(k, self.n_items - 1, "other items") if self.n_items > 1 else None
        if k is None:
            raise ValueError("similar_items needs at least 2 items; the model has 1")
        vectors = self.item_factors[index]
        norms = self._arrays_["item_norms"][index]
        with np.errstate(divide="ignore", invalid="ignore"):
            queries = np.where(norms[:, None] > 0, vectors / norms[:, None], 0).astype(
                self.dtype
            )
        indptr = np.arange(len(index) + 1, dtype=np.int64)
        return self._run(queries, k, indptr, index.astype(np.int64), None, cosine=True)

    def user_vector(self, history) -> np.ndarray:
        """Fold-in: the factor vector of a new user from the items of their history.

        ``u = (V_I^T V_I + regularization * I)^-1 V_I^T 1`` over the items I
        (implicit's ``recalculate_user`` with all confidences 1).
        """
        index = self._items_.to_index(_as_list(history, "items"), "items")
        if len(index) == 0:
            raise ValueError("the history has no items; give at least 1 item")
        if self.alpha is not None:
            return self._als_user_vector(np.unique(index))
        V = self.item_factors[np.unique(index)].astype(np.float64)
        gram = V.T @ V + self.regularization * np.eye(V.shape[1])
        rhs = V.sum(axis=0)
        if self.regularization > 0:
            u = np.linalg.solve(gram, rhs)
        else:
            u = np.linalg.lstsq(gram, rhs, rcond=None)[0]
        return u.astype(self.dtype)

    def recommend_for_history(self, history, k=10, exclude_history=True, items=None):
        """Recommendations for a new user given their history (see :meth:`user_vector`).

        The history's items are excluded unless ``exclude_history`` is False.
        Returns (items, scores) of shape (1, k).
        """
        history_list = _as_list(history, "items")
        u = self.user_vector(history_list)
        candidates = self._candidates(items)
        limit = len(candidates) if candidates is not None else self.n_items
        k = _check_k(k, limit, "candidate items" if candidates is not None else "items")
        indptr = indices = None
        if exclude_history:
            indices = np.unique(self._items_.to_index(history_list, "items"))
            indptr = np.array([0, len(indices)], dtype=np.int64)
        return self._run(u[None, :], k, indptr, indices, candidates, cosine=False)

    def _warm_up(self) -> None:
        """One top-1 query, and the id lookups built, so a first request pays for neither
        (the serving blueprint calls it on load)."""
        queries = self.user_factors[:1] if self.n_users else self.item_factors[:1]
        _core.topk(self._model_, queries, 1, None, None, None, False)
        for ids in (self._users_, self._items_):
            if ids.kind == "str" or (ids.kind == "int" and not ids._sorted):
                ids._dict()

    def _als_user_vector(self, items: np.ndarray) -> np.ndarray:
        """The ALS fold-in (a model fitted by mlserve.ALS): one exact solve in C."""
        from . import _als

        V = self.item_factors
        if V.dtype != np.float32:
            V = V.astype(np.float32)
        if self._als_gram_ is None:  # racing threads compute the same matrix
            self._als_gram_ = _core.als_gram(V, self.regularization)
        u = _als.fold_in(V, self._als_gram_, items, self.alpha)
        return u.astype(self.dtype, copy=False)

    # -- helpers
    def _run(self, queries, k, indptr, indices, candidates, cosine):
        idx, scores = _core.topk(
            self._model_, queries, k, indptr, indices, candidates, cosine
        )
        return self._items_.from_index(idx), scores

    def _candidates(self, items) -> np.ndarray | None:
        if items is None:
            return None
        index = self._items_.to_index(_as_list(items, "items"), "items")
        if len(index) == 0:
            raise ValueError("items (the candidates) is empty; give at least 1 item")
        return np.unique(index)

    def _exclusions(self, exclude, user_list, index):
        if exclude is None:
            return None, None
        n = len(index)
        if isinstance(exclude, dict):
            keys = list(exclude)
            key_index = self._users_.to_index(keys, "exclude's keys") if keys else []
            by_user = {int(u): exclude[key] for u, key in zip(key_index, keys)}
            rows = []
            for u in index.tolist():
                chosen = by_user.get(u)
                if chosen is None:
                    rows.append(np.empty(0, dtype=np.int64))
                    continue
                rows.append(
                    np.unique(
                        self._items_.to_index(_as_list(chosen, "exclude"), "exclude")
                    )
                )
            indptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum([len(r) for r in rows], out=indptr[1:])
            indices = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
            return indptr, indices.astype(np.int64)
        if hasattr(exclude, "tocsr"):
            csr = exclude.tocsr()
            if csr.shape != (n, self.n_items):
                raise ValueError(
                    f"exclude must have shape ({n}, {self.n_items}) (one row per requested "
                    f"user, one column per item), got {csr.shape}"
                )
            csr = csr.copy()
            csr.sum_duplicates()  # sorts each row's indices too
            return csr.indptr.astype(np.int64), csr.indices.astype(np.int64)
        raise TypeError(
            "exclude must be a dict {user: [item, ...]} or a scipy sparse matrix of shape "
            f"(len(users), n_items), got {type(exclude).__name__}"
        )


ESTIMATORS[Recommender.__name__] = Recommender  # mlserve.load finds it
