"""Train the For You models from the database and publish them to the registry.

Reads the `interaction_events` log (either backend) and the videos' metadata, folds each
(user, video) pair's events into one interaction with the online store's event weights, holds
out the latest `feed_training_holdout` of every user's interactions, and scores both models on
it: ALS by NDCG@20 of its own ranking, the ranker by NDCG@20 of the whole pipeline (the ALS
candidates, the online features, the ranker, diversity). The recipe is then refitted on all the
data and published with those holdout metrics; the registry serves it only if it beats the
version being served.

The ranker learns only from what the online path can compute (no item-kNN; the short-term
list is named "collaborative" like the online source), so it is served without skew.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import text

from clipfeed.config import Settings
from clipfeed.feed.recsys.baselines import ALS
from clipfeed.feed.recsys.dataset import InteractionLog, ItemMeta, temporal_split
from clipfeed.feed.recsys.metrics import evaluate
from clipfeed.feed.recsys.pipeline import ClipfeedRecommender
from clipfeed.feed.recsys.registry import ModelRegistry

log = logging.getLogger("clipfeed.feed.training")

COMPARE_ON = "ndcg@20"
K = 20


class TrainingSkipped(Exception):
    """Not enough data (or not due yet): nothing was trained."""


@dataclass
class TrainingReport:
    events: int
    users: int
    videos: int
    seconds: float
    published: dict[str, dict] = field(default_factory=dict)


def _epoch(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


async def load_training_log(settings: Settings) -> InteractionLog:
    """The most recent `feed_training_max_events` signed-in events as one row per (user, video)."""
    from clipfeed.db.engine import build_engine
    from clipfeed.feed.events import FeedEvent
    from clipfeed.feed.feature_store import event_weight

    engine = build_engine(settings, pooled=False)
    try:
        async with engine.connect() as conn:
            events = (await conn.execute(text(
                "SELECT kind, user_id, video_id, creator_id, watch_ms, completed, replay, created_at "
                "FROM interaction_events WHERE user_id IS NOT NULL AND video_id IS NOT NULL "
                "ORDER BY id DESC LIMIT :limit"), {"limit": settings.feed_training_max_events})).all()
            video_ids = sorted({e.video_id for e in events})
            videos, tags = {}, defaultdict(list)
            for start in range(0, len(video_ids), 500):
                chunk = video_ids[start:start + 500]
                marks = ", ".join(f":v{i}" for i in range(len(chunk)))
                params = {f"v{i}": v for i, v in enumerate(chunk)}
                for row in (await conn.execute(text(
                        f"SELECT id, owner_id, caption, sound_id, duration_ms, published_at, created_at "
                        f"FROM videos WHERE id IN ({marks})"), params)).all():
                    videos[row.id] = row
                for row in (await conn.execute(text(
                        f"SELECT vh.video_id, h.tag FROM video_hashtags vh JOIN hashtags h ON h.id = vh.hashtag_id "
                        f"WHERE vh.video_id IN ({marks})"), params)).all():
                    tags[row.video_id].append(row.tag)
    finally:
        await engine.dispose()

    meta = {vid: ItemMeta(creator_id=row.owner_id, hashtags=tuple(sorted(tags.get(vid, ()))), sound_id=row.sound_id,
                          duration_s=(row.duration_ms or 15_000) / 1000.0, caption=row.caption or "",
                          created_ts=_epoch(row.published_at or row.created_at))
            for vid, row in videos.items()}
    pairs: dict[tuple[str, str], dict] = {}
    for e in reversed(events):  # oldest first
        if e.video_id not in meta:
            continue  # the video was deleted: nothing to recommend
        m = meta[e.video_id]
        ev = FeedEvent(kind=e.kind, user_id=e.user_id, video_id=e.video_id, creator_id=e.creator_id, at=_epoch(e.created_at),
                       watch_ms=e.watch_ms or 0, duration_ms=int(m.duration_s * 1000), completed=bool(e.completed),
                       replay=bool(e.replay))
        row = pairs.setdefault((e.user_id, e.video_id), {
            "ts": ev.at, "weight": 0.0, "completed": False, "liked": False, "shared": False, "commented": False,
            "followed": False, "skipped": False, "viewed": False})
        row["weight"] += event_weight(ev)
        if e.kind in ("view", "skip"):
            row["viewed"] = True
            row["skipped"] = row["skipped"] or (e.kind == "skip")
            row["completed"] = row["completed"] or bool(e.completed)
        flag = {"like": "liked", "share": "shared", "comment": "commented", "follow": "followed"}.get(e.kind)
        if flag:
            row[flag] = True
        if e.kind == "unlike":
            row["liked"] = False
    keys = list(pairs)
    rows = [pairs[k] for k in keys]

    def column(name):
        return np.array([r[name] for r in rows], dtype=bool)

    weight = np.maximum(np.array([r["weight"] for r in rows], dtype=np.float32), 0.0)
    completed, liked = column("completed"), column("liked")
    flags = {name: column(name) for name in ("completed", "liked", "shared", "commented", "followed")}
    flags["skipped"] = column("skipped") & ~completed
    return InteractionLog(np.array([k[0] for k in keys], dtype=object), np.array([k[1] for k in keys], dtype=object),
                          np.array([r["ts"] for r in rows]), weight, completed | liked, flags, meta)


def _state_options() -> dict:
    from clipfeed.feed.feature_store import VELOCITY_HALF_LIFE_S

    # The online store's weights already carry skips (negative); no extra penalty.
    return {"skip_penalty": 0.0, "velocity_half_life_s": VELOCITY_HALF_LIFE_S, "online_sources": True}


def train_models(data: InteractionLog, settings: Settings, *, seed: int = 0):
    """Fit on all but the holdout, score on it, refit on everything.
    Returns (collab model, ranker, collab metrics, ranker metrics)."""
    catalogue = data.all_items
    split = temporal_split(data, 1.0 - settings.feed_training_holdout)
    users = sorted(u for u, rel in split.relevant.items() if rel)
    if not users:
        raise TrainingSkipped("no user has positive interactions in the holdout")
    counts = defaultdict(int)
    for _, v in set(zip(split.train.user.tolist(), split.train.item.tolist())):
        counts[v] += 1
    n_users = len(set(split.train.user.tolist()))

    def score(model) -> dict[str, float]:
        recs = model.recommend(users, K)
        return evaluate(recs, split.relevant, k=K, catalogue_size=len(catalogue), users_per_item=counts,
                        n_users=n_users)

    als = ALS(seed=seed).fit(split.train, catalogue)
    collab_metrics = score(als)
    pipeline = ClipfeedRecommender(weights=settings.feed_score_weights, seed=seed, als_params=als.params,
                                   use_itemknn=False, state_options=_state_options())
    pipeline.fit(split.train, catalogue)
    ranker_metrics = score(pipeline)

    final_als = ALS(als.params, tune=False, seed=seed).fit(data, catalogue)
    final = ClipfeedRecommender(weights=settings.feed_score_weights, seed=seed, als_params=als.params,
                                use_itemknn=False, state_options=_state_options())
    ranker = final.train_ranker(data, catalogue)
    return final_als.model, ranker, collab_metrics, ranker_metrics


async def _newest_version_age_s(registry: ModelRegistry) -> float | None:
    entries = await registry.list("ranker")
    if not entries:
        return None
    newest = max(_epoch(e["created_at"]) for e in entries)
    return time.time() - newest


async def _event_history_s(settings: Settings) -> float:
    from clipfeed.db.engine import build_engine

    engine = build_engine(settings, pooled=False)
    try:
        async with engine.connect() as conn:
            oldest = (await conn.execute(text("SELECT MIN(created_at) FROM interaction_events"))).scalar()
    finally:
        await engine.dispose()
    return 0.0 if oldest is None else time.time() - _epoch(oldest)


async def train_and_publish(settings: Settings, force: bool = True) -> TrainingReport:
    from clipfeed.storage import build_store

    started = time.perf_counter()
    registry = ModelRegistry(build_store(settings), prefix=settings.feed_model_prefix, refresh_s=0)
    if not force:
        period_s = settings.feed_training_period_minutes * 60
        age = await _newest_version_age_s(registry)
        if age is not None and age < period_s:
            raise TrainingSkipped(f"the newest model is {age / 60:.0f} min old "
                                  f"(period {settings.feed_training_period_minutes} min)")
        if age is None:
            # A new deployment first gathers one period of history: a model of a few minutes of
            # events would only replace the heuristic ranker with noise.
            history = await _event_history_s(settings)
            if history < period_s:
                raise TrainingSkipped(f"{history / 60:.0f} min of events so far; the first model waits for "
                                      f"{settings.feed_training_period_minutes} min")
    data = await load_training_log(settings)
    if len(data) < settings.feed_training_min_events:
        raise TrainingSkipped(f"{len(data)} interactions, fewer than CLIPFEED_FEED_TRAINING_MIN_EVENTS="
                              f"{settings.feed_training_min_events}")
    import asyncio

    collab, ranker, collab_metrics, ranker_metrics = await asyncio.to_thread(train_models, data, settings)
    report = TrainingReport(events=len(data), users=len(set(data.user.tolist())), videos=len(data.all_items),
                            seconds=0.0)
    for kind, model, metrics in (("collab", collab, collab_metrics), ("ranker", ranker, ranker_metrics)):
        if not hasattr(model, "save"):
            log.warning("no %s model learned (too few labels); nothing published", kind)
            continue
        metrics = {**metrics, "interactions": float(len(data))}
        version, promoted = await registry.publish(kind, model, metrics, compare_on=COMPARE_ON)
        report.published[kind] = {"version": version, "promoted": promoted, "metrics": metrics}
    report.seconds = time.perf_counter() - started
    log.info("trained on %s interactions in %.1fs: %s", report.events, report.seconds, report.published)
    return report
