"""Profiles as a viewer sees them: public fields, counts, and the viewer's relationship."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.errors import NotFound
from clipfeed.media import service as media
from clipfeed.social import graph


async def profile(session: AsyncSession, user_id: str, viewer: User | None) -> dict:
    """404 for an unknown user and, alike, for one who blocked the viewer."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    is_me = viewer is not None and viewer.id == user.id
    rel = await graph.relation(session, viewer.id if viewer else None, user.id)
    if rel.blocked_by:
        raise NotFound("user not found")
    body = {
        "id": user.id,
        "handle": user.handle,
        "display_name": user.display_name,
        "bio": user.bio or "",
        "follower_count": user.follower_count,
        "following_count": user.following_count,
        # What this viewer's profile list shows (public, plus followers-only for followers).
        "video_count": await media.count_user_videos(session, user.id, viewer),
        "created_at": user.created_at.isoformat() if user.created_at else None,
        "is_me": is_me,
        "is_following": rel.following,
        "follows_you": rel.followed_by,
        "blocked": rel.blocking,
    }
    if is_me:
        body["region"] = user.region
        body["interests"] = list(user.interests or [])
    return body


async def profile_by_handle(session: AsyncSession, handle: str, viewer: User | None) -> dict:
    key = handle.strip().lstrip("@").lower()
    user_id = await session.scalar(select(User.id).where(User.handle == key)) if 0 < len(key) <= 64 else None
    if user_id is None:
        raise NotFound("user not found")
    return await profile(session, user_id, viewer)
