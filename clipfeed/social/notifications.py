"""Notifications: stored rows (the inbox) plus a live push to connected clients."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.social.models import Notification


async def notify(session: AsyncSession, user_id: str, kind: str, *, actor_id: str | None = None,
                 video_id: str | None = None, comment_id: str | None = None, text: str = "") -> Notification | None:
    """Record a notification for user_id (never for one's own action)."""
    if actor_id is not None and actor_id == user_id:
        return None
    notification = Notification(user_id=user_id, kind=kind, actor_id=actor_id, video_id=video_id,
                                comment_id=comment_id, text=text[:280])
    session.add(notification)
    await session.flush()
    return notification
