"""The For You impression log's writes: what each page showed, committed before the page is sent.

The log is the arbiter of "seen": a page keeps only the videos whose impression row is new, so the
insert must finish before the page goes out. The pages a process serves at the same moment share
one write transaction ("group commit"): on SQLite every write transaction takes the database's
single write lock, and a page per transaction made concurrent pages queue on `busy_timeout`
(SQLite's busy handler sleeps 1-100 ms between tries) and paid BEGIN IMMEDIATE + COMMIT each.
The first page to arrive writes, for itself and for every page that queued while the previous
write ran; the others wait for its result.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from dataclasses import dataclass, field

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.db.base import UTCDateTime



@dataclass
class _Request:
    user_id: str
    video_ids: list[str]
    done: asyncio.Future


@dataclass
class _LoopWriter:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list[_Request] = field(default_factory=list)


class ImpressionLog:
    """Records impressions, batching the pages served at once into one transaction. One writer per
    event loop (a deployment's engine outlives an event loop in tests; asyncio objects do not)."""

    def __init__(self) -> None:
        self._writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWriter] = weakref.WeakKeyDictionary()

    async def record(self, db, user_id: str, video_ids: list[str]) -> set[str]:
        """Insert the user's impressions; returns the ids that were new (not shown to them before)."""
        loop = asyncio.get_running_loop()
        writer = self._writers.get(loop)
        if writer is None:
            writer = self._writers[loop] = _LoopWriter()
        request = _Request(user_id, video_ids, loop.create_future())
        writer.pending.append(request)
        async with writer.lock:
            if not request.done.done():  # no earlier writer took it: write what is queued now
                batch, writer.pending = writer.pending, []
                try:
                    async with db.transaction() as session:
                        inserted = await _insert(session, [(r.user_id, video_id) for r in batch for video_id in r.video_ids])
                except BaseException:
                    # Rolled back (or cancelled): the other pages' rows were not written; they go
                    # back to the queue for the next writer (each such page still waits for it).
                    writer.pending[:0] = [r for r in batch if r is not request]
                    raise
                for r in batch:  # in arrival order: a row two pages both showed is the first one's
                    fresh = {video_id for video_id in r.video_ids if (r.user_id, video_id) in inserted}
                    inserted -= {(r.user_id, video_id) for video_id in fresh}
                    if not r.done.done():
                        r.done.set_result(fresh)
        return request.done.result()


async def _insert(session: AsyncSession, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Insert (user_id, video_id) impressions; returns the pairs that were new."""
    from clipfeed.db import utcnow

    connection = await session.connection()
    statement, params = _insert_statement(connection.dialect.name, pairs)
    inserted = await connection.execute(statement, {**params, "now": utcnow()})
    return {(user_id, video_id) for user_id, video_id in inserted.all()}


# One INSERT ... SELECT over the page's ids passed as a single parameter (a JSON array on SQLite,
# two arrays on PostgreSQL), skipping the rows already logged and returning the new ones. An
# executemany through SQLAlchemy's "insertmanyvalues" cost ~1.2 ms of CPU per page for ten rows,
# most of it building and binding the multi-row VALUES; this is one plain statement.
_SQL = {
    "sqlite": ("INSERT INTO feed_impressions (user_id, video_id, created_at) "
               "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), :now FROM json_each(:pairs) "
               "WHERE true ON CONFLICT DO NOTHING RETURNING user_id, video_id"),  # WHERE: SQLite's upsert grammar
    "postgresql": ("INSERT INTO feed_impressions (user_id, video_id, created_at) "
                   "SELECT pair.user_id, pair.video_id, :now "
                   "FROM unnest(CAST(:users AS text[]), CAST(:videos AS text[])) AS pair(user_id, video_id) "
                   "ON CONFLICT DO NOTHING RETURNING user_id, video_id"),
}
_statements: dict[str, object] = {}


def _insert_statement(dialect: str, pairs: list[tuple[str, str]]):
    statement = _statements.get(dialect)
    if statement is None:
        statement = _statements[dialect] = text(_SQL[dialect]).bindparams(bindparam("now", type_=UTCDateTime()))
    if dialect == "sqlite":
        return statement, {"pairs": json.dumps(pairs)}
    return statement, {"users": [user for user, _ in pairs], "videos": [video for _, video in pairs]}
