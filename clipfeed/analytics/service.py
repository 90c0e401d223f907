"""Creator analytics for one video, computed from the interaction log.

Definitions (all over the video's ``view`` and ``skip`` events):
- ``views``: number of view events (a skip is a view that ended quickly, so it counts).
- ``unique_viewers``: distinct signed-in users plus distinct anonymous ``viewer_key``s.
- ``total_watch_ms`` / ``avg_watch_ms``: sum / mean of the reported ``watch_ms``.
- a view is *complete* when the client said ``completed`` or ``replay`` (it looped), or when
  ``watch_ms`` reached the duration; ``completion_rate`` = complete views / views.
- ``retention``: for each whole second s = 0 .. floor(duration), the share of views still
  watching at s, i.e. with an effective watch time >= s × 1000 ms, where a complete view counts
  as the full duration. ``retention[0]`` is 1.0 whenever there are views.
- ``likes``, ``comments``, ``shares``: the video's current counters.
- ``follows_gained``: users who currently follow the creator and started following within
  ``FOLLOW_WINDOW`` (1 hour) after one of their views of this video.
- ``views_by_day``: views per UTC calendar day over the last ``DAYS`` (30) days, oldest first,
  today included, days without views as 0: ``[{"date": "YYYY-MM-DD", "views": n}, ...]``;
  ``creator_views_by_day`` is the same series across all of a creator's videos.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Date, Integer, case, cast, distinct, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.db import utcnow
from clipfeed.errors import Forbidden
from clipfeed.media.models import Video
from clipfeed.social.interactions import visible_video
from clipfeed.social.models import Follow, InteractionEvent

VIEW_KINDS = ("view", "skip")
FOLLOW_WINDOW = timedelta(hours=1)
DAYS = 30


async def owned_video(session: AsyncSession, video_id: str, user: User) -> Video:
    video = await visible_video(session, video_id, user)  # 404 when hidden or unknown
    if video.owner_id != user.id:
        raise Forbidden("only the creator can see this video's analytics")
    return video


async def video_analytics(session: AsyncSession, video_id: str, user: User) -> dict:
    video = await owned_video(session, video_id, user)
    duration_ms = int(video.duration_ms or 0)
    event = InteractionEvent
    is_view = (event.video_id == video.id) & event.kind.in_(VIEW_KINDS)
    complete = or_(event.completed.is_(True), event.replay.is_(True), event.watch_ms >= max(duration_ms, 1))

    totals = (await session.execute(select(
        func.count(),
        func.coalesce(func.sum(event.watch_ms), 0),
        func.count(distinct(event.user_id)),
        func.count(distinct(case((event.user_id.is_(None), event.viewer_key)))),
        func.coalesce(func.sum(case((complete, 1), else_=0)), 0),
    ).where(is_view))).one()
    views, total_ms, users, anonymous, completions = (int(x or 0) for x in totals)

    # Retention from one grouped query: views by the whole second they reached.
    effective = case((complete, literal(duration_ms)), else_=event.watch_ms)
    second = cast(effective, Integer) // 1000
    stopped_at: dict[int, int] = {}
    for sec, count in (await session.execute(select(second, func.count()).where(is_view).group_by(second))).all():
        stopped_at[int(sec)] = stopped_at.get(int(sec), 0) + int(count)
    retention: list[float] = []
    still_watching = views
    for s in range(duration_ms // 1000 + 1):
        retention.append(round(still_watching / views, 4) if views else 0.0)
        still_watching -= stopped_at.get(s, 0)  # these views reached s but not s + 1

    return {
        "video_id": video.id,
        "duration_ms": duration_ms,
        "views": views,
        "unique_viewers": users + anonymous,
        "total_watch_ms": total_ms,
        "avg_watch_ms": round(total_ms / views, 1) if views else 0.0,
        "completion_rate": round(completions / views, 4) if views else 0.0,
        "retention": retention,
        "likes": int(video.like_count or 0),
        "comments": int(video.comment_count or 0),
        "shares": int(video.share_count or 0),
        "follows_gained": await follows_gained(session, video),
        "views_by_day": await views_by_day(session, video),
    }


def _utc_day(session: AsyncSession, column):
    """The UTC calendar day of a timestamp column, in SQL. PostgreSQL's date() of a timestamptz
    follows the session's time zone, so it is converted to UTC first; SQLite stores UTC text,
    whose date() is already the UTC day."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


async def views_by_day(session: AsyncSession, video: Video, *, days: int = DAYS, today: date | None = None) -> list[dict]:
    return await _daily_views(session, InteractionEvent.video_id == video.id, days=days, today=today)


async def creator_views_by_day(session: AsyncSession, user: User, *, days: int = DAYS,
                               today: date | None = None) -> list[dict]:
    """Views per day across all of a creator's videos (events carry the creator at the time)."""
    return await _daily_views(session, InteractionEvent.creator_id == user.id, days=days, today=today)


async def _daily_views(session: AsyncSession, condition, *, days: int, today: date | None) -> list[dict]:
    today = today or utcnow().date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, UTC)
    event = InteractionEvent
    day = _utc_day(session, event.created_at)
    rows = (await session.execute(
        select(day, func.count())
        .where(condition, event.kind.in_(VIEW_KINDS), event.created_at >= since)
        .group_by(day))).all()
    # SQLite answers text, PostgreSQL a date: both start with the ISO day.
    counts = {str(value)[:10]: int(count) for value, count in rows}
    dates = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    return [{"date": d, "views": counts.get(d, 0)} for d in dates]


async def follows_gained(session: AsyncSession, video: Video) -> int:
    rows = (await session.execute(
        select(Follow.follower_id, Follow.created_at, InteractionEvent.created_at)
        .join(InteractionEvent, InteractionEvent.user_id == Follow.follower_id)
        .where(Follow.followee_id == video.owner_id, InteractionEvent.video_id == video.id,
               InteractionEvent.kind.in_(VIEW_KINDS), InteractionEvent.created_at <= Follow.created_at))).all()
    return len({follower for follower, followed_at, viewed_at in rows if followed_at - viewed_at <= FOLLOW_WINDOW})
