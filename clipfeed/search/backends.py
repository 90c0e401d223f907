"""Full-text backends behind one protocol: SQLite FTS5 (embedded) and PostgreSQL tsvector +
pg_trgm (scale-out). The indexes and the triggers that keep them in step with videos, users,
hashtags and sounds are created by migration 0003s; only ready, public videos are indexed.

A backend answers three questions, the service does the rest (query parsing, typo choice,
blending with popularity, paging):

- does any indexed word start with this term?  (then the term is used as a prefix)
- which indexed words look like this term?      (typo candidates, checked by edit distance)
- which documents match these word groups, and how well?  (a bounded candidate pool)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.search.text import prefix_upper_bound

# One query term: the words it may match, each (word, as_prefix). Groups are ANDed (or ORed
# in the relaxed retry), words inside a group are ORed.
Group = list[tuple[str, bool]]

RANKED_POOL = 300      # best matches by text relevance, re-ranked with popularity
BROAD_POOL = 1000     # for very broad queries: the newest matches instead (see below)
BROAD_MATCHES = 5000   # more matches than this and ranking all of them costs too much


@dataclass
class VideoHit:
    video_id: str
    owner_id: str
    relevance: float
    views: int
    likes: int
    comments: int
    shares: int


@dataclass
class UserHit:
    user_id: str
    handle: str
    relevance: float
    followers: int


class SearchBackend(Protocol):
    strip_accents: bool

    async def has_prefix(self, session: AsyncSession, scope: str, term: str) -> bool: ...

    async def typo_candidates(self, session: AsyncSession, scope: str, term: str, max_edits: int) -> list[str]: ...

    async def match_videos(self, session: AsyncSession, groups: list[Group], *, any_group: bool,
                           viewer_id: str | None) -> list[VideoHit]: ...

    async def match_users(self, session: AsyncSession, groups: list[Group], *, any_group: bool,
                          viewer_id: str | None) -> list[UserHit]: ...


def _not_blocked(owner_col: str, viewer_id: str | None) -> str:
    if viewer_id is None:
        return ""
    return (f" AND NOT EXISTS (SELECT 1 FROM blocks b WHERE (b.blocker_id = :viewer AND b.blocked_id = {owner_col})"
            f" OR (b.blocker_id = {owner_col} AND b.blocked_id = :viewer))")


def _video_hits(rows) -> list[VideoHit]:
    return [VideoHit(r[0], r[1], float(r[2] or 0.0), int(r[3] or 0), int(r[4] or 0), int(r[5] or 0), int(r[6] or 0))
            for r in rows]


def _user_hits(rows) -> list[UserHit]:
    return [UserHit(r[0], r[1], float(r[2] or 0.0), int(r[3] or 0)) for r in rows]


# ---------------------------------------------------------------------------------------------
# SQLite FTS5
# ---------------------------------------------------------------------------------------------

class SqliteSearch:
    """FTS5 external-content tables (search_videos_fts, search_users_fts) with fts5vocab views.

    Ranking: FTS5 bm25 with column weights. bm25 is computed for every match before the top
    RANKED_POOL can be taken, so a query matching more than BROAD_MATCHES documents (a very
    common word) takes the newest BROAD_POOL matches instead: relevance barely separates
    documents that all contain the word, and popularity then orders them.

    Typos: candidates are indexed words sharing the term's first two letters, else its first
    letter (a typo in the very first letter is not corrected on SQLite; pg_trgm does that)."""

    strip_accents = True
    _fts = {"v": "search_videos_fts", "u": "search_users_fts"}
    _vocab = {"v": "search_videos_vocab", "u": "search_users_vocab"}

    async def has_prefix(self, session: AsyncSession, scope: str, term: str) -> bool:
        row = await session.execute(text(
            f"SELECT 1 FROM {self._vocab[scope]} WHERE term >= :lo AND term < :hi LIMIT 1"),
            {"lo": term, "hi": prefix_upper_bound(term)})
        return row.first() is not None

    async def typo_candidates(self, session: AsyncSession, scope: str, term: str, max_edits: int) -> list[str]:
        sql = text(f"SELECT term FROM {self._vocab[scope]} WHERE term >= :lo AND term < :hi "
                   "AND length(term) BETWEEN :shortest AND :longest LIMIT 5000")
        bounds = {"shortest": max(1, len(term) - max_edits), "longest": len(term) + max_edits}
        for prefix in (term[:2], term[:1]):
            words = (await session.scalars(sql, {"lo": prefix, "hi": prefix_upper_bound(prefix), **bounds})).all()
            if words:
                return list(words)
        return []

    @staticmethod
    def _match_expr(groups: list[Group], any_group: bool) -> str:
        parts = []
        for group in groups:
            words = [f'"{word}"' + ("*" if prefix else "") for word, prefix in group]
            parts.append("(" + " OR ".join(words) + ")")
        return (" OR " if any_group else " AND ").join(parts)

    async def _pool(self, session: AsyncSession, table: str, match: str) -> str:
        """The FROM-clause subquery yielding (rowid, relevance) for the candidate pool."""
        count = await session.scalar(text(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {table} MATCH :match LIMIT {BROAD_MATCHES + 1})"),
            {"match": match})
        if (count or 0) > BROAD_MATCHES:
            return (f"(SELECT rowid AS rid, -rank AS rel FROM {table} WHERE {table} MATCH :match "
                    f"ORDER BY rowid DESC LIMIT {BROAD_POOL})")
        return (f"(SELECT rowid AS rid, -rank AS rel FROM {table} WHERE {table} MATCH :match "
                f"ORDER BY rank LIMIT {RANKED_POOL})")

    async def match_videos(self, session: AsyncSession, groups: list[Group], *, any_group: bool,
                           viewer_id: str | None) -> list[VideoHit]:
        match = self._match_expr(groups, any_group)
        pool = await self._pool(session, "search_videos_fts", match)
        rows = await session.execute(text(
            f"SELECT d.video_id, d.owner_id, f.rel, v.view_count, v.like_count, v.comment_count, v.share_count "
            f"FROM {pool} f JOIN search_video_docs d ON d.doc_id = f.rid JOIN videos v ON v.id = d.video_id "
            f"WHERE v.status = 'ready' AND v.visibility = 'public'{_not_blocked('d.owner_id', viewer_id)}"),
            {"match": match, "viewer": viewer_id})
        return _video_hits(rows.all())

    async def match_users(self, session: AsyncSession, groups: list[Group], *, any_group: bool,
                          viewer_id: str | None) -> list[UserHit]:
        match = self._match_expr(groups, any_group)
        pool = await self._pool(session, "search_users_fts", match)
        rows = await session.execute(text(
            f"SELECT d.user_id, u.handle, f.rel, u.follower_count "
            f"FROM {pool} f JOIN search_user_docs d ON d.doc_id = f.rid JOIN users u ON u.id = d.user_id "
            f"WHERE 1 = 1{_not_blocked('d.user_id', viewer_id)}"),
            {"match": match, "viewer": viewer_id})
        return _user_hits(rows.all())


# ---------------------------------------------------------------------------------------------
# PostgreSQL tsvector + pg_trgm
# ---------------------------------------------------------------------------------------------

class PostgresSearch:
    """Weighted tsvector documents (GIN) ranked by ts_rank; a vocabulary table (search_terms)
    with a trigram GIN index supplies typo candidates by pg_trgm similarity. pg_trgm lives in
    the `public` schema and is referenced qualified, so a search_path confined to the
    deployment's own schema still finds it."""

    strip_accents = False
    _docs = {"v": "search_video_docs", "u": "search_user_docs"}

    async def has_prefix(self, session: AsyncSession, scope: str, term: str) -> bool:
        row = await session.execute(text(
            "SELECT 1 FROM search_terms WHERE scope = :scope AND term >= :lo AND term < :hi LIMIT 1"),
            {"scope": scope, "lo": term, "hi": prefix_upper_bound(term)})
        return row.first() is not None

    async def typo_candidates(self, session: AsyncSession, scope: str, term: str, max_edits: int) -> list[str]:
        rows = await session.scalars(text(
            "SELECT term FROM search_terms WHERE scope = :scope AND term OPERATOR(public.%) :term "
            "AND length(term) BETWEEN :shortest AND :longest "
            "ORDER BY public.similarity(term, :term) DESC, term LIMIT 50"),
            {"scope": scope, "term": term, "shortest": max(1, len(term) - max_edits),
             "longest": len(term) + max_edits})
        return list(rows.all())

    @staticmethod
    def _tsquery(groups: list[Group], any_group: bool) -> str:
        parts = []
        for group in groups:
            words = [f"'{word}'" + (":*" if prefix else "") for word, prefix in group]
            parts.append("(" + " | ".join(words) + ")")
        return (" | " if any_group else " & ").join(parts)

    async def _pool(self, session: AsyncSession, table: str, query: str) -> str:
        # The best plan depends on the query's words (a rare word: the GIN index; a common one:
        # newest documents first), so never reuse a generic plan for these prepared statements.
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        key = "video_id" if table == "search_video_docs" else "user_id"
        if table == "search_video_docs" and await self._estimate(session, table, query) > BROAD_MATCHES:
            return (f"(SELECT {key} AS key, ts_rank(document, q) AS rel FROM {table}, to_tsquery('simple', :query) q "
                    f"WHERE document @@ q ORDER BY doc_id DESC LIMIT {BROAD_POOL})")
        return (f"(SELECT {key} AS key, ts_rank(document, q) AS rel FROM {table}, to_tsquery('simple', :query) q "
                f"WHERE document @@ q ORDER BY rel DESC LIMIT {RANKED_POOL})")

    @staticmethod
    async def _estimate(session: AsyncSession, table: str, query: str) -> float:
        """The planner's estimate of the matches (from the tsvector statistics): counting a
        broad prefix match exactly would cost more than ranking it."""
        plan = await session.scalar(text(
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} WHERE document @@ to_tsquery('simple', :query)"),
            {"query": query})
        if isinstance(plan, str):
            plan = json.loads(plan)
        return float(plan[0]["Plan"]["Plan Rows"])

    async def match_videos(self, session: AsyncSession, groups: list[Group], *, any_group: bool,
                           viewer_id: str | None) -> list[VideoHit]:
        query = self._tsquery(groups, any_group)
        pool = await self._pool(session, "search_video_docs", query)
        # A LATERAL primary-key probe per candidate (OFFSET 0 keeps the planner from turning it
        # into a hash join over every video).
        rows = await session.execute(text(
            f"SELECT v.id, v.owner_id, f.rel, v.view_count, v.like_count, v.comment_count, v.share_count "
            f"FROM {pool} f CROSS JOIN LATERAL (SELECT id, owner_id, view_count, like_count, comment_count, "
            f"share_count FROM videos WHERE id = f.key AND status = 'ready' AND visibility = 'public' OFFSET 0) v "
            f"WHERE 1 = 1{_not_blocked('v.owner_id', viewer_id)}"),
            {"query": query, "viewer": viewer_id})
        return _video_hits(rows.all())

    async def match_users(self, session: AsyncSession, groups: list[Group], *, any_group: bool,
                          viewer_id: str | None) -> list[UserHit]:
        query = self._tsquery(groups, any_group)
        pool = await self._pool(session, "search_user_docs", query)
        rows = await session.execute(text(
            f"SELECT u.id, u.handle, f.rel, u.follower_count FROM {pool} f CROSS JOIN LATERAL "
            f"(SELECT id, handle, follower_count FROM users WHERE id = f.key OFFSET 0) u "
            f"WHERE 1 = 1{_not_blocked('u.id', viewer_id)}"),
            {"query": query, "viewer": viewer_id})
        return _user_hits(rows.all())


_SQLITE = SqliteSearch()
_POSTGRES = PostgresSearch()


def backend_for(session: AsyncSession) -> SearchBackend:
    return _POSTGRES if session.get_bind().dialect.name == "postgresql" else _SQLITE
