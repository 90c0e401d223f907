"""clipfeed on a log without metadata (the MovieLens u.data layout): the signal blend."""

import numpy as np
import scipy.sparse as sp

from clipfeed.feed.recsys.baselines import ALS
from clipfeed.feed.recsys.blend import SIGNALS, WEIGHT_GRID, SignalBlend, ease_weights
from clipfeed.feed.recsys.dataset import load_udata, temporal_split
from clipfeed.feed.recsys.evaluation import simulated_log
from clipfeed.feed.recsys.metrics import ndcg_at_k


def _udata_split(tmp_path, seed: int):
    path = tmp_path / "u.data"
    simulated_log(seed=seed, users=300, videos=1200).write_udata(path)
    log = load_udata(path)
    assert not log.items  # no creators, hashtags or captions: only user item rating timestamp
    return temporal_split(log), log.all_items


def _ndcg(recs, split) -> float:
    return float(np.mean([ndcg_at_k(recs[u], split.relevant[u], 20) for u in recs]))


def test_ease_columns_are_the_ridge_regressions_on_the_other_items():
    rng = np.random.default_rng(3)
    X = (rng.random((40, 9)) < 0.35).astype(np.float32)
    lam = 4.0
    B = ease_weights(sp.csr_matrix(X), lam)
    assert np.allclose(np.diag(B), 0.0)
    for j in range(X.shape[1]):
        others = [i for i in range(X.shape[1]) if i != j]
        A = X[:, others].astype(np.float64)
        beta = np.linalg.solve(A.T @ A + lam * np.eye(len(others)), A.T @ X[:, j])
        assert np.allclose(B[others, j], beta, atol=1e-4), j


def test_the_blend_beats_als_on_a_udata_log(tmp_path):
    split, catalogue = _udata_split(tmp_path, seed=1)
    users = sorted(u for u, rel in split.relevant.items() if rel)
    als = ALS(seed=0).fit(split.train, catalogue)
    blend = SignalBlend(als_params=als.params).fit(split.train, catalogue)
    # the weights come from the grid, chosen on an inner split of the training part
    assert set(blend.weights) <= set(SIGNALS) and max(blend.weights.values()) == 1.0
    assert all(w in WEIGHT_GRID for w in blend.weights.values())
    assert blend.inner_ndcg["blend"] >= max(v for k, v in blend.inner_ndcg.items() if k != "blend")
    recs = blend.recommend(users, 20)
    train_seen = {}
    for u, v in zip(split.train.user, split.train.item):
        train_seen.setdefault(u, set()).add(v)
    assert all(len(recs[u]) == 20 and not set(recs[u]) & train_seen.get(u, set()) for u in users)
    assert _ndcg(recs, split) > _ndcg(als.recommend(users, 20), split)
