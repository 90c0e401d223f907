"""clipfeed on a log without metadata (the MovieLens u.data layout): the signal blend."""

import numpy as np

from clipfeed.feed.recsys.baselines import ALS
from clipfeed.feed.recsys.blend import GRID, SignalBlend
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


def test_the_blend_beats_als_on_a_udata_log(tmp_path):
    split, catalogue = _udata_split(tmp_path, seed=1)
    users = sorted(u for u, rel in split.relevant.items() if rel)
    als = ALS(seed=0).fit(split.train, catalogue)
    blend = SignalBlend(als_params=als.params).fit(split.train, catalogue)
    # the weights come from the grid (chosen on an inner split of the training part)
    assert blend.weights["als"] == 1.0
    assert all(blend.weights[name] in values for name, values in GRID.items())
    recs = blend.recommend(users, 20)
    train_seen = {}
    for u, v in zip(split.train.user, split.train.item):
        train_seen.setdefault(u, set()).add(v)
    assert all(len(recs[u]) == 20 and not set(recs[u]) & train_seen.get(u, set()) for u in users)
    assert _ndcg(recs, split) > _ndcg(als.recommend(users, 20), split)

