"""Search over videos (caption, hashtags, sound title, creator handle) and users (handle, display
name), one API over SQLite FTS5 and PostgreSQL full-text (see backends.py).

- Every query word is a prefix ("danc" finds "dancing"). A word of 4+ letters that starts no
  indexed word is replaced by the indexed words within 1 edit (4-5 letters) or 2 edits (longer)
  of it, so "pastta" finds "pasta". Words are ANDed; when that finds nothing, they are ORed.
- Ranking blends text relevance (normalized to the best match) with popularity, on a log scale:
  score = relevance / best + 0.35 * log(1 + engagement) / log(1 + 10^6), engagement being
  views + 3 likes + 4 comments + 5 shares (followers for users). Equally relevant results are
  thus ordered by popularity, and a much more popular result may pass a slightly better match.
- Only ready, public videos are indexed; for a signed-in viewer, creators blocked either way are
  left out (and such users in user search).
- Relevance-ranked results are paged with an opaque offset cursor into the ranked candidate pool
  (at most 300 best text matches, or the newest 1,000 for very broad queries): pages may shift
  if the index changes between requests, which is acceptable for search results.
"""

from __future__ import annotations

import math

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.errors import ValidationFailed
from clipfeed.media.models import Video
from clipfeed.pagination import decode_offset_cursor, encode_offset_cursor
from clipfeed.search.backends import Group, SearchBackend, backend_for
from clipfeed.search.text import edit_distance, fold, max_typos, query_terms

MAX_QUERY_CHARS = 200
MAX_LIMIT = 50
POPULARITY_WEIGHT = 0.35
_POPULARITY_SCALE = math.log1p(1_000_000)
MAX_CORRECTIONS = 3


def validate_query(q: str | None) -> str:
    q = (q or "").strip()
    if not q:
        raise ValidationFailed("q must not be empty", field="q")
    if len(q) > MAX_QUERY_CHARS:
        raise ValidationFailed(f"q is longer than {MAX_QUERY_CHARS} characters", field="q")
    return q


def _popularity(engagement: int) -> float:
    return math.log1p(max(0, engagement)) / _POPULARITY_SCALE


async def _groups(backend: SearchBackend, session: AsyncSession, scope: str, terms: list[str]) -> list[Group]:
    """Each term as a prefix, or (when nothing starts with it) its closest indexed spellings."""
    groups: list[Group] = []
    for term in terms:
        edits = max_typos(term)
        if edits == 0 or await backend.has_prefix(session, scope, term):
            groups.append([(term, True)])
            continue
        candidates = await backend.typo_candidates(session, scope, term, edits)
        ranked = sorted((edit_distance(term, word, edits), order, word) for order, word in enumerate(candidates))
        fixes = [word for distance, _, word in ranked if distance <= edits][:MAX_CORRECTIONS]
        groups.append([(word, False) for word in fixes] or [(term, True)])
    return groups


def _page(ranked: list, offset: int, limit: int) -> tuple[list, str | None]:
    page = ranked[offset:offset + limit]
    next_cursor = encode_offset_cursor(offset + limit) if offset + limit < len(ranked) else None
    return page, next_cursor


async def _ranked_page(session: AsyncSession, viewer: User | None, q: str, *, scope: str, match, score_of,
                       model, id_of, limit: int, cursor: str | None) -> tuple[list, str | None]:
    """The search flow both kinds share: terms -> match all words (else any) -> blend the
    relevance with popularity -> one page of rows, in ranked order."""
    q = validate_query(q)
    offset = decode_offset_cursor(cursor)
    backend = backend_for(session)
    terms = query_terms(q, strip_accents=backend.strip_accents)
    if not terms:
        return [], None
    viewer_id = viewer.id if viewer is not None else None
    groups = await _groups(backend, session, scope, terms)
    hits = await match(backend, session, groups, any_group=False, viewer_id=viewer_id)
    if not hits and len(groups) > 1:
        hits = await match(backend, session, groups, any_group=True, viewer_id=viewer_id)
    if not hits:
        return [], None
    best = max(hit.relevance for hit in hits) or 1.0
    ranked = sorted(hits, key=lambda hit: (-score_of(hit, best, q), id_of(hit)))
    page, next_cursor = _page(ranked, offset, limit)
    if not page:
        return [], None
    ids = [id_of(hit) for hit in page]
    rows = {row.id: row for row in (await session.scalars(select(model).where(model.id.in_(ids)))).all()}
    return [rows[i] for i in ids if i in rows], next_cursor


def _video_score(hit, best: float, _q: str) -> float:
    engagement = hit.views + 3 * hit.likes + 4 * hit.comments + 5 * hit.shares
    return hit.relevance / best + POPULARITY_WEIGHT * _popularity(engagement)


def _user_score(hit, best: float, q: str) -> float:
    bonus = 0.5 if hit.handle == fold(q, strip_accents=False).lstrip("@").strip() else 0.0
    return hit.relevance / best + POPULARITY_WEIGHT * _popularity(hit.followers) + bonus


async def search_videos(session: AsyncSession, viewer: User | None, q: str, *, limit: int,
                        cursor: str | None) -> tuple[list[Video], str | None]:
    return await _ranked_page(session, viewer, q, scope="v", match=lambda b, *a, **k: b.match_videos(*a, **k),
                              score_of=_video_score, model=Video, id_of=lambda hit: hit.video_id,
                              limit=limit, cursor=cursor)


async def search_users(session: AsyncSession, viewer: User | None, q: str, *, limit: int,
                       cursor: str | None) -> tuple[list[User], str | None]:
    return await _ranked_page(session, viewer, q, scope="u", match=lambda b, *a, **k: b.match_users(*a, **k),
                              score_of=_user_score, model=User, id_of=lambda hit: hit.user_id,
                              limit=limit, cursor=cursor)


async def prune_terms(settings) -> int:
    """PostgreSQL: drop vocabulary words that no document contains any more (daily job)."""
    from sqlalchemy import text

    from clipfeed.db import Database

    db = Database(settings, pooled=False)
    removed = 0
    try:
        async with db.transaction() as session:
            for scope, table in (("v", "search_video_docs"), ("u", "search_user_docs")):
                result = await session.execute(text(
                    "DELETE FROM search_terms WHERE scope = :scope AND term NOT IN "
                    f"(SELECT word COLLATE \"C\" FROM ts_stat('SELECT document FROM {table}'))"), {"scope": scope})
                removed += result.rowcount or 0
    finally:
        await db.dispose()
    return removed
