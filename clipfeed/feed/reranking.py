"""Re-ranking: turn a scored candidate list into a feed order people want to swipe through.

Hard rules (never broken): the same creator never twice in a row, and at most
``MAX_PER_WINDOW`` videos of one creator in any ``WINDOW`` consecutive items — across page
boundaries too, since the caller passes the creators of what was served last. Soft rule: topic
spread — an item whose hashtags already appear ``MAX_TAG_PER_WINDOW`` times in the window is
passed over while a comparable item without that problem exists.

What a viewer may not see (seen before, marked not interested, hidden, blocked, not ready,
rejected) is removed before and after ranking: ``SourceContext.allowed`` on the catalog's facts,
then ``visible_ids`` against the database at serving time (the rules of
``clipfeed.media.service.listed_filter``).
"""

from __future__ import annotations

import ctypes
from collections import Counter, deque
from typing import NamedTuple

from sqlalchemy import String, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.media import service as media
from clipfeed.media.models import Video

WINDOW = 10
MAX_PER_WINDOW = 2
MAX_TAG_PER_WINDOW = 5  # a topic may fill at most half the window: spread without muting a taste
LOOKAHEAD = 60  # how far down the list a slot looks for an item that fits the rules


class Ranked(NamedTuple):
    # A tuple, so it can leave the collector's walk (``out_of_collections``): a process holds
    # ~100 per active user in their queues, and at 1M videos a full collection that walked
    # them took 34 ms beside a page (a slotted dataclass stays tracked whatever it holds).
    video_id: str
    creator_id: str
    score: float
    hashtags: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    # Raw (head, value) and (source, score) pairs, formatted only for an ?explain=1 page
    # (building ~100 dicts per refill cost ~5 ms).
    detail: tuple = ()

    def explained_parts(self) -> dict[str, float]:
        if not self.detail:
            return {}
        heads, sources = self.detail
        return {**{f"head_{h}": round(v, 5) for h, v in heads}, **{f"source_{s}": round(v, 5) for s, v in sources}}


def _gc_untrack():
    try:
        untrack = ctypes.pythonapi.PyObject_GC_UnTrack
    except AttributeError:  # an interpreter without the C API (PyPy): leave them tracked
        return None
    untrack.argtypes = [ctypes.py_object]
    untrack.restype = None
    return untrack


_untrack = _gc_untrack()


def out_of_collections(items: list[Ranked]) -> list[Ranked]:
    """Take freshly built ``Ranked`` items out of the cyclic collector's walk; returns ``items``.

    Safe because a ``Ranked`` holds only strings, floats and tuples of those: it can never be
    part of a reference cycle, so the collector has nothing to find in it, and reference
    counting still frees it (CPython itself untracks such tuples, but only lazily, when one
    survives a collection - a queue's items would be walked by every young collection until
    then). Costs ~0.2 us per item.
    """
    if _untrack is not None:
        for item in items:
            _untrack(item)
    return items


def fits_creator_rules(item: Ranked, history: list[Ranked | str]) -> bool:
    creators = [h if isinstance(h, str) else h.creator_id for h in history[-(WINDOW - 1):]]
    if creators and creators[-1] == item.creator_id:
        return False
    return creators.count(item.creator_id) < MAX_PER_WINDOW


class _Window:
    """Creators and hashtags of the last WINDOW - 1 placed items, with counts (O(1) checks)."""

    def __init__(self, history: list[Ranked | str]):
        self.items: deque[tuple[str, tuple[str, ...]]] = deque()
        self.creators: Counter[str] = Counter()
        self.tags: Counter[str] = Counter()
        # The tags at their cap: a slot checks up to LOOKAHEAD items against it, one set
        # operation each (a Counter lookup per tag per item was ~40 % of diversify).
        self.saturated: set[str] = set()
        for entry in history[-(WINDOW - 1):]:
            self.push(entry if isinstance(entry, str) else entry.creator_id,
                      () if isinstance(entry, str) else entry.hashtags)

    def push(self, creator: str, hashtags: tuple[str, ...]) -> None:
        self.items.append((creator, hashtags))
        self.creators[creator] += 1
        for tag in hashtags:
            self.tags[tag] += 1
            if self.tags[tag] >= MAX_TAG_PER_WINDOW:
                self.saturated.add(tag)
        if len(self.items) > WINDOW - 1:
            old_creator, old_tags = self.items.popleft()
            self.creators[old_creator] -= 1
            for tag in old_tags:
                self.tags[tag] -= 1
                if self.tags[tag] < MAX_TAG_PER_WINDOW:
                    self.saturated.discard(tag)

    def fits(self, item: Ranked) -> bool:
        if self.items and self.items[-1][0] == item.creator_id:
            return False
        return self.creators[item.creator_id] < MAX_PER_WINDOW

    def spread_ok(self, item: Ranked) -> bool:
        return not self.saturated or self.saturated.isdisjoint(item.hashtags)


def diversify(items: list[Ranked], *, previous_creators: list[str] = (), limit: int | None = None) -> list[Ranked]:
    """Reorder best-first `items` under the rules (at most `limit` of them). Whatever the rules
    allow is placed (see _dominant_creator); items they cannot place at all are dropped (the next
    refill brings other creators)."""
    remaining = list(items)
    window = _Window(list(previous_creators))
    out: list[Ranked] = []
    limit = len(items) if limit is None else limit
    while remaining and len(out) < limit:
        chosen = fallback = None
        must_lead = _dominant_creator(remaining) if len(remaining) <= limit - len(out) else None
        if must_lead is not None and not window.fits(Ranked("", must_lead, 0.0)):
            must_lead = None  # cannot come now anyway: place what can
        for index, item in enumerate(remaining[:LOOKAHEAD]):
            if not window.fits(item) or (must_lead is not None and item.creator_id != must_lead):
                continue
            if window.spread_ok(item):
                chosen = index
                break
            if fallback is None:
                fallback = index
        if chosen is None:
            chosen = fallback
        if chosen is None:
            break
        item = remaining.pop(chosen)
        out.append(item)
        window.push(item.creator_id, item.hashtags)
    return out


def _dominant_creator(remaining: list[Ranked]) -> str | None:
    """The creator who must come next for everything left to be placed at all: when one creator
    holds more than half of the remaining items, they can only all be served without two in a
    row if theirs take every other slot starting now (greedy by score alone would strand the
    last ones). Checked only once the whole rest is going to be placed (small catalogs, the
    tail of a list)."""
    creator, count = Counter(item.creator_id for item in remaining).most_common(1)[0]
    return creator if 2 * count > len(remaining) else None


def respects_creator_rules(creators: list[str]) -> bool:
    """The hard rules over a served sequence (used by tests and assertions)."""
    for i, creator in enumerate(creators):
        if i and creators[i - 1] == creator:
            return False
        if creators[max(0, i - WINDOW + 1):i + 1].count(creator) > MAX_PER_WINDOW:
            return False
    return True


async def visible_ids(session: AsyncSession, viewer_id: str | None, video_ids: list[str]) -> dict[str, Video]:
    """The videos among `video_ids` that the viewer may see in a list right now (ready, public or
    followers-only for followers, no block either way), one query."""
    return {vid: video for vid, (video, _liked) in (await visible_rows(session, viewer_id, video_ids)).items()}


async def visible_rows(session: AsyncSession, viewer_id: str | None, video_ids: list[str]) -> dict[str, tuple[Video, bool]]:
    """visible_ids plus the viewer's like of each video, in the same single query (a page then
    needs no second round trip for the `liked` flags). The videos are plain rows with the
    Video columns as attributes (what `video_out` reads): a page only presents them, and
    skipping the ORM's identity map and instance state saves ~1 ms per page."""
    if not video_ids:
        return {}
    # On the session's connection (Core), not session.execute: the statement selects columns, and
    # the ORM's execution context around it cost ~0.2 ms of its ~0.65.
    connection = await session.connection()
    if viewer_id is None:
        rows = (await connection.execute(_visible_statement(False), {"video_ids": video_ids})).all()
        return {row.id: (row, False) for row in rows}
    rows = (await connection.execute(_visible_statement(True), {"video_ids": video_ids, "viewer_id": viewer_id})).all()
    return {row.id: (row, bool(row.viewer_likes)) for row in rows}


_statements: dict[bool, object] = {}


def _visible_statement(signed_in: bool):
    """The visibility query, built once with bound parameters for the viewer and the ids. Every
    page runs it: rebuilding the expression (listed_filter's EXISTS clauses) and walking it for
    its cache key cost about as much as the query itself; a reused statement memoizes its key."""
    statement = _statements.get(signed_in)
    if statement is None:
        ids = bindparam("video_ids", expanding=True)
        columns = list(Video.__table__.c)
        if not signed_in:
            statement = select(*columns).where(Video.id.in_(ids), media.listed_filter(None))
        else:
            from clipfeed.social.models import Like

            viewer = bindparam("viewer_id", type_=String)
            statement = (select(*columns, Like.video_id.is_not(None).label("viewer_likes"))
                         .outerjoin(Like, and_(Like.video_id == Video.id, Like.user_id == viewer))
                         .where(Video.id.in_(ids), media.listed_filter(viewer)))
        _statements[signed_in] = statement
    return statement
