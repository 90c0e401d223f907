"""clipfeed on a log without metadata (the MovieLens u.data layout): the signal blend."""

import numpy as np
import scipy.sparse as sp

from clipfeed.feed.recsys.baselines import ALS
from clipfeed.feed.recsys.baselines import Interactions
from clipfeed.feed.recsys.blend import (
    CLUSTER_COUNTS, CLUSTER_PRIOR, HALF_LIVES, INNER_CUTS, MIN_GAIN, SIGNALS, WEIGHT_GRID, SignalBlend,
    _significant_gain, cluster_scores, ease_weights, item_clusters, recency_rows,
)
from clipfeed.feed.recsys.dataset import InteractionLog, load_udata, temporal_split
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


def test_cluster_scores_are_the_users_cluster_share_times_the_items_share_of_its_cluster():
    labels = np.array([0, 0, 1, 1, 1])
    item_positives = np.array([3.0, 1.0, 0.0, 2.0, 4.0])
    positives = np.array([[1, 1, 0, 0, 0],    # everything in cluster 0
                          [0, 0, 0, 1, 0]], dtype=np.float32)
    scores = cluster_scores(positives, labels, item_positives, k=2)
    prior = CLUSTER_PRIOR
    share = np.array([[(2 + prior) / (2 + 2 * prior), prior / (2 + 2 * prior)],
                      [prior / (1 + 2 * prior), (1 + prior) / (1 + 2 * prior)]])
    smoothed = item_positives + 0.5
    within = smoothed / np.array([5.0, 5.0, 7.5, 7.5, 7.5])  # cluster sums of the smoothed counts
    assert np.allclose(scores, np.log(share[:, labels]) + np.log(within))
    # the first user's unseen cluster-1 items rank below any cluster-0 item; within a cluster the
    # more engaged-with item ranks first
    assert scores[0, :2].min() > scores[0, 2:].max()
    assert scores[1, 4] > scores[1, 3] > scores[1, 2]


def test_item_clusters_separate_two_groups_of_directions():
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0]) + rng.normal(0, 0.05, (20, 2))
    b = np.array([0.0, 1.0]) + rng.normal(0, 0.05, (20, 2))
    # the norm (an item's popularity) must not matter, only the direction
    vectors = np.vstack([a * rng.uniform(0.1, 10, (20, 1)), b * rng.uniform(0.1, 10, (20, 1))])
    labels = item_clusters(vectors, 2, seed=0)
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1 and labels[0] != labels[20]


def test_a_weight_change_is_kept_only_if_its_gain_beats_min_gain_and_the_noise():
    rng = np.random.default_rng(0)
    current = rng.uniform(0.0, 0.3, 600)
    # +3 % on average but as noisy as one inner split: the mean gain is below one standard error
    swing = 0.2 * np.where(np.arange(len(current)) % 2, 1.0, -1.0)  # mean 0, sd 0.2
    noisy = current + 0.03 * current.mean() + swing
    assert (noisy - current).mean() > MIN_GAIN * current.mean()
    assert not _significant_gain(noisy, current)
    # the same mean gain, consistently across users
    steady = current + 0.03 * current.mean() + swing / 20
    assert _significant_gain(steady, current)
    # consistent but below MIN_GAIN
    assert not _significant_gain(current * (1 + MIN_GAIN / 2), current)


def test_the_blend_is_tuned_on_every_inner_cut(tmp_path, monkeypatch):
    import clipfeed.feed.recsys.blend as blend_module

    split, catalogue = _udata_split(tmp_path, seed=2)
    fractions = []
    real = blend_module.temporal_split

    def spy(log, fraction=0.8):
        fractions.append(fraction)
        return real(log, fraction)

    monkeypatch.setattr(blend_module, "temporal_split", spy)
    blend = SignalBlend(als_params=dict(factors=16, regularization=0.05, alpha=5.0)).fit(split.train, catalogue)
    assert fractions == list(INNER_CUTS) and len(INNER_CUTS) > 1
    assert blend.cluster_count in CLUSTER_COUNTS and blend.weights


def _log(rows) -> InteractionLog:
    """(user, item, timestamp, rating) rows as a u.data log (rating >= 4 is positive)."""
    users, items, stamps, ratings = zip(*rows)
    r = np.asarray(ratings, dtype=np.float32)
    return InteractionLog(np.array(users, dtype=object), np.array(items, dtype=object), np.asarray(stamps, float),
                          np.maximum(r - 3.0, 0.0), r >= 4.0)


def test_recency_rows_weigh_each_interaction_by_the_users_later_ones():
    # written out of order: the weights follow each user's own timestamps
    log = _log([("a", "x", 30, 5), ("a", "y", 10, 2), ("b", "x", 5, 4), ("a", "z", 20, 4), ("a", "y", 40, 1)])
    data = Interactions(log, ["x", "y", "z"])
    rows = recency_rows(log, data, half_life=2.0).toarray()
    a, b = data.user_index["a"], data.user_index["b"]
    # a's order: y(10) z(20) x(30) y(40) -> 3, 2, 1, 0 later interactions; y met twice adds both
    assert np.allclose(rows[a], [0.5 ** 0.5, 0.5 ** 1.5 + 1.0, 0.5])
    assert np.allclose(rows[b], [1.0, 0.0, 0.0])  # a user's latest weighs 1, whatever the rating


def _walks(users: int, items: int, steps: int, seed: int) -> InteractionLog:
    """Users who each walk forward along a ring of items (1-3 items a step), so what comes next
    follows from what they watched last, not from their whole history."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        position = int(rng.integers(items))
        for t in range(steps):
            position = (position + int(rng.integers(1, 4))) % items
            rows.append((f"u{u}", f"i{position}", t, 5 if rng.random() < 0.8 else 3))
    return _log(rows)


def test_the_recency_signals_carry_a_log_whose_users_move_on():
    log = _walks(users=240, items=400, steps=40, seed=4)
    split = temporal_split(log)
    catalogue = log.all_items
    users = sorted(u for u, rel in split.relevant.items() if rel)
    als = ALS(seed=0).fit(split.train, catalogue)
    blend = SignalBlend(als_params=als.params).fit(split.train, catalogue)
    # chosen on the inner cuts of the training part, like every other signal
    assert blend.weights["recent_knn"] + blend.weights["recent_ease"] > 0, blend.weights
    assert blend.knn_half_life in HALF_LIVES and blend.ease_half_life in HALF_LIVES
    assert max(blend.inner_ndcg["recent_knn"], blend.inner_ndcg["recent_ease"]) > blend.inner_ndcg["als_bag"]
    assert _ndcg(blend.recommend(users, 20), split) > 1.5 * _ndcg(als.recommend(users, 20), split)
