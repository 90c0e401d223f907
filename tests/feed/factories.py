"""Plain factory functions for feed and search tests: rows written straight to the database.

Each call opens its own unpooled engine on the test's thread and loop, never sharing connections
with the server running in its own thread."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import insert, update

from clipfeed.accounts import service as accounts
from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.db import utcnow
from clipfeed.media.models import Sound, Video
from clipfeed.social import tags
from clipfeed.social.models import InteractionEvent
from tests.conftest import db_run as run


def make_user(settings: Settings, handle: str | None = None, *, display_name: str = "Someone",
              region: str | None = None, follower_count: int = 0) -> dict:
    """A user with a session token, without the cost of argon2."""

    async def work(session):
        user = User(handle=handle or f"u{uuid.uuid4().hex[:12]}", display_name=display_name, password_hash="!",
                    region=region, follower_count=follower_count)
        session.add(user)
        await session.flush()
        token = await accounts.issue_token(session, settings, user)
        return {"id": user.id, "handle": user.handle, "token": token,
                "headers": {"Authorization": f"Bearer {token}"}}

    return run(settings, work)


def make_video(settings: Settings, owner_id: str, caption: str = "", **fields) -> str:
    """A ready, public video (hashtags linked from the caption) unless told otherwise."""
    values = dict(owner_id=owner_id, status="ready", visibility="public", caption=caption, duration_ms=10_000,
                  width=270, height=480, progress=100.0, renditions=[], artifacts={}, features={},
                  published_at=utcnow())
    values.update(fields)

    async def work(session):
        video = Video(**values)
        session.add(video)
        await session.flush()
        await tags.sync_video_hashtags(session, video)
        return video.id

    return run(settings, work)


def update_video(settings: Settings, video_id: str, **values) -> None:
    async def work(session):
        video = await session.get(Video, video_id)
        for name, value in values.items():
            setattr(video, name, value)
        await session.flush()
        if "caption" in values:
            await tags.sync_video_hashtags(session, video)

    run(settings, work)


def delete_video(settings: Settings, video_id: str) -> None:
    async def work(session):
        await tags.unlink(session, video_id)
        await session.delete(await session.get(Video, video_id))

    run(settings, work)


def update_user(settings: Settings, user_id: str, **values) -> None:
    async def work(session):
        await session.execute(update(User).where(User.id == user_id).values(**values))

    run(settings, work)


def make_sound(settings: Settings, owner_id: str, title: str, source_video_id: str | None = None) -> str:
    async def work(session):
        sound = Sound(owner_id=owner_id, source_video_id=source_video_id, title=title, duration_ms=10_000,
                      blob_key="")
        session.add(sound)
        await session.flush()
        return sound.id

    return run(settings, work)


def events(settings: Settings, rows: list[dict]) -> None:
    """Bulk-insert interaction events: dicts with kind, video_id, created_at (+ region ...)."""
    if not rows:
        return

    async def work(session):
        full = [{"user_id": None, "creator_id": None, "watch_ms": 0, "completed": False, "replay": False,
                 "region": None, "viewer_key": None, **row} for row in rows]
        await session.execute(insert(InteractionEvent), full)

    run(settings, work)


def steady(video_id: str, *, per_hour: int, hours: float, kind: str = "view", region: str | None = None,
           end: datetime | None = None) -> list[dict]:
    """`per_hour` events an hour, evenly spread over the `hours` before `end` (default now)."""
    end = end or utcnow()
    total = int(per_hour * hours)
    step = timedelta(hours=hours) / max(1, total)
    return [{"kind": kind, "video_id": video_id, "region": region, "created_at": end - step * (i + 0.5)}
            for i in range(total)]


# The graph rows are made exactly as the social tests make them.
from tests.social.factories import block, follow  # noqa: E402,F401


def impressions(settings: Settings, user_id: str, video_ids: list[str]) -> None:
    """Impressions written as another API process writes them: straight into the log."""
    from clipfeed.feed.models import Impression

    async def work(session):
        now = utcnow()
        await session.execute(insert(Impression), [{"user_id": user_id, "video_id": vid, "created_at": now}
                                                   for vid in video_ids])

    run(settings, work)
