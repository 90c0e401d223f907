"""Small relationship lookups every domain needs (visibility, comments, mentions)."""

from __future__ import annotations

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.social.models import Block, Follow


async def is_blocked(session: AsyncSession, user_a: str, user_b: str) -> bool:
    """True when either user blocked the other: blocks cut both ways for visibility."""
    if user_a == user_b:
        return False
    return bool(await session.scalar(select(exists().where(or_(
        and_(Block.blocker_id == user_a, Block.blocked_id == user_b),
        and_(Block.blocker_id == user_b, Block.blocked_id == user_a))))))


async def is_following(session: AsyncSession, follower_id: str, followee_id: str) -> bool:
    return bool(await session.scalar(select(exists().where(
        Follow.follower_id == follower_id, Follow.followee_id == followee_id))))
