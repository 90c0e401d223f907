"""The Following feed: newest first from the creators the viewer follows.

Shows ready videos that are public or followers-only (the viewer follows their creator by
construction); never unlisted, private, or across a block. Ordered by (published_at, id)
descending with a keyset cursor, so a page boundary does not move when new videos arrive: they
are newer than the cursor and show up on a fresh first page, never as duplicates or gaps.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.db import utcnow
from clipfeed.media.models import Video, VideoStatus, Visibility
from clipfeed.pagination import decode_cursor, encode_cursor
from clipfeed.social import graph
from clipfeed.social.models import Follow


# Growing look-back windows: most pages fill from the first (a few index seeks per followed
# creator and a small sort); quiet feeds widen it, the last try is unbounded.
WINDOWS = (timedelta(hours=6), timedelta(days=2), timedelta(days=16), timedelta(days=128), None)


async def following_feed(session: AsyncSession, viewer: User, *, limit: int,
                         cursor: str | None) -> tuple[list[Video], str | None]:
    query = (
        select(Video)
        .join(Follow, and_(Follow.followee_id == Video.owner_id, Follow.follower_id == viewer.id))
        .where(Video.status == VideoStatus.READY,
               Video.visibility.in_((Visibility.PUBLIC, Visibility.FOLLOWERS)),
               Video.published_at.is_not(None),
               ~graph.blocked_clause(viewer.id, Video.owner_id))
    )
    anchor = utcnow()
    if cursor:
        published, last_id = decode_cursor(cursor)
        anchor = published
        # The plain bound lets the (owner_id, published_at) index seek; the OR breaks ties.
        query = query.where(Video.published_at <= published,
                            or_(Video.published_at < published,
                                and_(Video.published_at == published, Video.id < last_id)))
    query = query.order_by(Video.published_at.desc(), Video.id.desc()).limit(limit + 1)
    rows: list[Video] = []
    for window in WINDOWS:
        windowed = query if window is None else query.where(Video.published_at >= anchor - window)
        rows = list((await session.scalars(windowed)).all())
        if len(rows) > limit:
            break
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.published_at, last.id)
    return rows[:limit], next_cursor
