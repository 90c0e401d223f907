"""Trending videos, hashtags and sounds: time-decayed engagement velocity relative to the item's
own baseline, per region.

For every item (a video; a hashtag or sound through the videos that carry it) and region:

    recent   = sum over the last RECENT_H hours of weight(event) * 2^(-age / HALF_LIFE_H)
    baseline = sum over the BASELINE_DAYS before that of weight(event)
    score    = (recent / DECAY_HOURS) / (baseline / BASELINE_HOURS + PRIOR)

with weight = 1 view, 3 like, 4 comment, 5 share. The numerator is a decayed events-per-hour
rate, the denominator the item's usual hourly rate plus a prior (PRIOR weighted events/hour), so
a video with steady high traffic scores about 1 however big it is, while a small creator's
sudden spike scores several times that; the prior keeps a handful of views from trending.
Items need at least MIN_RECENT decayed weighted events.

Regions come from the events (the viewer's region when the event was recorded, upper-cased);
region "" is global (every event, with or without a region). Only ready, public videos count,
and a sound only when its source video (if any) is ready and public.

`recompute(settings)` does the work: one pass over the events of the window into a temporary
aggregate, read on a snapshot (SQLite: a deferred transaction in WAL mode, so API writers are
not blocked while it reads), then the TrendingEntry rows are replaced in one short write
transaction. A periodic job runs it every 5 minutes. Reads go through a small in-process cache
(TTL 30 s; a recompute in this process clears it). Before anything was computed, the trending
feed falls back to recently published videos ordered by popularity. Lists are paged with an
opaque offset cursor into the ranked list; visibility (ready, public, no block with the viewer) is
checked again when serving, so a video hidden after the computation is skipped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.db import Database, utcnow
from clipfeed.db.base import UTCDateTime
from clipfeed.db.engine import build_engine
from clipfeed.errors import ValidationFailed
from clipfeed.media.models import Sound, Video, VideoStatus, Visibility
from clipfeed.pagination import decode_offset_cursor, encode_offset_cursor
from clipfeed.social import graph
from clipfeed.social.models import Hashtag, TrendingEntry

KINDS = ("video", "hashtag", "sound")
WEIGHTS = {"view": 1.0, "like": 3.0, "comment": 4.0, "share": 5.0}
HALF_LIFE_H = 4.0
RECENT_H = 24
BASELINE_DAYS = 7
BASELINE_HOURS = BASELINE_DAYS * 24.0 - RECENT_H
DECAY_HOURS = HALF_LIFE_H / math.log(2)  # the decay kernel's area: turns `recent` into a rate
PRIOR = 5.0
MIN_RECENT = 3.0
TOP_N = {"video": 300, "hashtag": 100, "sound": 100}
CACHE_TTL_S = 30.0
FALLBACK_TTL_S = 5.0
FALLBACK_DAYS = 7
MAX_LIMIT = 50

log = logging.getLogger("clipfeed.feed.trending")


# ---------------------------------------------------------------------------------------------
# Computation
# ---------------------------------------------------------------------------------------------

def _read_engine(settings: Settings):
    """An engine that only reads: on SQLite no BEGIN (each statement on the latest committed data,
    no write lock taken) instead of the application's BEGIN IMMEDIATE."""
    return build_engine(settings, pooled=False, read_only=True)


def _weight_sql() -> str:
    return ("CASE e.kind " + " ".join(f"WHEN '{kind}' THEN {weight}" for kind, weight in WEIGHTS.items())
            + " ELSE 0 END")


def _dialect_sql(dialect: str) -> dict[str, str]:
    if dialect == "postgresql":
        return {"age_h": "(EXTRACT(EPOCH FROM (CAST(:now AS TIMESTAMPTZ) - e.created_at)) / 3600.0)",
                "sound": "COALESCE(v.sound_id, v.artifacts->>'sound_id')",
                "temp": "CREATE TEMP TABLE {name} ON COMMIT DROP AS ", "temp_schema": "pg_temp"}
    return {"age_h": "((julianday(:now) - julianday(e.created_at)) * 24.0)",
            "sound": "COALESCE(v.sound_id, json_extract(v.artifacts, '$.sound_id'))",
            "temp": "CREATE TEMP TABLE {name} AS ", "temp_schema": "temp"}


def _top_sql(item_col: str, source: str, extra_where: str = "") -> str:
    """Top-N items per region by score, from an aggregate (item, region, recent, base)."""
    return f"""
        SELECT item, region, score FROM (
            SELECT item, region, score,
                   ROW_NUMBER() OVER (PARTITION BY region ORDER BY score DESC, item) AS rn
            FROM (
                SELECT {item_col} AS item, a.region AS region,
                       (SUM(a.recent) / CAST(:decay_h AS DOUBLE PRECISION))
                       / (SUM(a.base) / CAST(:base_h AS DOUBLE PRECISION) + CAST(:prior AS DOUBLE PRECISION)) AS score
                FROM {source} {extra_where}
                GROUP BY {item_col}, a.region
                HAVING SUM(a.recent) >= CAST(:min_recent AS DOUBLE PRECISION)
            ) scored
        ) ranked WHERE rn <= CAST(:top_n AS INTEGER)"""


@dataclass
class RecomputeResult:
    entries: dict[str, int]
    regions: int
    seconds: float


async def recompute_async(settings: Settings, *, now: datetime | None = None) -> RecomputeResult:
    started = time.perf_counter()
    now = now or utcnow()
    recent_start = now - timedelta(hours=RECENT_H)
    base_start = now - timedelta(days=BASELINE_DAYS)
    engine = _read_engine(settings)
    dialect = engine.dialect.name
    sql = _dialect_sql(dialect)
    params = {"now": now, "recent_start": recent_start, "base_start": base_start,
              "k": math.log(2) / HALF_LIFE_H, "decay_h": DECAY_HOURS, "base_h": BASELINE_HOURS,
              "prior": PRIOR, "min_recent": MIN_RECENT}
    dt = UTCDateTime()

    def bound(statement: str, *names: str):
        stmt = text(statement)
        for name in names:
            stmt = stmt.bindparams(bindparam(name, type_=dt))
        return stmt

    results: dict[str, list[tuple[str, str, float]]] = {}
    try:
        async with engine.connect() as conn:
            async with conn.begin():
                for name in ("trending_events", "trending_agg"):
                    await conn.execute(text(f"DROP TABLE IF EXISTS {sql['temp_schema']}.{name}"))
                # 1. One pass over the window: per (video, region) sums. Events without a region
                #    are kept under '-' (global only).
                await conn.execute(bound(
                    sql["temp"].format(name="trending_events") + f"""
                    SELECT e.video_id AS video_id, COALESCE(UPPER(e.region), '-') AS region,
                           SUM(CASE WHEN e.created_at >= :recent_start
                                    THEN ({_weight_sql()}) * exp(-CAST(:k AS DOUBLE PRECISION) * {sql['age_h']}) ELSE 0 END) AS recent,
                           SUM(CASE WHEN e.created_at < :recent_start THEN ({_weight_sql()}) ELSE 0 END) AS base
                    FROM interaction_events e
                    WHERE e.created_at >= :base_start AND e.created_at <= :now
                      AND e.video_id IS NOT NULL AND e.kind IN ({", ".join(f"'{k}'" for k in WEIGHTS)})
                    GROUP BY e.video_id, COALESCE(UPPER(e.region), '-')""", "now", "recent_start", "base_start"),
                    params)
                log.debug("trending: events aggregated at %.2fs", time.perf_counter() - started)
                # 2. Only ready, public videos; remember each one's sound.
                await conn.execute(text(
                    sql["temp"].format(name="trending_agg") + f"""
                    SELECT a.video_id AS video_id, a.region AS region, a.recent AS recent, a.base AS base,
                           {sql['sound']} AS sound_id
                    FROM trending_events a JOIN videos v ON v.id = a.video_id
                    WHERE v.status = 'ready' AND v.visibility = 'public'"""))
                # 3. Global rows (region '').
                await conn.execute(text(
                    "INSERT INTO trending_agg (video_id, region, recent, base, sound_id) "
                    "SELECT video_id, '', SUM(recent), SUM(base), MIN(sound_id) FROM trending_agg GROUP BY video_id"))
                log.debug("trending: visible aggregate at %.2fs", time.perf_counter() - started)
                top = {**params}
                top["top_n"] = TOP_N["video"]
                results["video"] = (await conn.execute(text(
                    _top_sql("a.video_id", "trending_agg a", "WHERE a.region <> '-'")), top)).all()
                log.debug("trending: videos ranked at %.2fs", time.perf_counter() - started)
                top["top_n"] = TOP_N["hashtag"]
                results["hashtag"] = (await conn.execute(text(_top_sql(
                    "h.tag", "trending_agg a JOIN video_hashtags vh ON vh.video_id = a.video_id "
                    "JOIN hashtags h ON h.id = vh.hashtag_id", "WHERE a.region <> '-'")), top)).all()
                log.debug("trending: hashtags ranked at %.2fs", time.perf_counter() - started)
                top["top_n"] = TOP_N["sound"]
                results["sound"] = (await conn.execute(text(_top_sql(
                    "a.sound_id", "trending_agg a JOIN sounds s ON s.id = a.sound_id "
                    "LEFT JOIN videos sv ON sv.id = s.source_video_id",
                    "WHERE a.region <> '-' AND (s.source_video_id IS NULL OR "
                    "(sv.status = 'ready' AND sv.visibility = 'public'))")), top)).all()
                for name in ("trending_events", "trending_agg"):
                    await conn.execute(text(f"DROP TABLE IF EXISTS {sql['temp_schema']}.{name}"))
    finally:
        await engine.dispose()

    rows = []
    regions = set()
    for kind, entries in results.items():
        ranks: dict[str, int] = {}
        for item, region, score in sorted(entries, key=lambda r: (r[1], -float(r[2]), r[0])):
            ranks[region] = ranks.get(region, 0) + 1
            regions.add(region)
            rows.append({"kind": kind, "region": region, "item_id": item, "rank": ranks[region],
                         "score": float(score), "computed_at": now})
    db = Database(settings, pooled=False)
    try:
        async with db.transaction() as session:
            if dialect == "postgresql":
                # Two workers' schedulers may both run it: one replacement at a time.
                await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('clipfeed.trending'))"))
            await session.execute(delete(TrendingEntry))
            if rows:
                await session.execute(insert(TrendingEntry), rows)
    finally:
        await db.dispose()
    invalidate(settings)
    return RecomputeResult(entries={kind: len(results.get(kind, [])) for kind in KINDS},
                           regions=len(regions - {""}), seconds=time.perf_counter() - started)


def recompute(settings: Settings, *, now: datetime | None = None) -> RecomputeResult:
    """Synchronous entry point (the periodic job, the CLI, tests on a thread without a loop)."""
    import asyncio

    return asyncio.run(recompute_async(settings, now=now))


# ---------------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------------

_cache: dict[tuple, tuple[float, list[tuple[str, float]]]] = {}
_cache_lock = threading.Lock()


def _db_key(settings: Settings) -> str:
    return f"{settings.resolved_database_url}#{settings.database_schema or ''}"


def invalidate(settings: Settings) -> None:
    key = _db_key(settings)
    with _cache_lock:
        for cache_key in [k for k in _cache if k[0] == key]:
            del _cache[cache_key]


def _cached(settings: Settings, kind: str, region: str):
    with _cache_lock:
        hit = _cache.get((_db_key(settings), kind, region))
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    return None


def _store(settings: Settings, kind: str, region: str, items: list, ttl: float) -> None:
    with _cache_lock:
        _cache[(_db_key(settings), kind, region)] = (time.monotonic() + ttl, items)


def normalize_region(region: str | None) -> str | None:
    if region is None:
        return None
    region = region.strip().upper()
    if not region:
        return None
    if len(region) > 8 or not region.isascii() or not region.isalnum():
        raise ValidationFailed("region must be a region code such as FR", field="region")
    return region


def resolve_region(region: str | None, viewer: User | None) -> str:
    """?region=, else the viewer's profile region, else global ('')."""
    explicit = normalize_region(region)
    if explicit:
        return explicit
    if viewer is not None and viewer.region:
        return viewer.region.strip().upper()
    return ""


async def _computed(session: AsyncSession, settings: Settings, kind: str, region: str) -> list[tuple[str, float]]:
    items = _cached(settings, kind, region)
    if items is None:
        items = [(row.item_id, row.score) for row in (await session.execute(
            select(TrendingEntry.item_id, TrendingEntry.score)
            .where(TrendingEntry.kind == kind, TrendingEntry.region == region)
            .order_by(TrendingEntry.rank))).all()]
        _store(settings, kind, region, items, CACHE_TTL_S)
    return items


async def _fallback_videos(session: AsyncSession, settings: Settings) -> list[tuple[str, float]]:
    """Nothing computed yet: recently published public videos, most popular first."""
    items = _cached(settings, "video-fallback", "")
    if items is None:
        since = utcnow() - timedelta(days=FALLBACK_DAYS)
        rows = (await session.execute(
            select(Video.id, Video.view_count, Video.like_count, Video.comment_count, Video.share_count)
            .where(Video.status == VideoStatus.READY, Video.visibility == Visibility.PUBLIC,
                   Video.published_at >= since)
            .order_by(Video.published_at.desc()).limit(1000))).all()
        scored = [(r.id, math.log1p((r.view_count or 0) + 3 * (r.like_count or 0) + 4 * (r.comment_count or 0)
                                    + 5 * (r.share_count or 0))) for r in rows]
        items = sorted(scored, key=lambda item: (-item[1], item[0]))[:TOP_N["video"]]
        _store(settings, "video-fallback", "", items, FALLBACK_TTL_S)
    return items


async def ranked_items(session: AsyncSession, settings: Settings, kind: str, region: str) -> list[tuple[str, float]]:
    """The ranked (item_id, score) list for a region, else the global one (else, for videos,
    the fallback)."""
    items = await _computed(session, settings, kind, region) if region else []
    if not items:
        items = await _computed(session, settings, kind, "")
    if not items and kind == "video":
        items = await _fallback_videos(session, settings)
    return items


async def _page(items: list[tuple[str, float]], offset: int, limit: int, visible) -> tuple[list[tuple[str, float]], str | None]:
    """Walk the ranked list from `offset`, keeping what `visible(ids)` lets through."""
    out: list[tuple[str, float]] = []
    position = offset
    while len(out) < limit and position < len(items):
        chunk = items[position:position + 2 * limit]
        allowed = await visible([item for item, _ in chunk])
        for item, score in chunk:
            position += 1
            if item in allowed:
                out.append((item, score))
                if len(out) == limit:
                    break
    return out, (encode_offset_cursor(position) if position < len(items) else None)


async def trending_videos(session: AsyncSession, settings: Settings, viewer: User | None, *, region: str | None,
                          limit: int, cursor: str | None) -> tuple[list[Video], str | None, str]:
    offset = decode_offset_cursor(cursor)
    region_code = resolve_region(region, viewer)
    items = await ranked_items(session, settings, "video", region_code)
    found: dict[str, Video] = {}

    async def visible(ids: list[str]) -> set[str]:
        query = select(Video).where(Video.id.in_(ids), Video.status == VideoStatus.READY,
                                    Video.visibility == Visibility.PUBLIC)
        if viewer is not None:
            query = query.where(~graph.blocked_clause(viewer.id, Video.owner_id))
        for video in (await session.scalars(query)).all():
            found[video.id] = video
        return set(found)

    page, next_cursor = await _page(items, offset, limit, visible)
    return [found[item] for item, _ in page], next_cursor, region_code


async def trending_hashtags(session: AsyncSession, settings: Settings, viewer: User | None, *, region: str | None,
                            limit: int, cursor: str | None) -> tuple[list[dict], str | None, str]:
    offset = decode_offset_cursor(cursor)
    region_code = resolve_region(region, viewer)
    items = await ranked_items(session, settings, "hashtag", region_code)
    found: dict[str, Hashtag] = {}

    async def visible(tags: list[str]) -> set[str]:
        for hashtag in (await session.scalars(select(Hashtag).where(Hashtag.tag.in_(tags)))).all():
            found[hashtag.tag] = hashtag
        return set(found)

    page, next_cursor = await _page(items, offset, limit, visible)
    out = [{"tag": tag, "video_count": found[tag].video_count, "score": round(score, 4)} for tag, score in page]
    return out, next_cursor, region_code


async def trending_sounds(session: AsyncSession, settings: Settings, viewer: User | None, *, region: str | None,
                          limit: int, cursor: str | None) -> tuple[list[Sound], list[float], str | None, str]:
    offset = decode_offset_cursor(cursor)
    region_code = resolve_region(region, viewer)
    items = await ranked_items(session, settings, "sound", region_code)
    found: dict[str, Sound] = {}

    async def visible(ids: list[str]) -> set[str]:
        source = select(Video.id).where(Video.id == Sound.source_video_id, Video.status == VideoStatus.READY,
                                        Video.visibility == Visibility.PUBLIC).exists()
        query = select(Sound).where(Sound.id.in_(ids), or_(Sound.source_video_id.is_(None), source))
        if viewer is not None:
            query = query.where(~graph.blocked_clause(viewer.id, Sound.owner_id))
        for sound in (await session.scalars(query)).all():
            found[sound.id] = sound
        return set(found)

    page, next_cursor = await _page(items, offset, limit, visible)
    return [found[item] for item, _ in page], [score for _, score in page], next_cursor, region_code


__all__ = ["recompute", "recompute_async", "invalidate", "trending_videos", "trending_hashtags", "trending_sounds",
           "ranked_items", "resolve_region"]
