"""Likes, views and shares: the interaction rules (no HTTP types).

Counters on the video are exact under concurrent writes on both databases: the row that
changes a counter is written with INSERT ... ON CONFLICT DO NOTHING / DELETE ... RETURNING, and
the counter moves by an atomic ``UPDATE ... SET n = n + 1`` only when that row really changed,
in the same transaction.

Views (``POST /videos/{id}/view``):
- ``watch_ms`` is the time watched in this viewing session. Without ``replay`` it may not exceed
  one loop: the duration plus ``VIEW_SLACK_MS`` (player clocks and rounding). With
  ``replay=true`` (the clip looped) it may reach ``VIEW_MAX_LOOPS`` loops; clients report a long
  looping session in several views. Beyond that: 422 on field ``watch_ms``.
- A view is recorded as an InteractionEvent of kind ``skip`` when ``watch_ms < SKIP_MS`` and it
  was not completed, else ``view``. Both count in ``view_count`` (a skip is a view that ended
  quickly) and in analytics.
- Anonymous viewers are told apart by ``viewer_key``: an HMAC of client IP and user agent under
  the server's secret, so unique viewers can be counted without storing either.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.errors import ClipfeedError, Conflict, NotFound, ValidationFailed
from clipfeed.media import service as media
from clipfeed.media.models import Video, VideoStatus, Visibility
from clipfeed.social import notifications
from clipfeed.social.models import InteractionEvent, Like, Share

VIEW_SLACK_MS = 1000
VIEW_MAX_LOOPS = 10
SKIP_MS = 2000
MAX_WATCH_MS = 24 * 3600 * 1000
_CHANNEL = re.compile(r"^[a-z0-9_.-]{1,32}$")


class NotShareable(ClipfeedError):
    status = 403
    code = "not_shareable"


def insert_ignore(session: AsyncSession, model):
    """INSERT ... ON CONFLICT DO NOTHING for the session's database."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model).on_conflict_do_nothing()


async def visible_video(session: AsyncSession, video_id: str, viewer: User | None) -> Video:
    """The video if the viewer may see it, else 404 (unknown, hidden, or blocked either way)."""
    return await media.get_visible(session, video_id, viewer)


async def bump(session: AsyncSession, video_id: str, column: str, delta: int) -> int:
    """Atomically add delta to one of the video's counters; returns the new value."""
    col = getattr(Video, column)
    return int(await session.scalar(
        update(Video).where(Video.id == video_id).values({col: col + delta}).returning(col)
        .execution_options(synchronize_session=False)) or 0)


def record_event(session: AsyncSession, kind: str, video: Video, user: User | None, **fields) -> None:
    session.add(InteractionEvent(kind=kind, user_id=user.id if user else None, video_id=video.id,
                                 creator_id=video.owner_id, region=user.region if user else None, **fields))
    from clipfeed.feed import events as feed_events  # the For You feed learns from it after commit

    feed_events.publish(session, kind, user_id=user.id if user else None, video=video, **fields)


# --- likes -----------------------------------------------------------------------------------

async def like(session: AsyncSession, video_id: str, user: User) -> dict:
    video = await visible_video(session, video_id, user)
    inserted = await session.scalar(
        insert_ignore(session, Like).values(user_id=user.id, video_id=video.id).returning(Like.user_id))
    if inserted is not None:
        count = await bump(session, video.id, "like_count", 1)
        record_event(session, "like", video, user)
        await notifications.notify(session, video.owner_id, "like", actor_id=user.id, video_id=video.id)
    else:
        count = await _counter(session, video.id, "like_count")
    return {"liked": True, "like_count": count}


async def unlike(session: AsyncSession, video_id: str, user: User) -> dict:
    video = await visible_video(session, video_id, user)
    deleted = await session.scalar(
        delete(Like).where(Like.user_id == user.id, Like.video_id == video.id).returning(Like.user_id)
        .execution_options(synchronize_session=False))
    if deleted is not None:
        count = await bump(session, video.id, "like_count", -1)
        record_event(session, "unlike", video, user)
    else:
        count = await _counter(session, video.id, "like_count")
    return {"liked": False, "like_count": count}


async def _counter(session: AsyncSession, video_id: str, column: str) -> int:
    return int(await session.scalar(select(getattr(Video, column)).where(Video.id == video_id)) or 0)


async def liked_ids(session: AsyncSession, user_id: str | None, video_ids: list[str]) -> set[str]:
    """Which of these videos the user likes (one query; empty for anonymous viewers)."""
    if not user_id or not video_ids:
        return set()
    rows = await session.scalars(select(Like.video_id).where(Like.user_id == user_id, Like.video_id.in_(video_ids)))
    return set(rows.all())


# --- views -----------------------------------------------------------------------------------

def viewer_key(settings: Settings, client_ip: str, user_agent: str) -> str:
    message = f"viewer\n{client_ip}\n{user_agent[:512]}".encode()
    return hmac.new(settings.signing_key, message, hashlib.sha256).hexdigest()


def max_watch_ms(duration_ms: int, replay: bool) -> int:
    return duration_ms * (VIEW_MAX_LOOPS if replay else 1) + VIEW_SLACK_MS


async def record_view(session: AsyncSession, settings: Settings, video_id: str, viewer: User | None, *,
                      watch_ms: int, completed: bool, replay: bool, client_ip: str, user_agent: str) -> dict:
    video = await visible_video(session, video_id, viewer)
    if video.status != VideoStatus.READY or not video.duration_ms:
        raise Conflict("this video is not playable yet", code="not_ready")
    if watch_ms < 0 or watch_ms > min(max_watch_ms(video.duration_ms, replay), MAX_WATCH_MS):
        limit = max_watch_ms(video.duration_ms, replay)
        raise ValidationFailed(
            f"watch_ms must be between 0 and {limit} for this {video.duration_ms} ms video"
            + ("" if replay else " (send replay=true for a looped viewing)"), field="watch_ms")
    kind = "skip" if watch_ms < SKIP_MS and not completed else "view"
    key = None if viewer is not None else viewer_key(settings, client_ip, user_agent)
    record_event(session, kind, video, viewer, watch_ms=watch_ms, completed=completed, replay=replay,
                 viewer_key=key)
    count = await bump(session, video.id, "view_count", 1)
    if completed or kind == "skip":
        await bump(session, video.id, "completion_count" if completed else "skip_count", 1)
    return {"kind": kind, "view_count": count}


# --- shares ----------------------------------------------------------------------------------

def share_url(settings: Settings, request_base_url: str, video_id: str) -> str:
    base = (settings.public_base_url or request_base_url).rstrip("/")
    return f"{base}/v/{video_id}"


def check_shareable(video: Video) -> None:
    """Private and followers-only videos have no public link; others see them as 404 already."""
    if video.visibility == Visibility.PRIVATE:
        raise NotShareable("private videos can't be shared; make it public or unlisted first")
    if video.visibility == Visibility.FOLLOWERS:
        raise NotShareable("followers-only videos can't be shared publicly; make it public or unlisted first")
    if video.status != VideoStatus.READY:
        raise Conflict("this video is not ready yet, so it can't be shared", code="not_ready")


async def share(session: AsyncSession, settings: Settings, video_id: str, user: User | None, *,
                channel: str | None, request_base_url: str) -> dict:
    video = await visible_video(session, video_id, user)
    channel = (channel or "link").strip().lower()
    if not _CHANNEL.match(channel):
        raise ValidationFailed("channel must be 1-32 characters of a-z, 0-9, '.', '_' and '-'", field="channel")
    check_shareable(video)
    session.add(Share(video_id=video.id, user_id=user.id if user else None, channel=channel))
    record_event(session, "share", video, user)
    count = await bump(session, video.id, "share_count", 1)
    return {"share_url": share_url(settings, request_base_url, video.id), "share_count": count, "channel": channel}


async def shareable_video(session: AsyncSession, video_id: str, viewer: User | None) -> Video:
    """The video behind a /v/{id} page: visible to this viewer, ready, public or unlisted; else 404."""
    video = await visible_video(session, video_id, viewer)
    if video.status != VideoStatus.READY or video.visibility not in (Visibility.PUBLIC, Visibility.UNLISTED):
        raise NotFound("video not found")
    return video
