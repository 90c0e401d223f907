"""clipfeed's ranking for logs without metadata (MovieLens `u.data`: user item rating timestamp).

Without creators, hashtags or captions the content, affinity and following sources are empty, and
the LightGBM ranker sees little more than ALS already knows (it measured 1.01 × ALS). What such
a log still holds:

- two collaborative views of the positives that err differently: ALS (latent factors) and
  item-kNN (co-occurrence neighbours);
- what the platform will show next: an item's exposures (every row is one, positive or not) and
  its exposures and positives in the most recent part of the log (trends).

`SignalBlend` standardises each signal per user over the items the user has not seen (a
z-score, so the scales are comparable) and adds them with weights chosen by a grid search on an
inner temporal split of the TRAINING data only (per user: the first 80 % of their training
interactions predict the rest). The test part of an evaluation is never looked at.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from clipfeed.feed.recsys.baselines import ALS, Interactions, ItemKNN
from clipfeed.feed.recsys.dataset import InteractionLog, temporal_split

SIGNALS = ("als", "itemknn", "exposure", "recent_exposure", "recent_positive")
# ALS is the anchor (weight 1); the others are tried at these weights relative to it.
GRID = {"itemknn": (0.0, 0.25, 0.5, 0.75, 1.0), "exposure": (0.0, 0.25, 0.5, 0.75, 1.0),
        "recent_exposure": (0.0, 0.25, 0.5), "recent_positive": (0.0, 0.25, 0.5)}
RECENT_FRACTION = 0.1      # "recent": the last 10 % of the log's time span
TUNING_USERS = 1500        # users scored per grid point (a sample on big logs keeps tuning cheap)
BATCH = 256                # users scored at once (bounds the dense users × items blocks)


class _Signals:
    """The fitted signals over one log; `block(users)` gives their per-user z-scores."""

    def __init__(self, log: InteractionLog, catalogue: Sequence[str], als_params: dict, seed: int):
        self.als = ALS(dict(als_params), tune=False, seed=seed).fit(log, catalogue)
        self.knn = ItemKNN().fit(log, catalogue)
        self.data: Interactions = self.als.data
        n = len(self.data.items)
        col = np.fromiter((self.data.item_index[v] for v in log.item), dtype=np.int64, count=len(log))
        recent = log.ts >= np.quantile(log.ts, 1.0 - RECENT_FRACTION) if len(log) else np.zeros(0, bool)
        self.global_scores = {
            "exposure": np.log1p(np.bincount(col, minlength=n).astype(np.float64)),
            "recent_exposure": np.log1p(np.bincount(col[recent], minlength=n).astype(np.float64)),
            "recent_positive": np.log1p(np.bincount(col[recent & log.positive], minlength=n).astype(np.float64)),
        }

    def block(self, users: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """({signal: users × items z-scores}, seen mask) for a batch of users."""
        n = len(self.data.items)
        rows = [self.data.user_index.get(u, -1) for u in users]
        seen = np.zeros((len(users), n), dtype=bool)
        for r, i in enumerate(rows):
            if i >= 0:
                seen[r, self.data.seen.indices[self.data.seen.indptr[i]:self.data.seen.indptr[i + 1]]] = True
        raw = {
            "als": np.stack([_or_zeros(self.als.scores_for(u), n) for u in users]),
            "itemknn": np.stack([_or_zeros(self.knn.scores_for(u), n) for u in users]),
            **{name: np.broadcast_to(s, (len(users), n)) for name, s in self.global_scores.items()},
        }
        return {name: _zscore(m, seen) for name, m in raw.items()}, seen


def _or_zeros(scores: np.ndarray | None, n: int) -> np.ndarray:
    if scores is None:
        return np.zeros(n)
    return np.where(np.isfinite(scores), scores, 0.0)


def _zscore(m: np.ndarray, seen: np.ndarray) -> np.ndarray:
    unseen = ~seen
    count = np.maximum(unseen.sum(axis=1, keepdims=True), 1)
    mean = np.where(unseen, m, 0.0).sum(axis=1, keepdims=True) / count
    var = np.where(unseen, (m - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / count
    return (m - mean) / (np.sqrt(var) + 1e-9)


def _combine(z: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    total = z["als"].copy()
    for name, w in weights.items():
        if w and name != "als":
            total += w * z[name]
    return total


def _top_k(total: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    total = np.where(seen, -np.inf, total)
    k = min(k, total.shape[1])
    top = np.argpartition(-total, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(total, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


class SignalBlend:
    name = "clipfeed"

    def __init__(self, *, als_params: dict, seed: int = 0, k: int = 20):
        self.als_params = dict(als_params)
        self.seed = seed
        self.k = k
        self.weights: dict[str, float] = {"als": 1.0}

    def fit(self, train: InteractionLog, catalogue: Sequence[str]) -> SignalBlend:
        self.weights = self._tune(train, catalogue)
        self.signals = _Signals(train, catalogue, self.als_params, self.seed)
        return self

    def _tune(self, train: InteractionLog, catalogue: Sequence[str]) -> dict[str, float]:
        from clipfeed.feed.recsys.metrics import ndcg_at_k

        inner = temporal_split(train, 0.8)
        users = sorted(u for u, rel in inner.relevant.items() if rel)
        if not users:
            return {"als": 1.0}
        if len(users) > TUNING_USERS:
            rng = np.random.default_rng(self.seed)
            users = sorted(rng.choice(users, TUNING_USERS, replace=False).tolist())
        signals = _Signals(inner.train, catalogue, self.als_params, self.seed)
        z, seen = signals.block(users)
        items = signals.data.items
        relevant = [inner.relevant[u] for u in users]

        def score(weights: dict[str, float]) -> float:
            top = _top_k(_combine(z, weights), seen, self.k)
            return float(np.mean([ndcg_at_k([items[i] for i in row], rel, self.k) for row, rel in zip(top, relevant)]))

        candidates = [dict(zip(GRID, values), als=1.0) for values in itertools.product(*GRID.values())]
        # ties go to the simplest blend (the grid starts at zero weights)
        return max(candidates, key=score)

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        items, out = self.signals.data.items, {}
        for start in range(0, len(users), BATCH):
            batch = list(users[start:start + BATCH])
            z, seen = self.signals.block(batch)
            for user, row in zip(batch, _top_k(_combine(z, self.weights), seen, k)):
                out[user] = [items[i] for i in row]
        return out
