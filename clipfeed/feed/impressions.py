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
import weakref
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.feed.models import Impression


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

    now = utcnow()
    rows = [{"user_id": user_id, "video_id": video_id, "created_at": now} for user_id, video_id in pairs]
    # executemany with RETURNING (SQLAlchemy's "insertmanyvalues"): one statement whose compiled
    # form is cached, where .values(rows) compiled a new multi-row INSERT for every page (~2 ms);
    # and the statement object is built once per dialect, so its cache key is walked only once.
    inserted = await session.execute(_insert_statement(session), rows)
    return {(user_id, video_id) for user_id, video_id in inserted.all()}


_statements: dict[str, object] = {}


def _insert_statement(session: AsyncSession):
    from clipfeed.social.interactions import insert_ignore

    dialect = session.get_bind().dialect.name
    statement = _statements.get(dialect)
    if statement is None:
        statement = _statements[dialect] = (insert_ignore(session, Impression)
                                            .returning(Impression.user_id, Impression.video_id))
    return statement
