"""Plain factory functions writing straight to the database (fast setup for interaction tests).

Each call opens its own unpooled engine on the test's thread and event loop, so it never shares
connections with the server running in its own thread."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select

from clipfeed.accounts import service as accounts
from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.db import utcnow
from clipfeed.media import keys
from clipfeed.media.models import Sound, Video
from clipfeed.social.models import Block, Follow
from tests.conftest import db_run as run

RENDITIONS = [{"name": "480p", "width": 270, "height": 480, "bandwidth": 800_000, "playlist": "480p/playlist.m3u8"}]


def make_users(settings: Settings, count: int, prefix: str = "f") -> list[dict]:
    """Users with session tokens, without the cost of argon2 per user."""

    async def work(session):
        made = []
        for _ in range(count):
            user = User(handle=f"{prefix}{uuid.uuid4().hex[:12]}", display_name="Fan", password_hash="!")
            session.add(user)
            await session.flush()
            token = await accounts.issue_token(session, settings, user)
            made.append({"user": {"id": user.id, "handle": user.handle}, "token": token,
                         "headers": {"Authorization": f"Bearer {token}"}})
        return made

    return run(settings, work)


def make_video(settings: Settings, owner_id: str, **fields) -> str:
    """A ready video row (10 s, public, with a 480p rung and a poster unless told otherwise)."""
    values = dict(owner_id=owner_id, status="ready", visibility="public", caption="", duration_ms=10_000,
                  width=270, height=480, progress=100.0, renditions=RENDITIONS,
                  artifacts={"files": ["poster.jpg"]}, features={}, published_at=utcnow())
    values.update(fields)

    async def work(session):
        video = Video(**values)
        session.add(video)
        await session.flush()
        return video.id

    return run(settings, work)


def make_sound(settings: Settings, owner_id: str, source_video_id: str | None, title: str = "a sound",
               *, ready: bool = True) -> str:
    """A sound row; `ready` ones name their blob key (the blob itself is not written)."""

    async def work(session):
        sound = Sound(owner_id=owner_id, source_video_id=source_video_id, title=title, duration_ms=10_000,
                      blob_key="")
        session.add(sound)
        await session.flush()
        if ready:
            sound.blob_key = keys.sound_key(sound.id)
        return sound.id

    return run(settings, work)


def block(settings: Settings, blocker_id: str, blocked_id: str) -> None:
    async def work(session):
        session.add(Block(blocker_id=blocker_id, blocked_id=blocked_id))

    run(settings, work)


def follow(settings: Settings, follower_id: str, followee_id: str, *, at: datetime | None = None) -> None:
    async def work(session):
        session.add(Follow(follower_id=follower_id, followee_id=followee_id, created_at=at or utcnow()))

    run(settings, work)


def count(settings: Settings, model, **where) -> int:
    async def work(session):
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return await session.scalar(query)

    return run(settings, work)


def later(minutes: float) -> datetime:
    return utcnow() + timedelta(minutes=minutes)


def in_one_window(attempt, window_s: int = 60):
    """Run attempt() (a burst against a fixed-window rate limit, with fresh users) so that it
    falls inside one window: if a window boundary passed during it, run it once more (the next
    boundary is a whole window away)."""
    import time

    for _ in range(2):
        start = int(time.time() // window_s)
        result = attempt()
        if int(time.time() // window_s) == start:
            return result
    return result
