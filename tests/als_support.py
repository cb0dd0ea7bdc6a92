"""Generated implicit-feedback data for the ALS tests and benchmark.

A low-rank popularity model: each user draws how many items they touch
(log-normal), then that many distinct items with probability proportional to
exp(taste . item + popularity) (Gumbel top-k), and a count for each
(1 + geometric). Seeded; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def make_interactions(
    n_users: int,
    n_items: int,
    nnz: int,
    rank: int = 16,
    seed: int = 0,
    taste_scale: float = 3.0,
    popularity_scale: float = 1.0,
) -> sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(n_users, rank)).astype(np.float32)
    item = (
        rng.normal(size=(n_items, rank)).astype(np.float32)
        / np.sqrt(rank)
        * taste_scale
    )
    # Zipf-like popularity: a few items are much more popular than most
    popularity = (-popularity_scale * np.log1p(rng.permutation(n_items))).astype(
        np.float32
    )
    mean = nnz / n_users
    sigma = 0.8
    counts = rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, size=n_users)
    counts = np.clip(np.rint(counts), 1, n_items // 2).astype(np.int64)
    rows, cols = [], []
    for start in range(0, n_users, 1024):
        stop = min(start + 1024, n_users)
        logits = taste[start:stop] @ item.T + popularity
        logits += rng.gumbel(size=logits.shape).astype(np.float32)
        order = np.argsort(-logits, axis=1)
        for u in range(start, stop):
            chosen = order[u - start, : counts[u]]
            rows.append(np.full(chosen.size, u, dtype=np.int64))
            cols.append(chosen)
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    values = rng.geometric(0.5, size=rows.size).astype(np.float32)
    matrix = sparse.csr_matrix((values, (rows, cols)), shape=(n_users, n_items))
    matrix.sort_indices()
    return matrix


def split_held_out(matrix: sparse.csr_matrix, fraction: float = 0.2, seed: int = 1):
    """(train, test): a random `fraction` of each user's interactions (users
    with at least 2) moved to test."""
    rng = np.random.default_rng(seed)
    coo = matrix.tocoo()
    n_per_user = np.diff(matrix.indptr)
    held = rng.random(coo.nnz) < fraction
    held &= n_per_user[coo.row] >= 2
    train = sparse.csr_matrix(
        (coo.data[~held], (coo.row[~held], coo.col[~held])), shape=matrix.shape
    )
    test = sparse.csr_matrix(
        (coo.data[held], (coo.row[held], coo.col[held])), shape=matrix.shape
    )
    return train, test


def precision_at_k(user_factors, item_factors, train, test, k: int = 10) -> float:
    """Hits in the top k (train items excluded) over the sum of min(k,
    held-out count), across users with held-out items: the definition of
    implicit.evaluation.precision_at_k."""
    users = np.flatnonzero(np.diff(test.indptr))
    hits_total = relevant_total = 0
    for start in range(0, users.size, 2048):
        batch = users[start : start + 2048]
        scores = user_factors[batch].astype(np.float64) @ item_factors.T.astype(
            np.float64
        )
        seen = train[batch]
        scores[seen.nonzero()] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        for row, user in enumerate(batch):
            held = test.indices[test.indptr[user] : test.indptr[user + 1]]
            hits_total += int(np.isin(top[row], held).sum())
            relevant_total += min(k, held.size)
    return hits_total / relevant_total


def as_implicit_confidence(
    matrix: sparse.csr_matrix, alpha: float
) -> sparse.csr_matrix:
    """The matrix implicit must be given to solve mlserve's objective: implicit
    reads stored values as confidences c (c - 1 in the Gram term), mlserve's
    confidence is 1 + alpha * r."""
    conf = matrix.astype(np.float32, copy=True)
    conf.data = 1.0 + alpha * conf.data
    return conf
