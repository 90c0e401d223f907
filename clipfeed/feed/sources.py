"""Candidate sources for the For You feed, and the in-memory catalog they draw from.

The catalog is the candidate universe: the most recent ``feed_catalog_size`` ready videos that can
appear in a feed (public, or followers-only for followers), with their creator, hashtags, sound,
duration, counters and indexes by creator / hashtag / sound, plus the pool of fresh uploads with
few views. It is loaded from the database in one pass and replaced every
``feed_catalog_refresh_s`` seconds in the background, so a source never waits on SQL: each one
returns scored ids from memory, a model, or an ANN index within its time budget.

Every source follows one protocol (``CandidateSource``: ``name``, ``budget_ms``,
``async candidates(ctx) -> list[Candidate]``) and one contract (tests/feed/test_sources_contract.py):
it answers within its budget, returns only videos the viewer may see (``ctx.allowed``), never
the same id twice, and an empty list on an empty platform. Visibility is checked again against
the database when a page is served, so a catalog that is a few seconds stale cannot leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import heapq
import itertools
import logging
import random
import threading
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.feed.feature_store import positive_recent
from clipfeed.media.models import Video, VideoStatus, Visibility
from clipfeed.social.models import Hashtag, VideoHashtag

log = logging.getLogger("clipfeed.feed.sources")

PER_CREATOR = 20   # newest ids kept per creator index entry
PER_TAG = 300
PER_SOUND = 200


@dataclass(frozen=True, slots=True)
class Candidate:
    video_id: str
    score: float
    source: str


@dataclass(slots=True)
class VideoMeta:
    video_id: str
    creator_id: str
    visibility: str
    hashtags: tuple[str, ...]
    sound_id: str | None
    duration_ms: int
    published_at: float
    views: int
    likes: int
    shares: int
    comments: int
    completions: int = 0
    skips: int = 0  # of views


CHUNK = 2000  # videos per step of a catalog build between two yields to the event loop

# ---------------------------------------------------------------------------------------------
# Pages first: background work (a catalog refresh, a re-rank, a top-up) shares the event loop
# with the pages, and steps aside while a For You page is being served
# ---------------------------------------------------------------------------------------------

# At most this long per yield point, so background work always progresses. It was 20 ms: under
# steady load some page is always in flight, mostly waiting for its database answers, so every
# yield point of a top-up waited the full 20 ms with the loop idle (uvicorn workers at 0.84 of a
# core at 1M videos; back-to-back pairs 235 -> 254 and 176 -> 202 pages/s at 2 ms, a page beside
# a re-rank p99 13.5 -> 17.4 ms: still within the 25 ms goal).
BACKGROUND_WAIT_S = 0.002
in_background: contextvars.ContextVar[bool] = contextvars.ContextVar("clipfeed_feed_background", default=False)


class _PagesInFlight:
    """The For You pages being served on one event loop, and an event set while there are none."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()


_in_flight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PagesInFlight] = weakref.WeakKeyDictionary()


def _pages() -> _PagesInFlight:
    loop = asyncio.get_running_loop()
    pages = _in_flight.get(loop)
    if pages is None:
        pages = _in_flight[loop] = _PagesInFlight()
    return pages


def pages_in_flight() -> int:
    """For You pages being served on the running event loop."""
    return _pages().count


@contextlib.contextmanager
def page_in_flight():
    """Marks a For You page being served (its ranking, if any, and its picking and writes)."""
    pages = _pages()
    pages.count += 1
    pages.idle.clear()
    try:
        yield
    finally:
        pages.count -= 1
        if not pages.count:
            pages.idle.set()


async def yield_to_pages() -> None:
    """A yield point of long work on the event loop. In background work (`in_background` set by
    the task) it also waits while a page is in flight, up to BACKGROUND_WAIT_S: a bare yield
    only puts the work behind what is ready now, so a page beside it still waited for one chunk
    of it at every await of its own (its database answers), tens of ms over a page at 300k.
    The wait is on an event, not a poll: a server under steady load always has a page in flight,
    and 1 ms polls from every parked background task were CPU taken from the pages."""
    await asyncio.sleep(0)
    if not in_background.get():
        return
    pages = _pages()
    if not pages.count:
        return
    try:
        async with asyncio.timeout(BACKGROUND_WAIT_S):
            await pages.idle.wait()
    except TimeoutError:
        pass


class Catalog:
    """An immutable snapshot; a refresh builds a new one and swaps it in."""

    def __init__(self, videos: dict[str, VideoMeta], *, fresh_hours: float, fresh_max_views: int,
                 loaded_at: float | None = None, newest_first: bool = False, followers: dict[str, int] | None = None):
        for _ in self._build(videos, fresh_hours, fresh_max_views, loaded_at, newest_first, followers):
            pass

    @classmethod
    async def assemble(cls, videos: dict[str, VideoMeta], *, fresh_hours: float, fresh_max_views: int,
                       newest_first: bool = False, followers: dict[str, int] | None = None) -> Catalog:
        """The same snapshot built a chunk of videos per event-loop step: at 300k videos the
        indexes take ~0.6 s of CPU, which in one step stalled every page for that long at each
        refresh (every `feed_catalog_refresh_s`)."""
        catalog = cls.__new__(cls)
        for _ in catalog._build(videos, fresh_hours, fresh_max_views, None, newest_first, followers):
            await yield_to_pages()
        return catalog

    def _build(self, videos: dict[str, VideoMeta], fresh_hours: float, fresh_max_views: int,
               loaded_at: float | None, newest_first: bool, followers: dict[str, int] | None = None):
        """Build the indexes, yielding after every CHUNK videos. `newest_first`: `videos` is
        already ordered by publication time, newest first (as load_catalog reads it).
        `followers`: the creators' follower counts (the ranker's creator features)."""
        self.videos = videos
        self.loaded_at = loaded_at or time.time()
        self.followers = followers or {}
        by_creator: dict[str, list[str]] = defaultdict(list)
        # Per creator, over every video of theirs in the catalog: videos, views that were not
        # skips, completed views. Summed a chunk at a time by numpy: a dict of counters updated
        # per video doubled the build's CPU (+0.8 s at 1M videos).
        creator_row: dict[str, int] = {}
        totals = np.zeros((3, 0), np.int64)
        by_tag: dict[str, list[str]] = defaultdict(list)
        by_sound: dict[str, list[str]] = defaultdict(list)
        fresh_after = self.loaded_at - fresh_hours * 3600
        fresh: list[str] = []
        popular: list[tuple[int, VideoMeta]] = []
        # Newest first: the indexes keep the most recent ids of each key.
        ordered = list(videos.values()) if newest_first else sorted(videos.values(), key=lambda m: -m.published_at)
        for start in range(0, len(ordered), CHUNK):
            chunk = ordered[start:start + CHUNK]
            for meta in chunk:
                if len(by_creator[meta.creator_id]) < PER_CREATOR:
                    by_creator[meta.creator_id].append(meta.video_id)
                if meta.visibility != Visibility.PUBLIC:
                    continue
                for tag in meta.hashtags:
                    if len(by_tag[tag]) < PER_TAG:
                        by_tag[tag].append(meta.video_id)
                if meta.sound_id and len(by_sound[meta.sound_id]) < PER_SOUND:
                    by_sound[meta.sound_id].append(meta.video_id)
                if meta.published_at >= fresh_after and meta.views < fresh_max_views:
                    fresh.append(meta.video_id)
            # The 500 most popular public videos, kept across chunks (nlargest is stable, like
            # the sort of the whole catalog it replaces: ties stay in catalog order).
            popular = heapq.nlargest(500, popular + [(_popularity(m), m) for m in chunk
                                                     if m.visibility == Visibility.PUBLIC], key=lambda pm: pm[0])
            rows = np.fromiter((creator_row.setdefault(m.creator_id, len(creator_row)) for m in chunk), np.int64,
                               len(chunk))
            if len(creator_row) > totals.shape[1]:
                totals = np.pad(totals, ((0, 0), (0, max(len(creator_row), 2 * totals.shape[1]) - totals.shape[1])))
            np.add.at(totals[0], rows, 1)
            np.add.at(totals[1], rows, np.fromiter((m.views - m.skips for m in chunk), np.int64, len(chunk)))
            np.add.at(totals[2], rows, np.fromiter((m.completions for m in chunk), np.int64, len(chunk)))
            yield
        self.by_creator, self.by_tag, self.by_sound = dict(by_creator), dict(by_tag), dict(by_sound)
        self.creator_totals = dict(zip(creator_row, zip(*totals[:, :len(creator_row)].tolist())))
        self.fresh = fresh
        self.popular = [m.video_id for _score, m in popular]

    def __len__(self) -> int:
        return len(self.videos)


def _popularity(meta: VideoMeta) -> int:
    return meta.views + 3 * meta.likes + 5 * meta.shares + 4 * meta.comments


async def load_catalog(session: AsyncSession, settings: Settings) -> Catalog:
    """Read the catalog and build its snapshot in steps of a few milliseconds each: rows are
    streamed (each batch fetched by an await) and converted a batch at a time, and the indexes
    are built by Catalog.assemble. Read and built in one go at 300k videos this held the event
    loop for seconds (5.7 s measured at load 4) at each refresh."""
    limit = settings.feed_catalog_size
    rows: list = []
    result = await session.stream(
        select(Video.id, Video.owner_id, Video.visibility, Video.sound_id, Video.duration_ms, Video.published_at,
               Video.view_count, Video.like_count, Video.share_count, Video.comment_count, Video.completion_count,
               Video.skip_count)
        .where(Video.status == VideoStatus.READY,
               Video.visibility.in_((Visibility.PUBLIC, Visibility.FOLLOWERS)),
               Video.published_at.is_not(None))
        .order_by(Video.published_at.desc()).limit(limit))
    async for batch in result.partitions(CHUNK):
        rows += [tuple(r) for r in batch]
        await yield_to_pages()
    tags: dict[str, list[str]] = defaultdict(list)
    if rows:
        oldest = rows[-1][5]
        result = await session.stream(
            select(VideoHashtag.video_id, Hashtag.tag).join(Hashtag, Hashtag.id == VideoHashtag.hashtag_id)
            .join(Video, Video.id == VideoHashtag.video_id)
            .where(Video.status == VideoStatus.READY, Video.published_at >= oldest))
        async for batch in result.partitions(4 * CHUNK):
            for video_id, tag in batch:
                tags[video_id].append(tag)
            await yield_to_pages()
    videos: dict[str, VideoMeta] = {}
    for start in range(0, len(rows), CHUNK):
        for (vid, owner, visibility, sound, duration, published, views, likes, shares,
             comments, completions, skips) in rows[start:start + CHUNK]:
            videos[vid] = VideoMeta(vid, owner, visibility, tuple(tags.get(vid, ())), sound, int(duration or 0),
                                    published.timestamp(), int(views or 0), int(likes or 0), int(shares or 0),
                                    int(comments or 0), int(completions or 0), int(skips or 0))
        await yield_to_pages()
    # The creators' follower counts (users with none are left out: most of them).
    followers: dict[str, int] = {}
    result = await session.stream(select(User.id, User.follower_count).where(User.follower_count > 0))
    async for batch in result.partitions(4 * CHUNK):
        followers.update((user_id, int(count)) for user_id, count in batch)
        await yield_to_pages()
    creators = {meta.creator_id for meta in videos.values()}
    followers = {user_id: count for user_id, count in followers.items() if user_id in creators}
    return await Catalog.assemble(videos, fresh_hours=settings.feed_exploration_hours,
                                  fresh_max_views=settings.feed_exploration_max_views, newest_first=True,
                                  followers=followers)


class CatalogCache:
    """The deployment's current catalog: loaded on first use, refreshed in the background."""

    def __init__(self) -> None:
        self.catalog: Catalog | None = None
        self._refreshing = False
        self._lock = threading.Lock()
        # The first load in progress: resolves to its catalog, or None when it failed.
        self._first_load: asyncio.Future | None = None

    async def get(self, settings: Settings, db, session: AsyncSession) -> Catalog:
        """The current snapshot; the first load reads on the caller's session (on SQLite a
        second transaction would wait for the caller's own write lock)."""
        if settings.feed_catalog_refresh_s <= 0:  # a fresh catalog for every ranking (tests)
            return await self._load(settings, session)
        while (catalog := self.catalog) is None:
            loading = self._first_load
            if loading is None or loading.get_loop() is not asyncio.get_running_loop():
                return await self._lead_first_load(settings, session)
            # Another request is loading it: wait for that one. Each loading its own held one
            # catalog per concurrent request at 1M videos (7 GB per worker, minutes of CPU).
            # Shielded: a waiter that is cancelled must not cancel the load. A failed load
            # resolves to None and the next waiter leads.
            await asyncio.shield(loading)
        if time.time() - catalog.loaded_at > settings.feed_catalog_refresh_s:
            with self._lock:
                start = not self._refreshing
                self._refreshing = True
            if start:
                asyncio.get_running_loop().create_task(self._refresh(settings, db))
        return catalog

    async def _lead_first_load(self, settings: Settings, session: AsyncSession) -> Catalog:
        loading = self._first_load = asyncio.get_running_loop().create_future()
        catalog = None
        try:
            catalog = await self._load(settings, session)
            return catalog
        finally:
            self._first_load = None
            loading.set_result(catalog)

    async def _load(self, settings: Settings, session: AsyncSession) -> Catalog:
        with _full_collections_deferred(settings):
            catalog = self.catalog = await load_catalog(session, settings)
            _keep_out_of_collections(settings)
        return catalog

    async def _refresh(self, settings: Settings, db) -> None:
        # A read-only engine (on SQLite no BEGIN): a big catalog must not hold the write lock
        # that the application's BEGIN IMMEDIATE would take while it reads.
        from clipfeed.feed.trending import _read_engine

        in_background.set(True)  # this task's own context: its build steps aside for pages
        engine = _read_engine(settings)
        try:
            with _full_collections_deferred(settings):
                async with AsyncSession(engine) as session, session.begin():
                    self.catalog = await load_catalog(session, settings)
                _keep_out_of_collections(settings)
        except Exception:  # noqa: BLE001 - keep serving the previous snapshot
            log.warning("catalog refresh failed", exc_info=True)
        finally:
            self._refreshing = False
            await engine.dispose()

    def invalidate(self) -> None:
        self.catalog = None


_deferring = 0  # catalog builds in progress in this process (engines of several deployments)
_gen2_threshold = 0


@contextlib.contextmanager
def _full_collections_deferred(settings: Settings):
    """No full (generation 2) garbage collection while a catalog is being built, until it is
    frozen. The new snapshot's objects (a few per video) are not frozen yet while the build runs,
    and with the previous snapshot frozen, full collections come often (CPython runs one when the
    objects promoted since the last one exceed 25 % of those it walked then): each walked every
    new entry built so far, up to ~300 ms of event loop per collection at 300k videos, 13 of them
    in one refresh. Young collections go on (garbage cycles from requests still die young); what
    survives into the old generation meanwhile is walked by the next full collection, or frozen
    with the snapshot as before. Only when snapshots are frozen (a refresh period is set)."""
    global _deferring, _gen2_threshold
    if settings.feed_catalog_refresh_s <= 0:
        yield
        return
    if _deferring == 0:
        thresholds = gc.get_threshold()
        _gen2_threshold = thresholds[2]
        gc.set_threshold(thresholds[0], thresholds[1], 1_000_000)
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if _deferring == 0:
            thresholds = gc.get_threshold()
            gc.set_threshold(thresholds[0], thresholds[1], _gen2_threshold)


def _keep_out_of_collections(settings: Settings) -> None:
    """Move every object alive now (the catalog above all: a few objects per video) out of the
    garbage collector's reach. Every full collection walked them all, ~100 ms of CPU each at 30k
    videos, blocking the event loop, i.e. landing on some page's latency (bench/feed.py's uvicorn
    phase: 11.1 -> 10.3-10.6 server CPU ms per page). Frozen objects are still freed by reference
    counting when the next snapshot replaces them; only a reference cycle alive at this moment that
    becomes garbage later is never reclaimed, a bounded cost per snapshot (every
    `feed_catalog_refresh_s`; not done when every call reloads)."""
    if settings.feed_catalog_refresh_s > 0:
        gc.freeze()


# ---------------------------------------------------------------------------------------------
# The protocol and the request context
# ---------------------------------------------------------------------------------------------

@dataclass
class SourceContext:
    user_id: str | None
    catalog: Catalog
    settings: Settings
    now: float
    k: int = 100                              # how many candidates each source may return
    follows: frozenset[str] = frozenset()
    blocked: frozenset[str] = frozenset()     # creators blocked either way
    exclude: frozenset[str] = frozenset()     # seen, not interested
    creator_affinity: dict[str, float] = field(default_factory=dict)
    hashtag_affinity: dict[str, float] = field(default_factory=dict)
    sound_affinity: dict[str, float] = field(default_factory=dict)
    recent: list[tuple[str, float, float]] = field(default_factory=list)
    trending: list[tuple[str, float]] = field(default_factory=list)
    collab: object | None = None               # CollaborativeModel
    content: object | None = None              # ContentIndex
    seed: int = 0
    # The viewer's scratch space, kept with their queue from one ranking to the next (a source
    # keys its own entries by its name).
    memo: dict = field(default_factory=dict)
    # Vectors derived from `recent` once per ranking: the sources query with them and the ranker
    # scores with them, which must be the same vectors (and were computed twice).
    _derived: dict = field(default_factory=dict, init=False, repr=False)

    def recent_positives(self) -> tuple[list[str], list[float]]:
        if "positives" not in self._derived:
            self._derived["positives"] = positive_recent(self.recent)
        return self._derived["positives"]

    def short_term_vector(self):
        """The collaborative model's fold-in of the recent positives (None without either)."""
        if "short_term" not in self._derived:
            ids, weights = self.recent_positives()
            self._derived["short_term"] = self.collab.fold_in(ids, weights) if self.collab is not None and ids else None
        return self._derived["short_term"]

    def content_profile(self, index):
        """The content `index`'s profile of the recent positives (None without either)."""
        key = ("content_profile", id(index))
        if key not in self._derived:
            ids, weights = self.recent_positives()
            self._derived[key] = index.profile(ids, weights) if index is not None and ids else None
        return self._derived[key]

    def allowed(self, video_id: str) -> bool:
        """May this video be proposed to the viewer (from the catalog's facts)?"""
        if video_id in self.exclude:
            return False
        meta = self.catalog.videos.get(video_id)
        if meta is None:
            return False
        if meta.creator_id == self.user_id:
            return False  # your own videos are not recommended to you
        if meta.creator_id in self.blocked:
            return False
        return meta.visibility == Visibility.PUBLIC or (
            meta.visibility == Visibility.FOLLOWERS and meta.creator_id in self.follows)


class CandidateSource(Protocol):
    name: str
    budget_ms: float

    async def candidates(self, ctx: SourceContext) -> list[Candidate]: ...


def _take(ctx: SourceContext, scored, name: str) -> list[Candidate]:
    """Keep allowed ids once each (highest score wins), best first, at most ctx.k."""
    best: dict[str, float] = {}
    for video_id, score in scored:
        if video_id not in best or score > best[video_id]:
            best[video_id] = score
    # Checked best first, until k are allowed: a source proposes several times k ids (~1,200
    # allowed() calls per ranking when every id was checked, for ~600 kept).
    out: list[Candidate] = []
    allowed = ctx.allowed
    for video_id, score in sorted(best.items(), key=lambda kv: (-kv[1], kv[0])):
        if allowed(video_id):
            out.append(Candidate(video_id, float(score), name))
            if len(out) >= ctx.k:
                break
    return out


def _recency(ctx: SourceContext, video_id: str, half_life_h: float = 48.0) -> float:
    meta = ctx.catalog.videos.get(video_id)
    if meta is None:
        return 0.0
    age_s = ctx.now - meta.published_at
    return 0.5 ** (age_s / (3600 * half_life_h)) if age_s > 0 else 1.0


class _Base:
    name = "base"

    def __init__(self, budget_ms: float | None = None):
        self.budget_ms = budget_ms if budget_ms is not None else 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> _Base:
        return cls(settings.feed_source_budget_ms.get(cls.name, 10.0))


class FollowingSource(_Base):
    """The newest videos of the creators the viewer follows."""

    name = "following"

    async def candidates(self, ctx: SourceContext) -> list[Candidate]:
        scored = []
        per_creator = max(3, 4 * ctx.k // max(1, len(ctx.follows)))  # many follows: the newest few each
        for creator in ctx.follows:
            for video_id in ctx.catalog.by_creator.get(creator, ())[:per_creator]:
                scored.append((video_id, 0.2 + _recency(ctx, video_id)))
        return _take(ctx, scored, self.name)


class TrendingSource(_Base):
    """Trending in the viewer's region (else global; else the most popular recent videos)."""

    name = "trending"

    async def candidates(self, ctx: SourceContext) -> list[Candidate]:
        items = ctx.trending or [(vid, 0.0) for vid in ctx.catalog.popular]
        n = max(1, len(items))
        # Rank-based score: the trending score scale depends on traffic, the rank does not.
        return _take(ctx, ((vid, 1.0 - i / n) for i, (vid, _score) in enumerate(items[:4 * ctx.k])), self.name)


class AffinitySource(_Base):
    """Videos of the creators, hashtags and sounds the viewer engaged with most."""

    name = "affinity"
    TOP_CREATORS, TOP_TAGS, TOP_SOUNDS = 8, 8, 4

    async def candidates(self, ctx: SourceContext) -> list[Candidate]:
        scored = []

        def top(affinity: dict[str, float], n: int):
            return [(key, value) for key, value in sorted(affinity.items(), key=lambda kv: -kv[1])[:n] if value > 0]

        for creator, value in top(ctx.creator_affinity, self.TOP_CREATORS):
            scored += [(vid, value * (0.5 + _recency(ctx, vid))) for vid in ctx.catalog.by_creator.get(creator, ())]
        for tag, value in top(ctx.hashtag_affinity, self.TOP_TAGS):
            ids = ctx.catalog.by_tag.get(tag, ())
            scored += [(vid, value * (0.5 + _recency(ctx, vid))) for vid in ids[:max(10, ctx.k // 3)]]
        for sound, value in top(ctx.sound_affinity, self.TOP_SOUNDS):
            scored += [(vid, value * (0.5 + _recency(ctx, vid))) for vid in ctx.catalog.by_sound.get(sound, ())[:max(10, ctx.k // 4)]]
        return _take(ctx, scored, self.name)


class ExplorationSource(_Base):
    """Fresh uploads with few views, in an order that varies by viewer and hour, so every new
    creator gets seen by someone."""

    name = "exploration"

    async def candidates(self, ctx: SourceContext) -> list[Candidate]:
        rng = random.Random(f"{ctx.seed}:{ctx.user_id}:{int(ctx.now // 3600)}")
        pool = ctx.catalog.fresh
        # Sample first, then filter: the fresh pool can hold tens of thousands of ids.
        sampled = rng.sample(pool, min(len(pool), 4 * ctx.k))
        picked = [vid for vid in sampled if ctx.allowed(vid)][:ctx.k]
        return _take(ctx, ((vid, 1.0 / (1.0 + ctx.catalog.videos[vid].views)) for vid in picked), self.name)


def _rows_memo(ctx: SourceContext, name: str, index) -> dict[str, int]:
    """The viewer's id -> row memo for `index` (see collaborative.rows_of); a new model or
    content index starts it over."""
    held = ctx.memo.get(name)
    if held is None or held[0]() is not index:
        held = ctx.memo[name] = (weakref.ref(index), {})
    return held[1]


class CollaborativeSource(_Base):
    """ANN over the collaborative model's item vectors, queried with the user's long-term vector
    (from training) and short-term vector (fold-in of the recent history)."""

    name = "collaborative"

    async def candidates(self, ctx: SourceContext) -> list[Candidate]:
        model = ctx.collab
        if model is None:
            return []
        # The exclusion as index rows once, for both queries; the searches apply it (k results
        # are k unseen ones), so each asks for k plus a margin for what `allowed` still drops.
        excluded = model.rows(ctx.exclude, _rows_memo(ctx, self.name, model))
        want = ctx.k + ctx.k // 4
        scored = []
        long_term = model.user_vector(ctx.user_id) if ctx.user_id else None
        if long_term is not None:
            scored += model.nearest(long_term, want, excluded_rows=excluded)
        short_term = ctx.short_term_vector()
        if short_term is not None:
            scored += model.nearest(short_term, want, ctx.recent_positives()[0], excluded_rows=excluded)
        return _take(ctx, scored, self.name)


class ContentSource(_Base):
    """Videos whose caption/hashtag (and media feature) vectors are nearest to what the viewer
    recently completed or liked."""

    name = "content"

    async def candidates(self, ctx: SourceContext) -> list[Candidate]:
        index = ctx.content
        if index is None:
            return []
        vector = ctx.content_profile(index)
        if vector is None:
            return []
        return _take(ctx, index.nearest(vector, ctx.k, itertools.chain(ctx.exclude, ctx.recent_positives()[0]),
                                        _rows_memo(ctx, self.name, index)), self.name)


ALL_SOURCES = (FollowingSource, CollaborativeSource, ContentSource, TrendingSource, AffinitySource,
               ExplorationSource)


def build_sources(settings: Settings) -> dict[str, CandidateSource]:
    return {cls.name: cls.from_settings(settings) for cls in ALL_SOURCES}


async def run_sources(sources: list[CandidateSource], ctx: SourceContext) -> tuple[dict[str, list[Candidate]], dict[str, str]]:
    """Run every source within its own budget. Returns (results by source, problems by source);
    a source that fails or overruns is dropped for this request and logged.

    One after the other: the sources compute in memory (no I/O to overlap), and run side by side
    on one event loop each would be charged for the others' CPU time and dropped unfairly.
    Awaited inline under a deadline, not as a task (wait_for): a task waits its turn behind every
    other request's ready work, and on a busy server that wait was charged to the source, which
    dropped sources of most rankings (~1,100 in 20 s at 16 concurrent clients) for no fault of theirs."""
    results, problems = {}, {}
    for position, source in enumerate(sources):
        if position:
            # Between two sources (not charged to either): a ranking in the background steps
            # aside here for the pages in flight; six sources back to back were one 10-15 ms step.
            await yield_to_pages()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(source.budget_ms / 1000):
                result = await source.candidates(ctx)
            elapsed_ms = (time.perf_counter() - started) * 1000
            if elapsed_ms > source.budget_ms:
                # A source that computes without yielding cannot be interrupted; it is dropped after.
                raise TimeoutError(f"took {elapsed_ms:.1f} ms")
            results[source.name] = result
        except Exception as exc:  # noqa: BLE001 - any failure drops the source, never the request
            reason = "timeout" if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) else repr(exc)
            problems[source.name] = reason
            log.warning("candidate source %s dropped: %s", source.name, reason)
    return results, problems
