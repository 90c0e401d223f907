"""What the For You ranker learns, scored by the simulator's ground truth instead of a held-out log.

    python bench/ranker_objectives.py [--seeds 11 12 13] [--videos 1500]   (clipfeed bench ranker_objectives)

The offline holdout (what `clipfeed train`'s promotion gate and `clipfeed eval` measure) asks:
of every video a user has not seen, which will they complete next? On a real log, and on the
simulator's, what a user completes next depends first on what they are *shown* next — a third of
the simulator's organic exposures follow popularity — so a model can score well there by
predicting exposure. The online loop (`bench/online_loop.py`) rewards something else: the watch
time of what the feed shows. This bench puts both side by side for each ranker on the online
loop's platform (324 users, 1,500 videos, 150 creators, 12 topics, ~30 interactions per user;
the pipeline as `clipfeed train` fits it: tuned ALS, the served sources and features):

- `heuristic`: the hand-made ranker a new deployment serves (the baseline of the ratios);
- `learned (future labels)`: the LightGBM ranker as `clipfeed train` trains it — a user's
  candidates at inner cuts, labelled by what the user did later, unexposed candidates negative;
- `learned (outcome labels)`: the same model trained only on what each user was shown after the
  cut, labelled by what they did with it (P(completion | shown));
- `heuristic, no ALS` / `outcome labels, no ALS`: the same without the collaborative model in the
  sources and features (as a deployment serves before its first training);
- `heuristic × duration`: the heuristic's completion times the video's length — roughly expected
  seconds watched, what a watch-time objective would rank by (not served: it trades completion for
  length);
- `oracle by completion` / `oracle by watch`: the behaviour model's own ranking of every unseen
  video (no recommender can know it): the ceilings.

Columns: NDCG@20 on the held-out 20 % (what the gate compares), `exposed AUC` (per user, the
chance a later completion among what they were shown scores above a later non-completion),
and the ground truth of each user's top 20 (`simulator.ground_truth`): mean completion
probability and expected seconds watched of the 20. Ratios are against `heuristic` in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import print_table  # noqa: E402
from clipfeed.feed.recsys.evaluation import ServedPipelineCase  # noqa: E402
from clipfeed.feed.recsys.features import FEATURE_INDEX  # noqa: E402
from clipfeed.feed.recsys.metrics import ndcg_at_k  # noqa: E402
from clipfeed.feed.recsys.ranker import HeuristicRanker  # noqa: E402
from clipfeed.feed.recsys.simulator import completion_probability, expected_watch_ms, ground_truth  # noqa: E402

K = 20


class TimesDuration:
    """A ranker's completion times the video's length in units of 15 s (expected seconds of
    completed watching, up to a constant): what ranking by watch time would do."""

    def __init__(self, inner):
        self.inner = inner

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        out = dict(self.inner.predict(X))
        out["completion"] = out["completion"] * X[:, FEATURE_INDEX["duration_s"]] / 15.0
        return out


def oracle(platform, split, users: list[str], score) -> dict[str, list[str]]:
    """Each user's top K of every video unseen in training, by a ground-truth `score`."""
    video_of = {v: i for i, v in enumerate(platform.video_ids)}
    seen: dict[str, set[int]] = {}
    for u, v in zip(split.train.user, split.train.item):
        seen.setdefault(u, set()).add(video_of[v])
    everyone = np.arange(len(platform.video_ids))
    out = {}
    for user in users:
        s = score(np.full(len(everyone), platform.user_ids.index(user)), everyone)
        s[list(seen.get(user, ()))] = -np.inf
        out[user] = [platform.video_ids[v] for v in np.argsort(-s)[:K]]
    return out


def run_seed(seed: int, videos: int) -> dict[str, dict[str, float]]:
    case = ServedPipelineCase.simulate(seed, videos=videos)
    platform, split, users = case.platform, case.split, case.users

    def metrics(recs, model=None) -> dict[str, float]:
        ndcg = float(np.mean([ndcg_at_k(recs[u], split.relevant[u], K) for u in users]))
        out = {"ndcg": ndcg, **ground_truth(platform, recs, K)}
        out["exposed_auc"] = model.exposed_auc(split.test, users) if model is not None else float("nan")
        return out

    pipeline = case.pipeline
    results = {}
    future = pipeline("future")
    learned = future.ranker
    future.ranker = HeuristicRanker()
    results["heuristic"] = metrics(future.recommend(users, K), future)
    future.ranker = TimesDuration(HeuristicRanker())
    results["heuristic × duration"] = metrics(future.recommend(users, K), future)
    future.ranker = learned
    results["learned (future labels)"] = metrics(future.recommend(users, K), future)
    outcome = pipeline("outcome")
    results["learned (outcome labels)"] = metrics(outcome.recommend(users, K), outcome)
    alone = pipeline("future", use_collab=False)
    alone.ranker = HeuristicRanker()
    results["heuristic, no ALS"] = metrics(alone.recommend(users, K), alone)
    alone = pipeline("outcome", use_collab=False)
    results["outcome labels, no ALS"] = metrics(alone.recommend(users, K), alone)
    results["oracle by completion"] = metrics(oracle(platform, split, users,
                                                     lambda u, v: completion_probability(platform, u, v)))
    results["oracle by watch"] = metrics(oracle(platform, split, users, lambda u, v: expected_watch_ms(platform, u, v)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--videos", type=int, default=1500)
    parser.add_argument("--seconds", type=int, default=0, help="ignored (shared CLI flag)")
    args = parser.parse_args()

    per_seed = []
    for seed in args.seeds:
        started = time.perf_counter()
        per_seed.append(run_seed(seed, args.videos))
        print(f"seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    names = list(per_seed[0])
    columns = (("ndcg", f"NDCG@{K} (holdout)", "{:.4f}"), ("exposed_auc", "exposed AUC", "{:.3f}"),
               (f"completion@{K}", f"completion@{K} (truth)", "{:.3f}"), (f"watch_s@{K}", f"watch s@{K} (truth)", "{:.1f}"))
    rows = []
    for name in names:
        row = [name]
        for key, _title, fmt in columns:
            value = float(np.mean([result[name][key] for result in per_seed]))
            base = float(np.mean([result["heuristic"][key] for result in per_seed]))
            ratio = f" ({value / base:.2f}x)" if name != "heuristic" and np.isfinite(value) and base else ""
            row.append(fmt.format(value) + ratio if np.isfinite(value) else "—")
        rows.append(row)
    print_table(f"bench/ranker_objectives: seeds {args.seeds} (means), {args.videos} videos; ratios against heuristic",
                ["ranker"] + [title for _key, title, _fmt in columns], rows)
    for seed, result in zip(args.seeds, per_seed):
        print(f"seed {seed}: " + "; ".join(
            f"{name}: ndcg {m['ndcg']:.4f} auc {m['exposed_auc']:.3f} completion {m[f'completion@{K}']:.3f} "
            f"watch {m[f'watch_s@{K}']:.1f}" for name, m in result.items()))


if __name__ == "__main__":
    main()
