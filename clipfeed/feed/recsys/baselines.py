"""The classic baselines clipfeed is measured against: popularity, item-kNN, ALS.

Every recommender fits on a training `InteractionLog` and returns, per user, the top K items they
have not interacted with in training (all catalogue items are eligible).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from clipfeed.feed.recsys.collaborative import CollaborativeModel
from clipfeed.feed.recsys.dataset import InteractionLog, temporal_split


class Recommender(Protocol):
    name: str

    def fit(self, train: InteractionLog, catalogue: Sequence[str]) -> Recommender: ...

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]: ...


class Interactions:
    """The sparse user×item matrix of a log over a fixed catalogue, plus each user's seen set."""

    def __init__(self, log: InteractionLog, catalogue: Sequence[str], *, values: np.ndarray | None = None):
        self.items = list(catalogue)
        self.item_index = {v: i for i, v in enumerate(self.items)}
        self.users = sorted(set(log.user.tolist()))
        self.user_index = {u: i for i, u in enumerate(self.users)}
        rows = np.fromiter((self.user_index[u] for u in log.user), dtype=np.int64, count=len(log))
        cols = np.fromiter((self.item_index[v] for v in log.item), dtype=np.int64, count=len(log))
        vals = log.weight if values is None else values
        self.matrix = sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)),
                                    shape=(len(self.users), len(self.items)))
        self.matrix.sum_duplicates()
        self.seen = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=self.matrix.shape)
        self.seen.sum_duplicates()

    def seen_items(self, user: str) -> np.ndarray:
        i = self.user_index.get(user)
        if i is None:
            return np.zeros(0, dtype=np.int64)
        return self.seen.indices[self.seen.indptr[i]:self.seen.indptr[i + 1]]


def top_k_excluding(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, skipping `exclude` (seen items)."""
    scores = scores.astype(np.float64, copy=True)
    scores[exclude] = -np.inf
    k = min(k, len(scores) - len(exclude))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def top_k_in_place(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """`top_k_excluding` for a scratch row that may be overwritten: no float64 copy and no
    negated copy (this selection is most of the cost of ranking a million items)."""
    scores[exclude] = -np.inf
    k = min(k, len(scores) - len(exclude))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(scores, len(scores) - k)[len(scores) - k:]
    return top[np.argsort(-scores[top], kind="stable")]


class Popularity:
    """Most engaged-with items in training (sum of positive signals)."""

    name = "popularity"

    def fit(self, train: InteractionLog, catalogue: Sequence[str]) -> Popularity:
        self.data = Interactions(train, catalogue, values=train.positive.astype(np.float32))
        self.scores = np.asarray(self.data.matrix.sum(axis=0)).ravel()
        return self

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        items = self.data.items
        return {u: [items[i] for i in top_k_excluding(self.scores, self.data.seen_items(u), k)] for u in users}


class ItemKNN:
    """Item-based kNN: cosine similarity of item columns of the user×item matrix, each item
    keeping its `neighbours` most similar items; a user's score is the sum of similarities to
    what they engaged with (weighted by the signal)."""

    name = "itemknn"

    def __init__(self, neighbours: int = 100, shrink: float = 10.0):
        self.neighbours = neighbours
        self.shrink = shrink

    def fit(self, train: InteractionLog, catalogue: Sequence[str]) -> ItemKNN:
        self.data = Interactions(train, catalogue)
        X = self.data.matrix.copy()
        X.data = np.log1p(X.data)
        X.eliminate_zeros()
        self.user_matrix = X.tocsr()
        self.similarity = cosine_neighbours(X, self.neighbours, self.shrink)
        return self

    def scores_for(self, user: str) -> np.ndarray | None:
        i = self.data.user_index.get(user)
        if i is None:
            return None
        return np.asarray((self.user_matrix[i] @ self.similarity).todense()).ravel()

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        items, out = self.data.items, {}
        for u in users:
            s = self.scores_for(u)
            out[u] = [] if s is None else [items[i] for i in top_k_excluding(s, self.data.seen_items(u), k)]
        return out


def cosine_neighbours(X: sp.spmatrix, neighbours: int = 100, shrink: float = 10.0) -> sp.csr_matrix:
    """items × items: each item's `neighbours` most similar items by the shrunk cosine of their
    columns in X (zero diagonal). The shrink term keeps two items that share one user from
    looking identical."""
    X = sp.csr_matrix(X)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0)).ravel())
    co = (X.T @ X).tocsr().astype(np.float32)
    co.setdiag(0)
    co.eliminate_zeros()
    co = co.tocoo()
    co.data = co.data / (norms[co.row] * norms[co.col] + shrink)
    return _keep_top_per_row(co.tocsr(), neighbours)


def _keep_top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for r in range(m.shape[0]):
        start, end = m.indptr[r], m.indptr[r + 1]
        if end == start:
            continue
        data = m.data[start:end]
        idx = m.indices[start:end]
        if len(data) > k:
            keep = np.argpartition(-data, k - 1)[:k]
            data, idx = data[keep], idx[keep]
        rows.append(np.full(len(idx), r))
        cols.append(idx)
        vals.append(data)
    if not rows:
        return sp.csr_matrix(m.shape, dtype=np.float32)
    # stored transposed-friendly: row = source item, col = neighbour
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape)


ALS_GRID = [dict(factors=f, regularization=r, alpha=a) for f in (8, 16, 32, 64) for r in (0.05, 0.5) for a in (1.0, 5.0, 20.0)]


class ALS:
    """ALS (implicit) on the completion-weighted signal; hyperparameters are chosen on an inner
    temporal split of the training data only (never on the test interactions)."""

    name = "als"

    def __init__(self, params: dict | None = None, *, tune: bool = True, iterations: int = 15, seed: int = 0,
                 tune_users: Sequence[str] | None = None):
        """`tune_users`: tune on these users' interactions only (bounded cost on a big log; the
        model itself is still fitted on all of `train`)."""
        self.params = params
        self.tune = tune and params is None
        self.tune_users = tune_users
        self.iterations = iterations
        self.seed = seed

    def fit(self, train: InteractionLog, catalogue: Sequence[str]) -> ALS:
        if self.params is None:
            self.params = tune_als(train, catalogue, iterations=self.iterations, seed=self.seed,
                                   users=self.tune_users) if self.tune \
                else dict(factors=64, regularization=0.05, alpha=10.0)
        self.model = CollaborativeModel(iterations=self.iterations, seed=self.seed, **self.params)
        self.model.fit(train.user, train.item, train.weight)
        self.data = Interactions(train, catalogue)
        self._catalogue_rows = np.array([self.model.item_index.get(v, -1) for v in self.data.items])
        return self

    def scores_for(self, user: str) -> np.ndarray | None:
        vec = self.model.user_vector(user)
        if vec is None:
            return None
        known = self._catalogue_rows >= 0
        scores = np.full(len(self.data.items), -np.inf, dtype=np.float32)
        scores[known] = self.model.item_factors[self._catalogue_rows[known]] @ vec
        return scores

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        items, out = self.data.items, {}
        known = np.flatnonzero(self._catalogue_rows >= 0)
        factors = self.model.item_factors[self._catalogue_rows[known]]
        rows = [(u, self.model.user_index.get(u)) for u in users]
        out.update({u: [] for u, i in rows if i is None})
        rows = [(u, i) for u, i in rows if i is not None]
        # Only items with a vector can score above -inf: rank those (a model tuned on a sample of
        # users knows a fraction of a big catalogue), in blocks of users, one matrix product per
        # block instead of a vector product per user, the block's scores bounded to ~64 MB.
        column = np.full(len(items), -1, dtype=np.int64)
        column[known] = np.arange(len(known))
        block = max(1, (1 << 24) // max(len(known), 1))
        for start in range(0, len(rows), block):
            chunk = rows[start:start + block]
            scores = self.model.user_factors[[i for _, i in chunk]] @ factors.T
            for (u, _), s in zip(chunk, scores):
                seen = column[self.data.seen_items(u)]
                seen = seen[seen >= 0]
                if len(known) - len(seen) >= k:
                    out[u] = [items[known[c]] for c in top_k_in_place(s, seen, k)]
                else:  # too few known unseen items: the whole catalogue, as scores_for has it
                    out[u] = [items[i] for i in top_k_excluding(self.scores_for(u), self.data.seen_items(u), k)]
        return out


def tune_als(train: InteractionLog, catalogue: Sequence[str], *, iterations: int = 15, seed: int = 0,
             k: int = 20, users: Sequence[str] | None = None) -> dict:
    """Grid-search ALS on an inner temporal split of `train` by NDCG@k; with `users`, on the
    log of those users only (24 fits of the whole log would dominate a big training job)."""
    from clipfeed.feed.recsys.metrics import ndcg_at_k

    if users is not None:
        train = train.take(train.of_users(users))
    inner = temporal_split(train, 0.8)
    users = [u for u, rel in inner.relevant.items() if rel]
    best, best_score = ALS_GRID[0], -1.0
    for params in ALS_GRID:
        rec = ALS(params, tune=False, iterations=iterations, seed=seed).fit(inner.train, catalogue)
        recs = rec.recommend(users, k)
        score = float(np.mean([ndcg_at_k(recs[u], inner.relevant[u], k) for u in users])) if users else 0.0
        if score > best_score:
            best, best_score = params, score
    return dict(best)
