"""The For You service: candidates -> ranking -> re-ranking -> a per-user queue -> pages.

Per signed-in user the engine keeps a queue of about ``feed_queue_size`` ranked ids. A page pops
from it (after a last visibility check against the database), records impressions, and the
queue is topped up in the background when it falls under ``feed_queue_low_water`` (a ranking
that leaves the queued items out, so it adds a whole queue of new ones). The user's own events
(views, likes, skips, follows, not interested) mark their queue stale and re-rank it in the
background; the next page waits for that (or ranks itself), so what they just did shows at once.
That re-rank is a re-score while the queue holds enough items: the queued items plus the
affinity source's candidates, scored with the updated features (an event moves nothing else a
source reads); a follow, a short queue or a mode change ranks from every source.

A refill runs every candidate source concurrently, each within its own budget (a failing or
slow one is dropped for that request and logged), merges the candidates, builds the ranker
features (``recsys.features.build_features``), scores them with the served ranker (LightGBM from
the model registry, else the heuristic ranker) as a weighted sum of its heads, reserves a share
of the queue for exploration, and applies the diversity rules.

Modes (the response says which served it):
- ``personalized``: every source, the served models.
- ``cold_start``: a signed-in user with fewer than ``feed_cold_start_events`` interactions (or
  an anonymous viewer): trending + exploration (+ following).
- ``fallback``: a model could not be loaded (missing or corrupt artifact): trending + following
  ranked by the heuristic ranker. Never an error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import String, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.errors import ClipfeedError
from clipfeed.feed import events as feed_events
from clipfeed.feed import trending
from clipfeed.feed.content_catalog import build_content, read_served_content
from clipfeed.feed.feature_store import FeatureStore, VideoCounters, deployment_key, feature_store, load_user
from clipfeed.feed.impressions import ImpressionLog
from clipfeed.feed.models import Impression, NotInterested
from clipfeed.feed.recsys.content import TextVectorCache
from clipfeed.feed.recsys.features import CreatorState, UserState, VideoState
from clipfeed.feed.reranking import (LOOKAHEAD, Ranked, diversify, fits_creator_rules, out_of_collections,
                                     visible_rows)
from clipfeed.feed.sources import (Catalog, CatalogCache, SourceContext, VideoMeta, _keep_out_of_collections,
                                   build_sources, in_background, page_in_flight, run_sources, yield_to_pages)
from clipfeed.media import service as media
from clipfeed.social.models import Block, Follow

log = logging.getLogger("clipfeed.feed.foryou")

PERSONALIZED, COLD_START, FALLBACK = "personalized", "cold_start", "fallback"
SEEN_LOOKBACK = 5000          # impressions read per refill to exclude what was shown
CURSOR_TTL_S = 24 * 3600
MODEL_RETRY_S = 10.0          # a model that failed to load is retried after this long
ANON_TTL_S = 30.0
ANON_LISTINGS_KEPT = 64  # per process: the lists recent anonymous cursors still page through
MAX_QUEUES = 50_000
# Events after which a re-score of the queue is not enough: they change a source's input other
# than the user's features and affinities (the following source).
FULL_RANK_EVENTS = frozenset({"follow", "unfollow"})
# A chosen topic's weight as a hashtag affinity (one completed view adds 1.4 to each of its tags).
INTEREST_AFFINITY = 1.0

MODES_BY_SOURCES = {
    PERSONALIZED: ("following", "collaborative", "content", "trending", "affinity", "exploration"),
    COLD_START: ("following", "trending", "exploration"),
    FALLBACK: ("following", "trending"),
}


# The viewer's facts, read by every ranking: statements built once with a bound user id (building
# and cache-keying four queries per ranking cost more than running them).
_USER = bindparam("user_id", type_=String)
_FOLLOWS = select(Follow.followee_id).where(Follow.follower_id == _USER)
_BLOCKS = select(Block.blocker_id, Block.blocked_id).where(or_(Block.blocker_id == _USER, Block.blocked_id == _USER))
_SEEN = (select(Impression.video_id).where(Impression.user_id == _USER)
         .order_by(Impression.created_at.desc()).limit(SEEN_LOOKBACK))
_NEWEST_SEEN = select(func.max(Impression.created_at)).where(Impression.user_id == _USER)
_SEEN_SINCE = (select(Impression.video_id, Impression.created_at)
               .where(Impression.user_id == _USER, Impression.created_at >= bindparam("since")))
# An impression written by another process may commit a little after a newer one was read: the
# incremental read looks this far back from the newest impression it has seen.
SEEN_OVERLAP = timedelta(seconds=30)
_MARKED = select(NotInterested.video_id).where(NotInterested.user_id == _USER)


class InvalidCursor(ClipfeedError):
    status = 400
    code = "invalid_cursor"


# ---------------------------------------------------------------------------------------------
# Cursors: stateless, signed, bound to the viewer
# ---------------------------------------------------------------------------------------------

def _sign(settings: Settings, raw: bytes) -> str:
    return hmac.new(settings.signing_key, b"for-you\n" + raw, hashlib.sha256).hexdigest()[:24]


def encode_cursor(settings: Settings, viewer_id: str | None, page: int, offset: int = 0, listing: int = 0) -> str:
    raw = json.dumps({"u": viewer_id or "", "p": page, "o": offset, "l": listing, "t": int(time.time())},
                     separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + _sign(settings, raw)


def decode_cursor(settings: Settings, cursor: str, viewer_id: str | None) -> dict:
    body, _, signature = cursor.partition(".")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = json.loads(raw)
        page, offset, issued = int(data["p"]), int(data["o"]), int(data["t"])
        listing = int(data.get("l", 0))
        owner = str(data["u"])
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidCursor("cursor is malformed: pass back the next_cursor of a previous For You page",
                            field="cursor") from exc
    if not signature or not hmac.compare_digest(signature, _sign(settings, raw)):
        raise InvalidCursor("cursor is unknown: it was not issued by this server", field="cursor")
    if owner != (viewer_id or ""):
        raise InvalidCursor("cursor belongs to another viewer; start again without a cursor", field="cursor")
    if time.time() - issued > CURSOR_TTL_S or page < 0 or offset < 0:
        raise InvalidCursor("cursor has expired; start again without a cursor", field="cursor")
    return {"page": page, "offset": offset, "listing": listing}


# ---------------------------------------------------------------------------------------------
# Engine state per deployment
# ---------------------------------------------------------------------------------------------

_NO_COUNTERS = VideoCounters()  # a candidate with no event since the store started (most): read only


def video_state(meta: VideoMeta, live: VideoCounters, now: float, text_vector: np.ndarray | None = None) -> VideoState:
    """The ranker's view of a candidate, from the catalog's counters (the database's totals as of
    the last catalog refresh) and the feature store's (counted since the store started), defined
    as in training (``clipfeed.feed.recsys.pipeline``).

    Views and completions, whose ratio is the completion rate, come as a pair from the source
    that has counted more views, and views are those that were not skips. Mixed (views from the
    catalog, completions from a store that started after most of them), every established
    video's rate was near zero after a restart: 1,000 views and no completions seen is 0.003,
    against 0.35 for a video nobody has seen. Impressions are counted by the store alone; a video
    was shown at least as often as it was watched (in training, each viewer is an impression)."""
    if live.views > meta.views:
        watched, views, completions = live.views, live.views - live.skips, live.completions
    else:
        watched, views, completions = meta.views, meta.views - meta.skips, meta.completions
    return VideoState(
        video_id=meta.video_id, creator_id=meta.creator_id, hashtags=meta.hashtags, sound_id=meta.sound_id,
        duration_s=(meta.duration_ms or 15_000) / 1000, age_s=max(0.0, now - meta.published_at),
        impressions=max(live.impressions, watched), views=views, completions=completions,
        likes=max(meta.likes, live.likes), shares=max(meta.shares, live.shares),
        comments=max(meta.comments, live.comments), velocity=live.velocity_now(now), text_vector=text_vector)


def creator_states(catalog: Catalog, live: dict[str, CreatorState], creator_ids: list[str]) -> dict[str, CreatorState]:
    """The ranker's view of the candidates' creators, defined as in training: their videos in the
    catalog, their followers, and their completion rate over those videos' views that were not
    skips, from the catalog's totals unless the feature store has counted more (the pairing of
    `video_state`). From the store alone, every creator had 0 videos and only the followers
    gained since the store started."""
    out = {}
    for creator_id in creator_ids:
        videos, views, completions = catalog.creator_totals.get(creator_id, (0, 0, 0))
        rate = completions / max(views, 1)
        counted = live.get(creator_id)
        if counted is not None and counted.views > views:
            views, rate = counted.views, counted.completion_rate
        out[creator_id] = CreatorState(creator_id, followers=catalog.followers.get(creator_id, 0),
                                       completion_rate=rate, video_count=videos, views=views)
    return out


@dataclass
class SeenImpressions:
    """The user's impressions read so far (the newest SEEN_LOOKBACK, then everything newer), so a
    refill reads only the impressions written since the last one instead of up to SEEN_LOOKBACK
    rows (~5 ms of a ~18 ms top-up for a user who has swiped through a few thousand videos)."""
    ids: set[str] = field(default_factory=set)
    newest: datetime | None = None

    def add(self, rows) -> None:
        for video_id, created_at in rows:
            self.ids.add(video_id)
            if created_at is not None and (self.newest is None or created_at > self.newest):
                self.newest = created_at


@dataclass
class UserQueue:
    items: list[Ranked] = field(default_factory=list)
    mode: str = COLD_START
    stale: bool = False
    served_creators: list[str] = field(default_factory=list)
    refilling: bool = False
    built_at: float = 0.0
    dropped: dict[str, str] = field(default_factory=dict)
    served_ids: set[str] = field(default_factory=set)  # shown by this process (races with refills)
    events_seen: int | None = None  # the profile's event count when the queue was ranked
    full_rank: bool = True  # the next re-rank must use every source (set by follows, new queues)
    ranked_by: str = ""  # "full" or "rescore": how the queue was last ranked (diagnostics)
    generation: int = 0  # bumped by each of the user's events; a re-rank applies only if unchanged
    rerank: asyncio.Task | None = None  # the background re-rank started by the user's events
    rerank_generation: int = -1  # the generation that re-rank was started for
    viewer: User | None = None
    region: str | None = None
    serving: int = 0  # pages of this user picking from the queue right now
    pending: list = field(default_factory=list)  # background results waiting for them to finish
    seen: SeenImpressions = field(default_factory=SeenImpressions)
    used_at: float = 0.0  # time.monotonic() of the user's latest page
    memo: dict = field(default_factory=dict)  # the sources' scratch space (SourceContext.memo)
    interests: tuple[str, ...] = ()  # the viewer's chosen topics the queue was ranked with




async def _let_others_run() -> None:
    """A yield point between the stages of a ranking (candidates merged, counters, collaborative
    scores, features + ranker, ranked list, diversity). A ranking is 30-40 ms of CPU at 300k
    videos with no await between its stages; run in the background (an event's re-rank, a
    top-up) it held the event loop that whole time, so a page of another user whose database
    answer arrived meanwhile waited behind it. Yielding lets such a page take its next step
    between two stages (each a few ms), at ~20 us per yield; in the background it also waits
    while a page is in flight (sources.yield_to_pages)."""
    await yield_to_pages()


def _apply_when_idle(queue: UserQueue, apply) -> None:
    """Apply a background ranking's result to the queue now, or, while a page of this user is
    picking from it (awaiting the database), right after that page: swapping the queue under a
    page would let it serve an item twice or judge "nothing placeable" on the wrong list."""
    if queue.serving:
        queue.pending.append(apply)
    else:
        apply()


class ForYouEngine:
    def __init__(self, settings: Settings, blob_store) -> None:
        self.settings = settings
        self.store: FeatureStore = feature_store(settings)
        self.catalog = CatalogCache()
        self.sources = build_sources(settings)
        self.queues: OrderedDict[str, UserQueue] = OrderedDict()
        self._lock = threading.Lock()
        self._registry = None
        self._blob_store = blob_store
        self._model_failures: dict[str, tuple[float, str]] = {}
        self._frozen_models: dict[str, object] = {}  # per kind: the model last moved out of GC's reach
        # Per kind: the version last loaded (None: none published, the heuristic ranker / no
        # collaborative source); absent while unavailable. Shown by ?explain=1.
        self.served_versions: dict[str, str | None] = {}
        self._content: tuple[int, object] | None = None
        self._content_building = False
        self._text_vectors = TextVectorCache()  # the content index's, kept from one build to the next
        # Anonymous viewers share one ranked list per region, rebuilt every ANON_TTL_S; the
        # cursor names the list its first page came from (kept a while longer), so paging on
        # never skips or repeats an item when a newer list replaces it.
        self._anon: dict[str, tuple[float, int, Catalog]] = {}
        self._anon_lists: OrderedDict[int, list[Ranked]] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()
        self._db = None  # the deployment's Database, known from the first page
        self.impressions = ImpressionLog()
        feed_events.add_listener(settings, self.on_event)

    # -- events -------------------------------------------------------------------------------

    def on_event(self, event: feed_events.FeedEvent) -> None:
        """The user's own event: their queue is stale (the next page refills it)."""
        if not event.user_id:
            return
        with self._lock:
            queue = self.queues.get(event.user_id)
            if queue is None:
                return
            queue.stale = True
            queue.generation += 1
            if event.kind in FULL_RANK_EVENTS:
                queue.full_rank = True
            if event.kind == "not_interested" and event.video_id:
                queue.items = [item for item in queue.items if item.video_id != event.video_id]
        self._rerank_soon(queue)

    def _rerank_soon(self, queue: UserQueue) -> None:
        """Re-rank the user's queue now, in the background: the user is still watching, so their
        next page finds it ready instead of ranking on the request path."""
        if queue.viewer is None or self._db is None:
            return
        if queue.rerank is not None and not queue.rerank.done():
            return  # when it finishes it sees the newer generation and starts over
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on an event loop (a worker thread): the next page refills
        queue.rerank_generation = queue.generation
        queue.rerank = loop.create_task(self._rerank(queue))
        self._tasks.add(queue.rerank)
        queue.rerank.add_done_callback(self._tasks.discard)

    async def _rerank(self, queue: UserQueue) -> None:
        in_background.set(True)  # this task's context only: its ranking steps aside for pages
        generation = queue.generation
        try:
            async with self._read_session(self._db) as session:
                items, mode, dropped, full = await self._rank_queue(session, self._db, queue.viewer, queue,
                                                                    queue.region)
                events_seen = self._event_count(queue.viewer.id)
        except Exception:  # noqa: BLE001 - the next page refills synchronously
            log.warning("background For You re-rank failed", exc_info=True)
            return

        def apply() -> None:
            if queue.generation == generation:
                queue.items = [item for item in items if item.video_id not in queue.served_ids]
                queue.mode, queue.dropped, queue.events_seen = mode, dropped, events_seen
                queue.stale = False
                queue.ranked_by = "full" if full else "rescore"
                if full:
                    queue.full_rank = False
                queue.built_at = time.time()
            elif queue.stale:
                # Events arrived meanwhile: rank again with them (once this task has finished).
                asyncio.get_running_loop().call_soon(self._rerank_soon, queue)

        _apply_when_idle(queue, apply)

    @staticmethod
    def _read_session(db):
        """A read-only session for background ranking, from the deployment's pooled read engine
        (on SQLite no BEGIN, so ranking's reads never hold the write lock that requests'
        BEGIN IMMEDIATE waits for). Pooled: a connection per ranking cost an aiosqlite thread
        start, a file open and the PRAGMAs, about a tenth of a top-up's CPU."""
        return db.read()

    def close(self) -> None:
        feed_events.remove_listener(self.settings, self.on_event)

    # -- models ---------------------------------------------------------------------------------

    def registry(self):
        if self._registry is None and self._blob_store is not None:
            from clipfeed.feed.recsys.registry import ModelRegistry

            self._registry = ModelRegistry(self._blob_store, prefix=self.settings.feed_model_prefix)
        return self._registry

    async def model(self, kind: str):
        """The served model of a kind, None when none was published; raises ModelUnavailable
        (remembered for MODEL_RETRY_S, so a broken file is not re-read per request)."""
        from clipfeed.feed.recsys.registry import ModelUnavailable

        failed = self._model_failures.get(kind)
        if failed is not None and time.monotonic() - failed[0] < MODEL_RETRY_S:
            raise ModelUnavailable(failed[1])
        registry = self.registry()
        if registry is None:
            self.served_versions[kind] = None
            return None
        try:
            current = await registry.current(kind)
        except ModelUnavailable as exc:
            self._model_failures[kind] = (time.monotonic(), str(exc))
            self.served_versions.pop(kind, None)
            log.error("For You: %s model unavailable, serving the fallback feed: %s", kind, exc)
            raise
        self._model_failures.pop(kind, None)
        self.served_versions[kind] = current[0] if current is not None else None
        if current is None:
            return None
        if self._frozen_models.get(kind) is not current[1]:
            # A model loaded since the last freeze (the collaborative one: ids list and id -> row
            # dict over every item, ~400k references at 300k videos): out of the collector's walk.
            self._frozen_models[kind] = current[1]
            _keep_out_of_collections(self.settings)
        return current[1]

    async def model_versions(self) -> dict[str, str | None]:
        """The served version of each model kind (None: none published); an unavailable one is left out."""
        from clipfeed.feed.recsys.registry import ModelUnavailable

        for kind in ("ranker", "collab"):
            try:
                await self.model(kind)
            except ModelUnavailable:
                pass
        return dict(self.served_versions)

    async def content_index(self, session: AsyncSession, db, catalog: Catalog):
        """The ContentIndex of the catalog's newest videos (content_catalog.py): read and built
        on the spot for a small catalog, else in the background (None meanwhile)."""
        if self._content is not None and self._content[0] == id(catalog):
            return self._content[1]
        if len(catalog) == 0:
            return None
        limit = self.settings.feed_content_index_max
        if len(catalog) <= 2000:
            inputs = await read_served_content(session, catalog, limit)
            self._content = (id(catalog), build_content(*inputs, self._text_vectors))
            return self._content[1]
        if not self._content_building:
            self._content_building = True

            async def build():
                try:
                    async with self._read_session(db) as own:
                        inputs = await read_served_content(own, catalog, limit)
                    index = await asyncio.to_thread(build_content, *inputs, self._text_vectors)
                    self._content = (id(catalog), index)
                    _keep_out_of_collections(self.settings)  # its id list and id -> row dict, as the catalog's
                except Exception:  # noqa: BLE001
                    log.warning("content index build failed", exc_info=True)
                finally:
                    self._content_building = False

            self._spawn(build())
        return self._content[1] if self._content is not None else None

    async def settle(self) -> None:
        """Wait until the background work in flight (index builds, refills, re-ranks) is done."""
        while True:
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await asyncio.sleep(0)  # a finished re-rank may have scheduled another (call_soon)
            if not self._tasks:
                return

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- refill ---------------------------------------------------------------------------------

    async def _viewer_facts(self, session: AsyncSession, user_id: str,
                            seen: SeenImpressions | None) -> tuple[frozenset, frozenset, frozenset]:
        params = {"user_id": user_id}
        follows = frozenset((await session.scalars(_FOLLOWS, params)).all())
        blocked = frozenset(b if a == user_id else a for a, b in (await session.execute(_BLOCKS, params)).all())
        if seen is None or seen.newest is None or len(seen.ids) > 2 * SEEN_LOOKBACK:
            # First ranking of this queue (or the set outgrew its bound): the newest SEEN_LOOKBACK.
            seen_ids = set((await session.scalars(_SEEN, params)).all())
            if seen is not None:
                # The newest time on its own: reading every row's time cost more than the ids.
                seen.ids, seen.newest = seen_ids, await session.scalar(_NEWEST_SEEN, params)
        else:
            seen.add((await session.execute(_SEEN_SINCE, {**params, "since": seen.newest - SEEN_OVERLAP})).all())
            seen_ids = seen.ids
        marked = (await session.scalars(_MARKED, params)).all()
        return follows, blocked, frozenset(seen_ids) | frozenset(marked)

    async def rank(self, session: AsyncSession, db, viewer: User | None, *, region: str,
                   previous_creators: list[str] = (), queued: list[Ranked] | None = None,
                   also_exclude: frozenset[str] = frozenset(),
                   seen: SeenImpressions | None = None,
                   memo: dict | None = None) -> tuple[list[Ranked], str, dict[str, str]]:
        """Build a fresh ranked list for the viewer: (items, mode, dropped sources).

        With `queued` (the user's queue, after one of their own events) the candidates are those
        items plus the affinity source's, not every source: an event moves the user's features
        and affinities, not the collaborative, content, trending or exploration pools, so
        re-scoring what is queued and adding what the new affinities bring reflects it at a
        fraction of a full refill's cost. A mode other than personalized ranks in full.
        `also_exclude`: ids not to propose (a top-up leaves out what is still queued). `seen`: the
        queue's impressions read by earlier rankings (this one reads only the newer ones). `memo`:
        the queue's scratch space for the sources (e.g. the rows of its excluded ids in an index)."""
        from clipfeed.feed.recsys.features import build_features
        from clipfeed.feed.recsys.ranker import HeuristicRanker, weighted_score
        from clipfeed.feed.recsys.registry import ModelUnavailable

        settings = self.settings
        now = time.time()
        catalog = await self.catalog.get(settings, db, session)
        user_id = viewer.id if viewer is not None else None
        follows = blocked = exclude = frozenset()
        profile = None
        if user_id:
            follows, blocked, exclude = await self._viewer_facts(session, user_id, seen)
            exclude |= also_exclude
            try:
                profile = await load_user(session, self.store, user_id)
            except Exception as exc:  # noqa: BLE001 - Redis down: serve without the profile
                log.error("For You: feature store unavailable: %s", exc)
                profile = None
        dropped: dict[str, str] = {}
        if user_id and profile is None:
            dropped["feature_store"] = "unavailable"
        ranker = collab = None
        mode = PERSONALIZED
        try:
            ranker = await self.model("ranker")
            collab = await self.model("collab")
        except ModelUnavailable as exc:
            mode = FALLBACK
            dropped["models"] = str(exc)
            ranker = collab = None
        if "feature_store" in dropped:
            mode = FALLBACK
        if mode != FALLBACK and (profile is None or profile.event_count < settings.feed_cold_start_events):
            mode = COLD_START
        rescore = queued is not None and mode == PERSONALIZED
        state = profile.to_state(follows) if profile is not None else None
        # A newcomer's chosen topics count as a first, weak hashtag affinity — for the sources
        # and the ranker alike, as if they had watched a little of each — until their own
        # swipes make them personalized (cold start only: a trained ranker saw no interests).
        interests = ({tag: INTEREST_AFFINITY for tag in viewer.interests or ()}
                     if mode == COLD_START and viewer is not None else {})
        if interests:
            state = state or UserState(user_id=user_id or "")
            state.hashtag_affinity = {**interests, **state.hashtag_affinity}
        ctx = SourceContext(
            user_id=user_id, catalog=catalog, settings=settings, now=now, k=settings.feed_queue_size,
            follows=follows, blocked=blocked, exclude=exclude,
            creator_affinity=state.creator_affinity if state else {},
            hashtag_affinity=state.hashtag_affinity if state else {},
            sound_affinity=state.sound_affinity if state else {},
            recent=state.recent if state else [],
            trending=[] if rescore else await trending.ranked_items(session, settings, "video", region),
            collab=collab,
            content=await self.content_index(session, db, catalog) if mode == PERSONALIZED and not rescore else None,
            memo=memo if memo is not None else {})
        names = ("affinity",) if rescore else MODES_BY_SOURCES[mode]
        if interests and "affinity" not in names:
            names += ("affinity",)
        wanted = [self.sources[name] for name in names]
        results, problems = await run_sources(wanted, ctx)
        dropped.update(problems)

        merged: dict[str, dict[str, float]] = {}
        if rescore:
            # The queued items keep the source scores they were ranked with (still allowed:
            # the viewer's facts were just read again, e.g. a new "not interested").
            for item in queued:
                if ctx.allowed(item.video_id):
                    merged[item.video_id] = dict(item.detail[1]) if item.detail else dict.fromkeys(item.sources, 0.0)
        for name, candidates in results.items():
            for candidate in candidates:
                merged.setdefault(candidate.video_id, {})[candidate.source] = candidate.score
        if not merged:
            return [], mode, dropped
        await _let_others_run()
        ids = list(merged)
        metas = [catalog.videos[vid] for vid in ids]
        creator_ids = list({m.creator_id for m in metas})
        try:
            counters = self.store.videos(ids)
            live_creators = self.store.creators(creator_ids)
        except Exception as exc:  # noqa: BLE001 - rank on the catalog's counters alone
            log.error("For You: feature store unavailable: %s", exc)
            counters, live_creators = {}, {}
        creators = creator_states(catalog, live_creators, creator_ids)
        # The content similarity feature, as in training: the candidates' vectors against the
        # profile of what the viewer recently liked or completed (it was always 0 when served).
        content = await self.content_index(session, db, catalog)
        vectors = content.vector if content is not None else (lambda _vid: None)
        videos = [video_state(meta, counters.get(meta.video_id) or _NO_COUNTERS, now, vectors(meta.video_id))
                  for meta in metas]
        await _let_others_run()
        user_state = state or UserState(user_id=user_id or "")
        if content is not None:
            user_state.content_vector = ctx.content_profile(content)
        collab_scores = short_scores = None
        if collab is not None:
            collab_scores = collab.scores(collab.user_vector(user_id) if user_id else None, ids)
            short = ctx.short_term_vector()
            short_scores = collab.scores(short, ids) if short is not None else None
            user_state.short_term_vector = short
            await _let_others_run()
        X = build_features(user_state, videos, creators, collab_scores=collab_scores,
                           source_ids=[set(merged[vid]) for vid in ids], now=now, short_term_scores=short_scores)
        heads = (ranker or HeuristicRanker()).predict(X)
        scores = weighted_score(heads, settings.feed_score_weights)
        await _let_others_run()

        head_names = list(heads)
        head_rows = np.column_stack([np.asarray(heads[h], np.float64) for h in head_names]).tolist()
        score_list = np.asarray(scores, np.float64).tolist()
        order = sorted(range(len(ids)), key=lambda i: (-score_list[i], ids[i]))
        # Only the best queue_size + LOOKAHEAD can reach the queue (diversify looks no further
        # down), plus the exploration items the reserved share may pull up: the other ~2/3 of
        # the candidates need no Ranked object (the output is the same).
        keep = order[:settings.feed_queue_size + LOOKAHEAD]
        if settings.feed_exploration_share > 0:
            quota = math.ceil(settings.feed_exploration_share * settings.feed_queue_size)
            keep += [i for i in order[len(keep):] if "exploration" in merged[ids[i]]][:quota]
        ranked = out_of_collections([
            Ranked(ids[i], metas[i].creator_id, score_list[i], metas[i].hashtags, tuple(sorted(merged[ids[i]])),
                   detail=(tuple(zip(head_names, head_rows[i])), tuple(merged[ids[i]].items())))
            for i in keep])
        await _let_others_run()
        ranked = _reserve_exploration(ranked, settings.feed_exploration_share, settings.feed_queue_size)
        return diversify(ranked, previous_creators=list(previous_creators), limit=settings.feed_queue_size), mode, dropped

    async def _rank_queue(self, session: AsyncSession, db, viewer: User, queue: UserQueue,
                          region: str) -> tuple[list[Ranked], str, dict[str, str], bool]:
        """Rank the user's queue again: a re-score of the queued items when they are enough and
        nothing but the user's features changed, else in full. The last item says which."""
        queued = [item for item in queue.items if item.video_id not in queue.served_ids]
        full = (queue.full_rank or queue.mode != PERSONALIZED or len(queued) < self.settings.feed_queue_low_water)
        items, mode, dropped = await self.rank(session, db, viewer, region=region,
                                               previous_creators=queue.served_creators,
                                               queued=None if full else queued, seen=queue.seen, memo=queue.memo)
        return items, mode, dropped, full or mode != PERSONALIZED  # rank() re-scores personalized only

    async def refill(self, session: AsyncSession, db, viewer: User, queue: UserQueue, region: str,
                     *, full: bool = False) -> None:
        if full:
            queue.full_rank = True
        items, mode, dropped, ranked_in_full = await self._rank_queue(session, db, viewer, queue, region)
        if ranked_in_full:
            queue.full_rank = False
        queue.ranked_by = "full" if ranked_in_full else "rescore"
        queue.items = [item for item in items if item.video_id not in queue.served_ids]
        queue.mode, queue.dropped = mode, dropped
        queue.events_seen = self._event_count(viewer.id)
        queue.stale = False
        queue.built_at = time.time()

    async def _background_refill(self, db, viewer: User, queue: UserQueue, region: str) -> None:
        in_background.set(True)  # this task's context only: its ranking steps aside for pages
        try:
            # A top-up: what is still queued stays (it is the best of the last ranking) and is
            # left out of this one, so one ranking adds a whole queue of new items (was ~70 of
            # 100, the rest being the queued ones ranked again), and the rules continue from the
            # queue's tail.
            queued = list(queue.items)
            async with self._read_session(db) as session:
                items, mode, dropped = await self.rank(
                    session, db, viewer, region=region,
                    previous_creators=list(queue.served_creators) + [item.creator_id for item in queued],
                    also_exclude=frozenset(item.video_id for item in queued) | frozenset(queue.served_ids),
                    seen=queue.seen, memo=queue.memo)

            def apply() -> None:
                if not queue.stale:  # an event in between wins: the next page refills anyway
                    skip = {item.video_id for item in queue.items} | queue.served_ids
                    queue.items = queue.items + [i for i in items if i.video_id not in skip]
                    queue.mode, queue.dropped = mode, dropped

            _apply_when_idle(queue, apply)
        except Exception:  # noqa: BLE001 - the next page refills synchronously
            log.warning("background For You refill failed", exc_info=True)
        finally:
            queue.refilling = False

    def _event_count(self, user_id: str) -> int | None:
        try:
            return self.store.event_count(user_id)
        except Exception:  # noqa: BLE001 - treated as "unknown"; the profile load logs outages
            return None

    def _queue(self, user_id: str) -> UserQueue:
        now = time.monotonic()
        with self._lock:
            queue = self.queues.get(user_id)
            if queue is None:
                queue = self.queues[user_id] = UserQueue(stale=True)
            else:
                self.queues.move_to_end(user_id)
            queue.used_at = now
            self._drop_idle_queues(now)
            return queue

    def _drop_idle_queues(self, now: float) -> None:
        """Drop, least recently paged first, the queues of users who sent no page for
        feed_queue_idle_s, and any beyond MAX_QUEUES. Every queued item is an object each full
        garbage collection walks (~170 ms per million, i.e. per ~10k users' queues): held for
        every user a process ever served, the pauses would grow with the audience, not with
        the users on the app now. A returning user's first page ranks afresh, as it should after
        that long (new uploads, new trends)."""
        idle = self.settings.feed_queue_idle_s
        while self.queues:
            oldest = next(iter(self.queues.values()))
            if len(self.queues) <= MAX_QUEUES and now - oldest.used_at <= idle:
                break
            self.queues.popitem(last=False)

    # -- pages ----------------------------------------------------------------------------------

    async def page(self, session: AsyncSession, db, viewer: User | None, *, limit: int, cursor: str | None,
                   region: str | None) -> dict:
        settings = self.settings
        viewer_id = viewer.id if viewer is not None else None
        position = decode_cursor(settings, cursor, viewer_id) if cursor else {"page": 0, "offset": 0, "listing": 0}
        region_code = trending.resolve_region(region, viewer)
        if viewer is None:
            return await self._anonymous_page(session, db, limit=limit, offset=position["offset"],
                                              page_no=position["page"], listing=position["listing"],
                                              region=region_code)
        self._db = db
        queue = self._queue(viewer.id)
        queue.viewer, queue.region = viewer, region_code
        interests = tuple(viewer.interests or ())
        if interests != queue.interests:  # topics chosen (or changed) since the queue was ranked
            queue.interests, queue.stale, queue.full_rank = interests, True, True
        if self.settings.redis_url and not queue.stale and queue.events_seen != self._event_count(viewer.id):
            queue.stale = True  # the user's events were handled by another API process
        if (queue.stale and queue.rerank is not None and not queue.rerank.done()
                and queue.rerank_generation == queue.generation):
            # The re-rank started by the user's latest event is under way: its result is what
            # this page must reflect, so wait for it rather than rank a second time. (One started
            # for an older event would not reflect the latest: the page ranks itself below.)
            try:
                await asyncio.shield(queue.rerank)
            except Exception:  # noqa: BLE001 - logged by the task; refilled below
                pass
        # In flight from here (not while waiting for the re-rank above, which would then wait
        # for this page): background work steps aside until it is served.
        with page_in_flight():
            return await self._serve_page(session, db, viewer, queue, limit=limit, position=position,
                                          region_code=region_code)

    async def _serve_page(self, session: AsyncSession, db, viewer: User, queue: UserQueue, *, limit: int,
                          position: dict, region_code: str) -> dict:
        if queue.stale or not queue.items:
            await self.refill(session, db, viewer, queue, region_code)
        queue.serving += 1
        try:
            return await self._serve(session, db, viewer, queue, limit=limit, position=position,
                                     region_code=region_code)
        finally:
            queue.serving -= 1
            if not queue.serving:
                pending, queue.pending = queue.pending, []
                for apply in pending:
                    apply()

    async def _serve(self, session: AsyncSession, db, viewer: User, queue: UserQueue, *, limit: int,
                     position: dict, region_code: str) -> dict:
        settings = self.settings
        picked: list[tuple[Ranked, object]] = []
        liked: set[str] = set()
        picked_ids: set[str] = set()
        refilled = False
        while len(picked) < limit:
            if not queue.items:
                if refilled:
                    break
                await self.refill(session, db, viewer, queue, region_code, full=True)
                refilled = True
                if not queue.items:
                    break
            chunk = queue.items[:2 * limit]
            found = await visible_rows(session, viewer.id, [item.video_id for item in chunk])
            history = list(queue.served_creators) + [item.creator_id for item, _ in picked]
            taken = set()
            for item in chunk:
                if len(picked) >= limit:
                    break
                row = found.get(item.video_id)
                if row is None or item.video_id in picked_ids or item.video_id in queue.served_ids:
                    # Hidden since it was ranked, or already served: a background re-rank may
                    # have swapped the queue in while this page awaited the database.
                    taken.add(item.video_id)
                    continue
                if not fits_creator_rules(item, history):
                    continue  # stays queued for a later slot
                video, liked_it = row
                if liked_it:
                    liked.add(item.video_id)
                picked.append((item, video))
                picked_ids.add(item.video_id)
                history.append(item.creator_id)
                taken.add(item.video_id)
            before = len(queue.items)
            queue.items = [item for item in queue.items if item.video_id not in taken]
            if len(queue.items) == before:  # nothing placeable in the queue: rank afresh
                queue.items = []
        if picked:
            # The impression log is the arbiter of "seen": a video another request (a background
            # refill racing this page, another server) already showed is dropped here.
            # In a write transaction of its own (shared with the pages served at the same moment):
            # `session` only reads (no write lock held while the page ranked).
            fresh = await self.impressions.record(db, viewer.id, [item.video_id for item, _ in picked])
            if len(fresh) < len(picked):
                history = list(queue.served_creators)
                kept = []
                for item, video in picked:
                    if item.video_id in fresh and fits_creator_rules(item, history):
                        kept.append((item, video))
                        history.append(item.creator_id)
                picked = kept
            try:
                self.store.add_impressions([item.video_id for item, _ in picked])
            except Exception as exc:  # noqa: BLE001 - a lost counter tick, never a failed page
                log.warning("For You: impressions not counted: %s", exc)
        queue.served_creators = (queue.served_creators + [item.creator_id for item, _ in picked])[-20:]
        if len(queue.served_ids) > SEEN_LOOKBACK:
            queue.served_ids.clear()  # bounded; the impression log stays the arbiter
        queue.served_ids.update(item.video_id for item, _ in picked)
        if len(queue.items) < settings.feed_queue_low_water and not queue.refilling and not queue.stale:
            queue.refilling = True
            self._spawn(self._background_refill(db, viewer, queue, region_code))
        next_cursor = encode_cursor(settings, viewer.id, position["page"] + 1) if picked else None
        return {"items": picked, "mode": queue.mode, "next_cursor": next_cursor, "dropped": dict(queue.dropped),
                "liked": liked}

    async def _anonymous_listing(self, session: AsyncSession, db, *, region: str, first_page: bool,
                                 listing: int) -> tuple[int, list[Ranked]]:
        """(listing id, ranked items): a continuation page reads its first page's list while this
        process still holds it; a first page takes the region's current list, rebuilt when old."""
        if not first_page and listing in self._anon_lists:
            return listing, self._anon_lists[listing]
        current = self._anon.get(region)
        # Rebuilt when old, and with every new catalog snapshot (new uploads show up as soon as
        # the catalog has them: signed-in newcomers are served from this list too).
        catalog = await self.catalog.get(self.settings, db, session)
        if (current is None or current[1] not in self._anon_lists or settings_refresh_always(self.settings)
                or time.monotonic() - current[0] > ANON_TTL_S or current[2] is not catalog):
            items, _mode, _dropped = await self.rank(session, db, None, region=region)
            listing = time.time_ns()
            self._anon[region] = (time.monotonic(), listing, catalog)
            self._anon_lists[listing] = items
            while len(self._anon_lists) > ANON_LISTINGS_KEPT:
                self._anon_lists.popitem(last=False)
            return listing, items
        return current[1], self._anon_lists[current[1]]

    async def _anonymous_page(self, session: AsyncSession, db, *, limit: int, offset: int, page_no: int,
                              listing: int, region: str) -> dict:
        listing, items = await self._anonymous_listing(session, db, region=region, first_page=page_no == 0,
                                                       listing=listing)
        picked = []
        position = offset
        while len(picked) < limit and position < len(items):
            chunk = items[position:position + 2 * limit]
            found = await visible_rows(session, None, [item.video_id for item in chunk])
            for item in chunk:
                position += 1
                video = found.get(item.video_id, (None,))[0]
                if video is not None:
                    picked.append((item, video))
                    if len(picked) == limit:
                        break
        next_cursor = (encode_cursor(self.settings, None, page_no + 1, position, listing)
                       if position < len(items) else None)
        return {"items": picked, "mode": COLD_START, "next_cursor": next_cursor, "dropped": {}, "liked": set()}


def settings_refresh_always(settings: Settings) -> bool:
    return settings.feed_catalog_refresh_s <= 0


def _reserve_exploration(ranked: list[Ranked], share: float, size: int) -> list[Ranked]:
    """Guarantee exploration candidates about `share` of the first `size` slots, evenly spread."""
    if share <= 0:
        return ranked
    explore = [r for r in ranked if "exploration" in r.sources]
    quota = min(len(explore), math.ceil(share * min(size, len(ranked))))
    if quota == 0:
        return ranked
    reserved = explore[:quota]
    reserved_ids = {r.video_id for r in reserved}
    rest = [r for r in ranked if r.video_id not in reserved_ids]
    step = max(1, int(round(1 / share)))
    out: list[Ranked] = []
    for item in rest:
        if reserved and len(out) % step == step - 1:
            out.append(reserved.pop(0))
        out.append(item)
    return out + reserved


_engines: dict[str, ForYouEngine] = {}
_engines_lock = threading.Lock()


def engine_for(settings: Settings, blob_store) -> ForYouEngine:
    key = deployment_key(settings)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = ForYouEngine(settings, blob_store)
        return engine


async def settle(settings: Settings) -> None:
    """The deployment's engine with no background work in flight (benchmarks start timing here)."""
    engine = _engines.get(deployment_key(settings))
    if engine is not None:
        await engine.settle()


def drop_engine(settings: Settings) -> None:
    with _engines_lock:
        engine = _engines.pop(deployment_key(settings), None)
    if engine is not None:
        engine.close()


# ---------------------------------------------------------------------------------------------
# Not interested
# ---------------------------------------------------------------------------------------------

async def not_interested(session: AsyncSession, video_id: str, user: User) -> dict:
    from clipfeed.social.interactions import insert_ignore, record_event

    video = await media.get_visible(session, video_id, user)
    inserted = await session.scalar(insert_ignore(session, NotInterested).values(
        user_id=user.id, video_id=video.id, creator_id=video.owner_id).returning(NotInterested.video_id))
    if inserted is not None:
        record_event(session, "not_interested", video, user)
    return {"video_id": video.id, "not_interested": True}


def explain_item(item: Ranked) -> dict:
    return {"sources": list(item.sources), "score": round(item.score, 6), "parts": item.explained_parts()}


