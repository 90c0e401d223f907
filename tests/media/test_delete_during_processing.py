"""A creator deletes a video while its processing job is still writing it (PostgreSQL: row locks;
SQLite serializes every writer on BEGIN IMMEDIATE, so the race cannot arise there)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text, update

from clipfeed.db import Database
from clipfeed.media import pipeline
from clipfeed.media import service as media_service
from clipfeed.media.models import Video
from clipfeed.storage import build_store
from tests.conftest import _backends
from tests.feed import factories as f


async def _until_a_session_waits_on_a_lock(db: Database, timeout: float = 20.0) -> None:
    """Poll pg_stat_activity (a state change we cannot subscribe to) until a backend of this
    database waits on a lock: the delete has queued behind the job's step."""
    deadline = time.monotonic() + timeout
    async with db.engine.connect() as probe:
        while True:
            waiting = await probe.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"))
            await probe.commit()
            if waiting:
                return
            if time.monotonic() > deadline:
                raise AssertionError("the delete never waited on the job's lock")
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("backend", [name for name in _backends() if name == "postgres"])
def test_a_delete_during_a_processing_step_waits_for_the_video_before_locking_anything_else(settings_factory):
    """The deadlock CI met: the delete unlinked the hashtags (a trigger rewrote the video's search
    document, locking it), then waited for the video's row held by the job's step, whose update of
    the video rewrote the same search document (the job waited for the delete)."""
    settings = settings_factory()
    owner = f.make_user(settings)
    video_id = f.make_video(settings, owner["id"], caption="a replay #live")
    store = build_store(settings)
    db = Database(settings)

    async def delete() -> None:
        async with db.transaction() as session:
            await media_service.delete_video(session, store, await session.get(Video, video_id))

    async def scenario() -> None:
        async with db.transaction() as step:
            await pipeline.load_for_update(step, video_id)  # a step of the processing job
            deleting = asyncio.create_task(delete())
            await _until_a_session_waits_on_a_lock(db)
            # The delete waits for the video having locked nothing else: the search document is free.
            async with db.engine.connect() as other:
                locked = (await other.scalars(text(
                    "SELECT video_id FROM search_video_docs WHERE video_id = :video FOR UPDATE NOWAIT"),
                    {"video": video_id})).all()
                await other.rollback()
            assert locked == [video_id]
            # The step's own update of the video (its search trigger rewrites that document).
            await step.execute(update(Video).where(Video.id == video_id).values(artifacts={"files": ["probe.json"]}))
        await deleting  # no "deadlock detected" on either side: the delete went after the step
        async with db.read() as session:
            assert await session.get(Video, video_id) is None

    async def main() -> None:
        try:
            await scenario()
        finally:
            await db.dispose()

    asyncio.run(main())
