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
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import text

from clipfeed.config import Settings
from clipfeed.feed.content_catalog import read_content_inputs
from clipfeed.feed.recsys.baselines import ALS
from clipfeed.feed.recsys.content import metadata_index
from clipfeed.feed.recsys.dataset import InteractionLog, ItemMeta, sample_users, temporal_split
from clipfeed.feed.recsys.metrics import evaluate
from clipfeed.feed.recsys.pipeline import ClipfeedRecommender
from clipfeed.feed.recsys.ranker import HeuristicRanker
from clipfeed.feed.recsys.registry import ModelRegistry

log = logging.getLogger("clipfeed.feed.training")

COMPARE_ON = "ndcg@20"
HEURISTIC_SCORE = f"heuristic_{COMPARE_ON}"  # the ranker's metric of the heuristic ranker on its holdout
EXPOSED_AUC = "exposed_auc"  # per holdout user: P(a shown-and-completed video scores above a shown-and-not one)
# exposed_auc − the heuristic ranker's on the same holdout: successive versions are scored on
# different holdouts, and the margin over one fixed ranker compares them where raw AUCs do not.
EXPOSED_AUC_MARGIN = f"{EXPOSED_AUC}_over_heuristic"
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
    # step -> {"seconds", "peak_rss_mb"} (the process's peak RSS during that step, where the OS
    # lets it be reset; else the peak so far)
    steps: dict[str, dict[str, float]] = field(default_factory=dict)


def _peak_rss_mb(reset: bool = False) -> float:
    """The process's peak RSS (Linux: VmHWM, which writing 5 to clear_refs resets)."""
    try:
        if reset:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def _step(steps: dict | None, name: str):
    if steps is None:
        yield
        return
    _peak_rss_mb(reset=True)
    started = time.perf_counter()
    try:
        yield
    finally:
        steps[name] = {"seconds": time.perf_counter() - started, "peak_rss_mb": _peak_rss_mb()}
        # As it goes: a job stopped by a timeout still shows which steps it finished.
        log.info("training step %r: %.1f s, peak RSS %.0f MB", name, steps[name]["seconds"],
                 steps[name]["peak_rss_mb"])


def _epoch(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


FETCH_ROWS = 100_000
FLAG_KINDS = {"share": "shared", "comment": "commented", "follow": "followed"}


def _epochs(values: list) -> np.ndarray:
    """Epoch seconds of created_at values: text on SQLite ('YYYY-MM-DD HH:MM:SS[.ffffff]', UTC),
    datetimes on PostgreSQL."""
    if values and isinstance(values[0], str):
        try:
            return np.array(values, dtype="datetime64[us]").astype(np.int64) / 1e6
        except ValueError:  # not the plain layout (an offset?): parse one by one
            pass
    return np.array([_epoch(v) for v in values], dtype=np.float64)


def _codes(values: list, index: dict) -> np.ndarray:
    """Integer codes of string ids, growing `index` with the new ones."""
    return np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))


async def _event_columns(conn, limit: int) -> dict[str, np.ndarray | list]:
    """The newest `limit` signed-in events as columns, oldest first, fetched in blocks (no
    per-event Python objects beyond one block)."""
    users: dict[str, int] = {}
    videos: dict[str, int] = {}
    kinds: dict[str, int] = {}
    blocks = []
    result = await conn.stream(text(
        "SELECT kind, user_id, video_id, watch_ms, completed, replay, created_at "
        "FROM interaction_events WHERE user_id IS NOT NULL AND video_id IS NOT NULL "
        "ORDER BY id DESC LIMIT :limit"), {"limit": limit})
    async for rows in result.partitions(FETCH_ROWS):
        kind, user, video, watch, completed, replay, created = zip(*rows)
        blocks.append((_codes(kind, kinds), _codes(user, users), _codes(video, videos),
                       np.array([w or 0 for w in watch], dtype=np.float64), np.array(completed, dtype=bool),
                       np.array(replay, dtype=bool), _epochs(list(created))))
    names = ("kind", "user", "video", "watch_ms", "completed", "replay", "ts")
    if blocks:
        cols = {name: np.concatenate([b[i] for b in blocks])[::-1] for i, name in enumerate(names)}
    else:
        cols = {name: np.zeros(0, dtype=np.int64) for name in names}
    cols["kind_names"] = list(kinds)
    cols["user_ids"] = np.array(list(users), dtype=object)
    cols["video_ids"] = np.array(list(videos), dtype=object)
    return cols


async def load_training_log(settings: Settings) -> InteractionLog:
    """The most recent `feed_training_max_events` signed-in events as one row per (user, video),
    in the order of each pair's first event: weight = the sum of the online store's event
    weights (at least 0), flags = whether the pair saw a completion, share, comment, follow, a
    skip without completion, and a like not undone by a later unlike. Columnar throughout, so
    millions of events load without a Python object per event."""
    from clipfeed.db.engine import build_engine
    from clipfeed.feed.events import FeedEvent
    from clipfeed.feed.feature_store import HASHTAG_SHARE, SOUND_SHARE, event_weight

    engine = build_engine(settings, pooled=False)
    try:
        async with engine.connect() as conn:
            ev = await _event_columns(conn, settings.feed_training_max_events)
            video_ids = sorted(ev["video_ids"].tolist())
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
            # Only the videos the served content index can hold (the newest), as it is built.
            newest = sorted(videos, key=lambda v: -_epoch(videos[v].published_at or videos[v].created_at))
            newest = newest[:settings.feed_content_index_max]
            _captions, media_rows = await read_content_inputs(conn, newest)
            media = {v: row for v, row in zip(newest, media_rows) if np.isfinite(row).all()}
    finally:
        await engine.dispose()

    meta = {vid: ItemMeta(creator_id=row.owner_id, hashtags=tuple(sorted(tags.get(vid, ()))), sound_id=row.sound_id,
                          duration_s=(row.duration_ms or 15_000) / 1000.0, caption=row.caption or "",
                          created_ts=_epoch(row.published_at or row.created_at), media=media.get(vid))
            for vid, row in videos.items()}
    # Events of deleted videos go: nothing to recommend.
    known = np.array([v in meta for v in ev["video_ids"].tolist()], dtype=bool)
    keep = known[ev["video"]] if len(ev["video"]) else np.zeros(0, dtype=bool)
    kind, user, video = ev["kind"][keep], ev["user"][keep], ev["video"][keep]
    watch, completed, replay, ts = ev["watch_ms"][keep], ev["completed"][keep], ev["replay"][keep], ev["ts"][keep]
    names = ev["kind_names"]
    is_kind = {name: kind == code for code, name in enumerate(names)}
    nothing = np.zeros(len(kind), dtype=bool)

    # The online store's weight of every event (feature_store.event_weight, vectorized: a view's
    # duration is its video's, as the online path sees it).
    weight = np.zeros(len(kind), dtype=np.float64)
    for code, name in enumerate(names):
        if name != "view":
            weight[kind == code] = event_weight(FeedEvent(kind=name, user_id=None, video_id=None, creator_id=None, at=0))
    views = is_kind.get("view", nothing)
    if views.any():
        duration = np.array([int(meta[v].duration_s * 1000) if v in meta else 0 for v in ev["video_ids"].tolist()],
                            dtype=np.float64)
        d = duration[video[views]] if len(duration) else duration
        fraction = np.where(d > 0, np.minimum(1.0, watch[views] / np.maximum(d, 1)), 0.5)
        weight[views] = fraction + completed[views] * 1.0 + replay[views] * 0.5

    # One row per (user, video) pair, ordered by the pair's first event.
    pair = user * max(1, len(ev["video_ids"])) + video
    _, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
    n = len(first)

    def any_of(mask: np.ndarray) -> np.ndarray:
        return np.bincount(inverse[mask], minlength=n) > 0

    summed = np.bincount(inverse, weights=weight, minlength=n)
    # The user's affinities as the online store adds them up (feature_store.affinity_updates):
    # every event's weight to the creator, skips negative; a follow's to the creator only.
    is_follow = is_kind.get("follow", nothing) | is_kind.get("unfollow", nothing)
    taste = np.bincount(inverse, weights=np.where(is_follow, 0.0, weight), minlength=n)
    # `recent_weight`: the pair's weight in the user's recent history, which the store keeps
    # without follow events (the video a follow came from is not watched more for it); it
    # weighs the content profile and the short-term vector.
    affinity = {"affinity_creator": summed, "affinity_hashtag": taste * HASHTAG_SHARE,
                "affinity_sound": taste * SOUND_SHARE, "events": np.bincount(inverse, minlength=n).astype(np.float64),
                "recent_weight": taste}
    watched = is_kind.get("view", nothing) | is_kind.get("skip", nothing)
    flag_cols = {"completed": any_of(watched & completed)}
    # liked: the pair's last like/unlike is a like
    toggles = np.flatnonzero(is_kind.get("like", nothing) | is_kind.get("unlike", nothing))
    last = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last, inverse[toggles], toggles)
    liked = np.zeros(n, dtype=bool)
    has = last >= 0
    liked[has] = is_kind.get("like", nothing)[last[has]]
    flag_cols["liked"] = liked
    for kind_name, flag in FLAG_KINDS.items():
        flag_cols[flag] = any_of(is_kind.get(kind_name, nothing))
    flag_cols["skipped"] = any_of(is_kind.get("skip", nothing)) & ~flag_cols["completed"]

    order = np.argsort(first, kind="stable")
    first = first[order]
    flags = {name: flag_cols[name][order] for name in ("completed", "liked", "shared", "commented", "followed",
                                                        "skipped")}
    flags.update({name: column[order] for name, column in affinity.items()})
    return InteractionLog(ev["user_ids"][user[first]], ev["video_ids"][video[first]], ts[first],
                          np.maximum(summed[order], 0.0).astype(np.float32), flags["completed"] | flags["liked"],
                          flags, meta)


def _state_options() -> dict:
    from clipfeed.feed.feature_store import SHORT_TERM_EVENTS, VELOCITY_HALF_LIFE_S, VELOCITY_WEIGHTS

    # The online store's weights already carry skips (negative); no extra penalty. Velocity and
    # the short-term vectors as the online path makes them (the ranker is served those).
    return {"skip_penalty": 0.0, "velocity_half_life_s": VELOCITY_HALF_LIFE_S, "velocity_weights": VELOCITY_WEIGHTS,
            "short_term_items": SHORT_TERM_EVENTS, "content_items": SHORT_TERM_EVENTS, "online_sources": True}


def gate_metric(kind: str, settings: Settings) -> str:
    """The holdout metric a new version must improve on the served one's to be served: NDCG@20,
    except for a ranker trained on outcome labels, which is not trying to predict what users will
    be shown: it is compared on how much better than the heuristic ranker it orders what they
    were shown (the exposed-AUC margin)."""
    return EXPOSED_AUC_MARGIN if kind == "ranker" and settings.feed_ranker_labels == "outcome" else COMPARE_ON


def heuristic_bar(compare_on: str, metrics: dict) -> float | None:
    """What a new ranker must beat on its own holdout besides the served version: the heuristic
    ranker's score there (a margin over it must be positive). None for the collaborative model."""
    if compare_on == EXPOSED_AUC_MARGIN:
        return 0.0
    return metrics.get(f"heuristic_{compare_on}")


def train_models(data: InteractionLog, settings: Settings, *, seed: int = 0, steps: dict | None = None):
    """Fit on all but the holdout, score on it, refit on everything.
    ALS is fitted on every interaction; its tuning, the ranker's labels and the holdout metrics
    use a bounded, hash-seeded sample of users (`feed_training_max_users`), the same users for
    both models and mostly the same from one run to the next, so the registry compares like
    with like. Returns (collab model, ranker, collab metrics, ranker metrics); `steps` gets
    each step's time and peak RSS.

    The heuristic ranker (served while no learned one is) is scored on the same holdout in the
    same pipeline, recorded as the ranker's `heuristic_ndcg@20`: a learned ranker that does not
    beat it there is not promoted. (The served learned ranker is not scored there: it was trained
    on events of this holdout, which would flatter it.)"""
    catalogue = data.all_items
    max_users = settings.feed_training_max_users
    with _step(steps, "holdout split"):
        split = temporal_split(data, 1.0 - settings.feed_training_holdout)
        users = sample_users((u for u, rel in split.relevant.items() if rel), max_users, seed=seed)
        if not users:
            raise TrainingSkipped("no user has positive interactions in the holdout")
        # ALS's grid search (24 fits) runs on the sampled users' interactions only.
        tune_users = sample_users(split.train.user.tolist(), max_users, seed=seed)
        # Novelty's popularity: the number of training users per item (the log has one row per pair).
        items, per_item = np.unique(split.train.item, return_counts=True)
        counts = dict(zip(items.tolist(), per_item.tolist()))
        n_users = len(np.unique(split.train.user))
        relevant = {u: split.relevant[u] for u in users}

    def score(model) -> dict[str, float]:
        recs = model.recommend(users, K)
        return {**evaluate(recs, relevant, k=K, catalogue_size=len(catalogue), users_per_item=counts,
                           n_users=n_users), "holdout_users": float(len(users))}

    with _step(steps, "ALS tuned on the holdout split"):
        als = ALS(seed=seed, tune_users=tune_users).fit(split.train, catalogue)
        # The grid search's pick, recorded: it is made on the sample's interactions only.
        collab_metrics = {**score(als), **{f"als_{name}": float(value) for name, value in als.params.items()}}
    with _step(steps, "pipeline (ALS + LightGBM ranker) on the holdout split"):
        # The content index the API serves from (captions, hashtags and media vectors of the newest
        # feed_content_index_max videos: content_catalog.py), so content_sim is the served one.
        meta = data.items or {}
        served = sorted((v for v in catalogue if v in meta), key=lambda v: -(meta[v].created_ts or 0.0))
        served = served[:settings.feed_content_index_max]
        content = metadata_index(meta, served)
        pipeline = ClipfeedRecommender(weights=settings.feed_score_weights, seed=seed, als_params=als.params,
                                       use_itemknn=False, state_options=_state_options(), max_users=max_users,
                                       content=content, ranker_labels=settings.feed_ranker_labels)
        pipeline.fit(split.train, catalogue, collab=als.model)  # the same fit: reuse it
        ranker_metrics = score(pipeline)
        # How the ranker orders what the holdout users were shown: the outcome-labelled ranker's
        # gate (`gate_metric`); the NDCG above also rewards predicting what they will be shown
        # (bench/ranker_objectives.py).
        ranker_metrics[EXPOSED_AUC] = pipeline.exposed_auc(split.test, users)
    with _step(steps, "heuristic ranker on the same holdout"):
        learned, pipeline.ranker = pipeline.ranker, HeuristicRanker()
        ranker_metrics[HEURISTIC_SCORE] = score(pipeline)[COMPARE_ON]
        ranker_metrics[f"heuristic_{EXPOSED_AUC}"] = pipeline.exposed_auc(split.test, users)
        ranker_metrics[EXPOSED_AUC_MARGIN] = ranker_metrics[EXPOSED_AUC] - ranker_metrics[f"heuristic_{EXPOSED_AUC}"]
        pipeline.ranker = learned

    with _step(steps, "ALS on everything (published)"):
        final_als = ALS(als.params, tune=False, seed=seed).fit(data, catalogue)
    with _step(steps, "LightGBM ranker on everything (published)"):
        final = ClipfeedRecommender(weights=settings.feed_score_weights, seed=seed, als_params=als.params,
                                    use_itemknn=False, state_options=_state_options(), max_users=max_users,
                                    content=pipeline.content, ranker_labels=settings.feed_ranker_labels)
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
    steps: dict[str, dict[str, float]] = {}
    with _step(steps, "load the event log"):
        data = await load_training_log(settings)
    if len(data) < settings.feed_training_min_events:
        raise TrainingSkipped(f"{len(data)} interactions, fewer than CLIPFEED_FEED_TRAINING_MIN_EVENTS="
                              f"{settings.feed_training_min_events}")
    import asyncio

    collab, ranker, collab_metrics, ranker_metrics = await asyncio.to_thread(train_models, data, settings,
                                                                             steps=steps)
    report = TrainingReport(events=len(data), users=len(set(data.user.tolist())), videos=len(data.all_items),
                            seconds=0.0, steps=steps)
    with _step(steps, "publish (serialize, index, store)"):
        for kind, model, metrics in (("collab", collab, collab_metrics), ("ranker", ranker, ranker_metrics)):
            if not hasattr(model, "save"):
                log.warning("no %s model learned (too few labels); nothing published", kind)
                continue
            metrics = {**metrics, "interactions": float(len(data))}
            compare_on = gate_metric(kind, settings)
            bar = heuristic_bar(compare_on, metrics)
            version, promoted = await registry.publish(kind, model, metrics, compare_on=compare_on, must_beat=bar)
            if not promoted:
                reason = (f"it did not beat the heuristic ranker on the same holdout (bar {bar:.4f})"
                          if bar is not None and metrics[compare_on] <= bar
                          else "the current version scored higher or equal (on its own holdout)")
                log.warning("%s %s not promoted: %s %.4f; %s", kind, version, compare_on, metrics[compare_on], reason)
            report.published[kind] = {"version": version, "promoted": promoted, "metrics": metrics}
    report.seconds = time.perf_counter() - started
    log.info("trained on %s interactions in %.1fs: %s", report.events, report.seconds, report.published)
    return report
