"""The impression log's group commit: pages served at the same moment share one write
transaction, and each page still learns exactly which of its videos were new to its viewer."""

from __future__ import annotations

import asyncio

from sqlalchemy import event, select

from clipfeed.db import Database
from clipfeed.feed.impressions import ImpressionLog
from clipfeed.feed.models import Impression


def test_concurrent_pages_share_a_write_and_each_new_impression_goes_to_one_page(settings):
    async def scenario():
        db = Database(settings)
        commits = []
        event.listen(db.engine.sync_engine, "commit", lambda _conn: commits.append(1))
        log = ImpressionLog()
        try:
            results = await asyncio.gather(
                log.record(db, "ann", ["v1", "v2"]),   # writes alone: nothing queued before it
                log.record(db, "ann", ["v2", "v3"]),   # these four queue while it writes...
                log.record(db, "bob", ["v1"]),
                log.record(db, "ann", ["v1", "v4"]),
                log.record(db, "ann", ["v4"]),          # ...v4 is new, but only to the first of them
            )
            again = await log.record(db, "bob", ["v1", "v5"])
            writes = len(commits)
            async with db.read() as session:
                rows = set((await session.execute(select(Impression.user_id, Impression.video_id))).all())
        finally:
            await db.dispose()
        return results, again, writes, rows

    results, again, commits, rows = asyncio.run(scenario())
    assert results == [{"v1", "v2"}, {"v3"}, {"v1"}, {"v4"}, set()]
    assert again == {"v5"}
    # The first page's transaction, one for the four pages that queued behind it, one for the last.
    assert commits == 3
    assert rows == {("ann", "v1"), ("ann", "v2"), ("ann", "v3"), ("ann", "v4"), ("bob", "v1"), ("bob", "v5")}


def test_a_failed_write_leaves_the_queued_pages_to_the_next_writer(settings):
    async def scenario():
        db = Database(settings)
        log = ImpressionLog()
        failures = []

        def fail_once(_conn, _cursor, statement, *_args):
            if "feed_impressions" in statement and not failures:
                failures.append(statement)
                raise RuntimeError("disk full")

        event.listen(db.engine.sync_engine, "before_cursor_execute", fail_once)
        try:
            first, *others = await asyncio.gather(log.record(db, "ann", ["v1"]), log.record(db, "bob", ["v1"]),
                                                  log.record(db, "cid", ["v2"]), return_exceptions=True)
        finally:
            await db.dispose()
        return first, others

    first, others = asyncio.run(scenario())
    assert isinstance(first, Exception)  # the page whose write failed fails...
    assert others == [{"v1"}, {"v2"}]    # ...the pages queued behind it are written by the next writer
