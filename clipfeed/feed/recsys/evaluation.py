"""Offline evaluation: replay a log with a temporal split and compare popularity, item-kNN, ALS
and the full clipfeed pipeline on Recall@K, NDCG@K, catalogue coverage and novelty.

Protocol: per user, the first 80 % of their interactions in time train every model; for the
rest, each model ranks every item the user has not interacted with in training, and the hits
are the positive test interactions (completed or liked; MovieLens: rating ≥ 4). On a simulated
platform each model's top K is also scored by the behaviour model itself (`simulator.ground_truth`:
expected watch seconds and completion probability of the K videos): the held-out log rewards
predicting what the organic process shows next, the ground truth only what a viewer gets.

clipfeed here: on a log with video metadata, the pipeline's ranker score mixed with
`blend.SignalBlend` (the mixing weight chosen on an inner split of train); without metadata
(u.data), the blend alone. ALS inside both uses the ALS baseline's tuned hyperparameters.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clipfeed.feed.recsys.baselines import ALS, ItemKNN, Popularity
from clipfeed.feed.recsys.content import metadata_index
from clipfeed.feed.recsys.dataset import InteractionLog, Split, load_udata, temporal_split
from clipfeed.feed.recsys.metrics import evaluate
from clipfeed.feed.recsys.pipeline import ClipfeedRecommender
from clipfeed.feed.recsys.simulator import Platform, SimConfig, generate_log, ground_truth, simulate_platform

MODEL_NAMES = ("popularity", "itemknn", "als", "clipfeed")


@dataclass
class EvaluationResult:
    models: dict[str, dict[str, float]]
    seconds: dict[str, float]
    users: int
    items: int
    interactions: int
    als_params: dict

    def as_json(self) -> dict:
        return {"models": self.models, "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "dataset": {"users": self.users, "items": self.items, "interactions": self.interactions},
                "als_params": self.als_params}


def simulated(*, seed: int = 0, users: int = 500, videos: int = 2000, interactions_per_user: int = 80,
              media_signal: float = 0.0, untagged_share: float = 0.0) -> tuple[InteractionLog, Platform]:
    """A simulated platform and its interaction log (`SimConfig` says what the options mean)."""
    cfg = SimConfig(seed=seed, users=users, videos=videos, creators=max(10, videos // 5),
                    interactions_per_user=interactions_per_user, media_signal=media_signal,
                    untagged_share=untagged_share)
    platform = simulate_platform(cfg)
    return generate_log(platform), platform


def simulated_log(*, seed: int = 0, users: int = 500, videos: int = 2000, interactions_per_user: int = 80
                  ) -> InteractionLog:
    return simulated(seed=seed, users=users, videos=videos, interactions_per_user=interactions_per_user)[0]


@dataclass
class ServedPipelineCase:
    """The online loop's simulated platform (`bench/online_loop.py`), its organic log split 80/20
    per user, and what `clipfeed train` fits the served pipeline from: the tuned ALS and the
    hashtag content index. For comparing rankers by the ground truth (bench/ranker_objectives.py)."""

    platform: Platform
    log: InteractionLog
    split: Split
    users: list[str]          # the users with a positive in their held-out part
    content: object
    als: ALS

    @classmethod
    def simulate(cls, seed: int, *, users: int = 324, videos: int = 1500) -> ServedPipelineCase:
        platform = simulate_platform(SimConfig(seed=seed, users=users, videos=videos, creators=videos // 10,
                                               topics=12, sounds=60))
        log = generate_log(platform, interactions_per_user=30)
        split = temporal_split(log, 0.8)
        catalogue = log.all_items
        content = metadata_index(log.items, catalogue)
        return cls(platform, log, split, sorted(u for u, rel in split.relevant.items() if rel), content,
                   ALS(seed=0).fit(split.train, catalogue))

    def pipeline(self, labels: str, *, use_collab: bool = True) -> ClipfeedRecommender:
        """The pipeline as `clipfeed train` fits it (no item-kNN: not an online source)."""
        from clipfeed.feed.training import _state_options

        model = ClipfeedRecommender(seed=0, als_params=self.als.params, use_itemknn=False,
                                    state_options=_state_options(), content=self.content, ranker_labels=labels,
                                    use_collab=use_collab)
        return model.fit(self.split.train, self.log.all_items, collab=self.als.model)


def load_log(path: str | Path) -> InteractionLog:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no interaction log at {path}")
    return load_udata(path)


def run_evaluation(log: InteractionLog, *, k: int = 20, seed: int = 0, weights: Mapping[str, float] | None = None,
                   models: Sequence[str] = MODEL_NAMES, progress=None, platform: Platform | None = None
                   ) -> EvaluationResult:
    """`platform`: the simulated platform the log came from, to add the ground-truth metrics."""
    if len(log) == 0:
        raise ValueError("the interaction log is empty")
    split = temporal_split(log)
    catalogue = log.all_items
    users = sorted(u for u, rel in split.relevant.items() if rel)
    if not users:
        raise ValueError("no user has positive interactions after the temporal split")
    users_per_item = Counter()
    for u, v in set(zip(split.train.user.tolist(), split.train.item.tolist())):
        users_per_item[v] += 1
    n_users = len(set(split.train.user.tolist()))
    results, seconds = {}, {}
    als_params: dict = {}
    for name in models:
        started = time.perf_counter()
        if name == "popularity":
            model = Popularity()
        elif name == "itemknn":
            model = ItemKNN()
        elif name == "als":
            model = ALS(seed=seed)
        elif name == "clipfeed":
            # The same ALS hyperparameters the ALS baseline chose on the training data.
            model = ClipfeedRecommender(weights=weights, seed=seed, als_params=als_params or None,
                                        blend_without_metadata=True, hybrid_blend=True)
        else:
            raise ValueError(f"unknown model {name!r}")
        model.fit(split.train, catalogue)
        if name == "als":
            als_params = dict(model.params)
        recs = model.recommend(users, k)
        seconds[name] = time.perf_counter() - started
        results[name] = evaluate(recs, split.relevant, k=k, catalogue_size=len(catalogue),
                                 users_per_item=users_per_item, n_users=n_users)
        if platform is not None:
            results[name].update(ground_truth(platform, recs, k))
        if progress:
            progress(name, results[name], seconds[name])
    return EvaluationResult(results, seconds, users=len(set(log.user.tolist())), items=len(catalogue),
                            interactions=len(log), als_params=als_params)


def render_table(result: EvaluationResult, *, k: int = 20, goal: float = 1.10):
    """A rich table, one row per model, plus clipfeed's NDCG ratio against ALS and the goal."""
    from rich.table import Table

    table = Table(title=f"offline evaluation — {result.users} users, {result.items} items, "
                        f"{result.interactions} interactions, temporal split 80/20")
    truth = all(f"watch_s@{k}" in m for m in result.models.values())
    columns = ["model", f"Recall@{k}", f"NDCG@{k}", "coverage", "novelty", "seconds"]
    if truth:  # a simulated platform: what the top k is worth to its viewers
        columns[-1:-1] = [f"watch s@{k} (truth)", f"completion@{k} (truth)"]
    for col in columns:
        if col == "model":  # never truncated, however narrow the terminal
            table.add_column(col, justify="left", no_wrap=True, min_width=max(map(len, result.models)))
        else:
            table.add_column(col, justify="right")
    for name, m in result.models.items():
        cells = [name, f"{m[f'recall@{k}']:.4f}", f"{m[f'ndcg@{k}']:.4f}", f"{m['coverage']:.3f}", f"{m['novelty']:.2f}"]
        if truth:
            cells += [f"{m[f'watch_s@{k}']:.1f}", f"{m[f'completion@{k}']:.3f}"]
        table.add_row(*cells, f"{result.seconds[name]:.1f}")
    if "als" in result.models and "clipfeed" in result.models and result.models["als"][f"ndcg@{k}"] > 0:
        ratio = result.models["clipfeed"][f"ndcg@{k}"] / result.models["als"][f"ndcg@{k}"]
        table.caption = f"clipfeed NDCG@{k} / ALS = {ratio:.3f} (goal ≥ {goal:.2f}: {'met' if ratio >= goal else 'NOT met'})"
    return table
