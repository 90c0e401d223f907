"""How much NDCG@20 the default simulator's `u.data` logs leave above ALS, and whether a user's
order of interactions carries any of it.

For each seed: the simulator's log as `clipfeed eval --log` sees it (written in the u.data layout
and read back), the same per-user temporal split 80/20, and NDCG@20 over every unseen item of

- `als` (the baseline's tuned hyperparameters) and `clipfeed` (`SignalBlend`, as in the eval);
- `oracle`: the simulator's own ground truth, P(shown) × P(completed | shown) — the organic
  exposure mix (popular / random / taste-driven) times the behaviour model's completion
  probability. No recommender can know it; it bounds what a ranking can reach on the log;
- sequence signals, each scored alone (item-kNN's similarities throughout):
  `itemknn` (every training item counts the same), `recent_knn_0.9` / `recent_knn_0.8`
  (the i-th most recent item weighted 0.9^i / 0.8^i), `last5_knn` (only the last 5 items) and
  `transitions` (item → next 1–3 items counts within users' time-ordered histories, scored
  from the user's last 5 items with a 0.7 decay).

The simulator draws each user's exposures one after another from a fixed mixture (taste and
popularity do not drift) and stamps them with sorted uniform times, so the next items depend on
WHICH items a user has seen, not on their order: the sequence signals can only lose information
against plain item-kNN, and this script shows by how much.

Usage: `python bench/recsys_headroom.py --seeds 10 11 12 13` (a few seconds of CPU per seed plus
the ALS grid).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from clipfeed.feed.recsys.baselines import ALS, ItemKNN, top_k_excluding
from clipfeed.feed.recsys.blend import SignalBlend
from clipfeed.feed.recsys.dataset import load_udata, temporal_split
from clipfeed.feed.recsys.evaluation import simulated_log
from clipfeed.feed.recsys.metrics import ndcg_at_k
from clipfeed.feed.recsys.simulator import SimConfig, completion_probability, simulate_platform

K = 20


def _exposure_probability(platform, users: np.ndarray) -> np.ndarray:
    """users × videos: the chance that one organic exposure draw of the simulator is each video."""
    cfg = platform.cfg
    n_videos = len(platform.video_ids)
    mix = np.asarray(cfg.exposure_mix) / sum(cfg.exposure_mix)
    primary = platform.video_topics.argmax(axis=1)
    within_topic = np.zeros(n_videos)  # `_video_of_topic`: half popularity-weighted, half uniform
    for topic in range(cfg.topics):
        members = primary == topic
        if members.any():
            pop = platform.video_popularity[members]
            within_topic[members] = 0.5 * pop / pop.sum() + 0.5 / members.sum()
    taste_of_primary = platform.user_taste[users][:, primary]
    return (mix[0] * platform.video_popularity[None, :] + mix[1] / n_videos
            + mix[2] * taste_of_primary * within_topic[None, :])


def _histories(train, item_index) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """user → (catalogue indices, log1p weights), oldest first."""
    ordered = train.sorted()
    users = ordered.user.astype(str)
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    out = {}
    for start, end in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(users)]])):
        cols = np.fromiter((item_index[v] for v in ordered.item[start:end]), dtype=np.int64, count=end - start)
        out[users[start]] = (cols, np.log1p(ordered.weight[start:end]).astype(np.float64))
    return out


def _transition_counts(histories, n_items: int, gap: int = 3) -> sp.csr_matrix:
    rows, cols = [], []
    for items, _ in histories.values():
        for g in range(1, gap + 1):
            rows.append(items[:-g])
            cols.append(items[g:])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_items, n_items))


def headroom(seed: int, workdir: Path) -> dict[str, float]:
    path = workdir / f"u{seed}.data"
    simulated_log(seed=seed).write_udata(path)
    log = load_udata(path)
    split = temporal_split(log)
    catalogue = log.all_items
    users = sorted(u for u, rel in split.relevant.items() if rel)
    results: dict[str, float] = {}

    def ndcg(recs: dict[str, list[str]]) -> float:
        return float(np.mean([ndcg_at_k(recs[u], split.relevant[u], K) for u in users]))

    started = time.process_time()
    als = ALS(seed=0).fit(split.train, catalogue)
    results["als"] = ndcg(als.recommend(users, K))
    results["clipfeed"] = ndcg(SignalBlend(als_params=als.params).fit(split.train, catalogue).recommend(users, K))

    data = als.data
    items = data.items

    def ranked(user: str, scores: np.ndarray) -> list[str]:
        return [items[i] for i in top_k_excluding(scores, data.seen_items(user), K)]

    # the ground truth (same platform as `simulated_log`: its defaults and creator count)
    platform = simulate_platform(SimConfig(seed=seed, users=500, videos=2000, creators=400))
    video_of = np.array([int(v[1:]) for v in items])
    user_rows = np.array([int(u[1:]) for u in users])
    exposure = _exposure_probability(platform, user_rows)[:, video_of]
    completion = completion_probability(platform, np.repeat(user_rows, len(items)),
                                        np.tile(video_of, len(users))).reshape(len(users), len(items))
    results["oracle"] = ndcg({u: ranked(u, exposure[r] * completion[r]) for r, u in enumerate(users)})

    knn = ItemKNN().fit(split.train, catalogue)
    histories = _histories(split.train, data.item_index)
    transitions = _transition_counts(histories, len(items))
    for name, decay, last in (("itemknn", 1.0, None), ("recent_knn_0.9", 0.9, None),
                              ("recent_knn_0.8", 0.8, None), ("last5_knn", 1.0, 5)):
        recs = {}
        for u in users:
            cols, weights = histories[u]
            age = np.arange(len(cols))[::-1]  # 0 = the most recent
            w = weights * decay ** age
            if last is not None:
                w = np.where(age < last, w, 0.0)
            profile = np.bincount(cols, weights=w, minlength=len(items))
            recs[u] = ranked(u, np.asarray(knn.similarity.T @ profile).ravel())
        results[name] = ndcg(recs)
    recs = {}
    for u in users:
        cols, _ = histories[u]
        recent = cols[::-1][:5]
        profile = np.bincount(recent, weights=0.7 ** np.arange(len(recent)), minlength=len(items))
        recs[u] = ranked(u, np.asarray(transitions.T @ profile).ravel())
    results["transitions"] = ndcg(recs)
    results["cpu_seconds"] = time.process_time() - started
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            r = headroom(seed, Path(tmp))
            als = r["als"]
            cells = "  ".join(f"{k} {v:.4f} ({v / als:.2f}×)" for k, v in r.items() if k != "cpu_seconds")
            print(f"seed {seed}: {cells}  [{r['cpu_seconds']:.0f} s CPU]", flush=True)


if __name__ == "__main__":
    main()
