"""The social graph: follows and blocks (rules, exact counters) and the relationship lookups every
domain needs (visibility, comments, mentions, feeds).

Counters: follower_count / following_count move with atomic ``SET x = x + 1`` in the same
transaction as the follow row, and only when the row really changed (INSERT ... ON CONFLICT DO
NOTHING / DELETE report it), so they stay exact under concurrent and repeated requests.
Follow and block of one pair are serialized by locking both user rows (``FOR NO KEY UPDATE`` on
PostgreSQL, in id order so two users following each other cannot deadlock; SQLite serializes
writers anyway), which keeps "a block removes follows both ways" true under races.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from clipfeed.accounts.models import User
from clipfeed.db.base import utcnow
from clipfeed.errors import Forbidden, NotFound, ValidationFailed
from clipfeed.pagination import decode_cursor, encode_cursor
from clipfeed.social.models import Block, Follow, InteractionEvent

# ---------------------------------------------------------------------------------------------
# Lookups
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Relation:
    """How a viewer relates to another user."""

    following: bool = False    # the viewer follows them
    followed_by: bool = False  # they follow the viewer
    blocking: bool = False     # the viewer blocked them
    blocked_by: bool = False   # they blocked the viewer

    @property
    def blocked(self) -> bool:
        """Blocks cut both ways for visibility and interaction."""
        return self.blocking or self.blocked_by


NO_RELATION = Relation()


async def relation(db: AsyncSession | AsyncConnection, viewer_id: str | None, other_id: str) -> Relation:
    """Follow and block state between viewer and other, in one query (works on a session or a
    bare connection, so the /media path can use it too)."""
    if not viewer_id or viewer_id == other_id:
        return NO_RELATION
    row = (await db.execute(select(
        exists().where(Follow.follower_id == viewer_id, Follow.followee_id == other_id).label("following"),
        exists().where(Follow.follower_id == other_id, Follow.followee_id == viewer_id).label("followed_by"),
        exists().where(Block.blocker_id == viewer_id, Block.blocked_id == other_id).label("blocking"),
        exists().where(Block.blocker_id == other_id, Block.blocked_id == viewer_id).label("blocked_by"),
    ))).one()
    return Relation(bool(row.following), bool(row.followed_by), bool(row.blocking), bool(row.blocked_by))


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


def follows_clause(viewer_id: str, owner_col):
    """SQL: the viewer follows the user in `owner_col` (correlates with the outer query)."""
    return exists().where(Follow.follower_id == viewer_id, Follow.followee_id == owner_col)


def blocked_clause(viewer_id: str, other_col):
    """SQL: a block exists between the viewer and the user in `other_col`, either way."""
    return exists().where(or_(and_(Block.blocker_id == viewer_id, Block.blocked_id == other_col),
                              and_(Block.blocker_id == other_col, Block.blocked_id == viewer_id)))


async def followed_ids(session: AsyncSession, viewer_id: str, candidates: list[str]) -> set[str]:
    """Which of `candidates` the viewer follows (one query, for lists)."""
    if not candidates:
        return set()
    return set((await session.scalars(select(Follow.followee_id).where(
        Follow.follower_id == viewer_id, Follow.followee_id.in_(set(candidates))))).all())


# ---------------------------------------------------------------------------------------------
# Writes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FollowState:
    following: bool
    changed: bool          # False for a repeated (idempotent) request
    follower_count: int    # of the followee
    following_count: int   # of the follower


def _insert_ignore(session: AsyncSession, model):
    """INSERT ... ON CONFLICT DO NOTHING on either database."""
    dialect = session.bind.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing()
    return insert(model).prefix_with("OR IGNORE")  # pragma: no cover - other dialects are not supported


async def _target(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    return user


async def _lock_pair(session: AsyncSession, a: str, b: str) -> None:
    """Serialize follow/block writes touching this pair (and the counters on both rows)."""
    await session.execute(select(User.id).where(User.id.in_((a, b))).order_by(User.id)
                          .with_for_update(key_share=True))


async def _bump(session: AsyncSession, user_id: str, column: str, delta: int) -> int:
    """Atomic counter change; returns the new value and refreshes a loaded User in place."""
    table = User.__table__
    value = await session.scalar(update(table).where(table.c.id == user_id)
                                 .values({column: table.c[column] + delta}).returning(table.c[column]))
    loaded = session.identity_map.get(identity_key(User, user_id))
    if loaded is not None and value is not None:
        set_committed_value(loaded, column, value)
    return int(value or 0)


async def _counts(session: AsyncSession, follower_id: str, followee_id: str) -> tuple[int, int]:
    rows = {row.id: row for row in (await session.execute(
        select(User.id, User.follower_count, User.following_count)
        .where(User.id.in_((follower_id, followee_id))))).all()}
    return int(rows[followee_id].follower_count), int(rows[follower_id].following_count)


async def _remove_follow(session: AsyncSession, follower_id: str, followee_id: str) -> bool:
    result = await session.execute(delete(Follow).where(Follow.follower_id == follower_id,
                                                        Follow.followee_id == followee_id))
    if result.rowcount != 1:
        return False
    # Lower id first: the same row order as _lock_pair, whichever way the follow pointed.
    for user_id, column in sorted(((followee_id, "follower_count"), (follower_id, "following_count"))):
        await _bump(session, user_id, column, -1)
    return True


async def follow(session: AsyncSession, follower: User, followee_id: str, *,
                 video_id: str | None = None) -> FollowState:
    """Follow a user (idempotent). `video_id` names the video the follow came from, if any
    (recorded on the event for creator analytics)."""
    if followee_id == follower.id:
        raise ValidationFailed("you cannot follow yourself", field="user_id")
    followee = await _target(session, followee_id)
    await _lock_pair(session, follower.id, followee.id)
    if await is_blocked(session, follower.id, followee.id):
        raise Forbidden("you cannot follow this user", code="blocked")
    result = await session.execute(_insert_ignore(session, Follow).values(
        follower_id=follower.id, followee_id=followee.id, created_at=utcnow()))
    changed = result.rowcount == 1
    if changed:
        for user_id, column in sorted(((followee.id, "follower_count"), (follower.id, "following_count"))):
            await _bump(session, user_id, column, +1)
        session.add(InteractionEvent(kind="follow", user_id=follower.id, creator_id=followee.id,
                                     video_id=video_id, region=follower.region))
        from clipfeed.feed import events as feed_events

        feed_events.publish(session, "follow", user_id=follower.id, creator_id=followee.id)
        from clipfeed.social.notifications import notify

        await notify(session, followee.id, "follow", actor_id=follower.id)
        await session.flush()
    followers, following = await _counts(session, follower.id, followee.id)
    return FollowState(True, changed, followers, following)


async def unfollow(session: AsyncSession, follower: User, followee_id: str) -> FollowState:
    """Stop following (idempotent; allowed whatever the block state)."""
    if followee_id == follower.id:
        raise ValidationFailed("you cannot follow yourself", field="user_id")
    followee = await _target(session, followee_id)
    await _lock_pair(session, follower.id, followee.id)
    changed = await _remove_follow(session, follower.id, followee.id)
    if changed:
        session.add(InteractionEvent(kind="unfollow", user_id=follower.id, creator_id=followee.id,
                                     region=follower.region))
        from clipfeed.feed import events as feed_events

        feed_events.publish(session, "unfollow", user_id=follower.id, creator_id=followee.id)
        await session.flush()
    followers, following = await _counts(session, follower.id, followee.id)
    return FollowState(False, changed, followers, following)


async def block(session: AsyncSession, blocker: User, blocked_id: str) -> bool:
    """Block a user (idempotent): follows between the two are removed both ways, counters fixed.
    Returns whether a new block was recorded."""
    if blocked_id == blocker.id:
        raise ValidationFailed("you cannot block yourself", field="user_id")
    blocked = await _target(session, blocked_id)
    await _lock_pair(session, blocker.id, blocked.id)
    result = await session.execute(_insert_ignore(session, Block).values(
        blocker_id=blocker.id, blocked_id=blocked.id, created_at=utcnow()))
    await _remove_follow(session, blocker.id, blocked.id)
    await _remove_follow(session, blocked.id, blocker.id)
    return result.rowcount == 1


async def unblock(session: AsyncSession, blocker: User, blocked_id: str) -> bool:
    if blocked_id == blocker.id:
        raise ValidationFailed("you cannot block yourself", field="user_id")
    await _target(session, blocked_id)
    result = await session.execute(delete(Block).where(Block.blocker_id == blocker.id,
                                                       Block.blocked_id == blocked_id))
    return result.rowcount == 1


# ---------------------------------------------------------------------------------------------
# Lists
# ---------------------------------------------------------------------------------------------


def _keyset(query, at_col, id_col, cursor: str | None):
    if cursor:
        created, last_id = decode_cursor(cursor)
        query = query.where(or_(at_col < created, and_(at_col == created, id_col < last_id)))
    return query.order_by(at_col.desc(), id_col.desc())


def _page(rows: list, limit: int) -> tuple[list, str | None]:
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last[1], last[0].id)


async def _visible_user(session: AsyncSession, user_id: str, viewer: User | None) -> User:
    """The user, unless unknown or they blocked the viewer (then 404 alike: no existence leak)."""
    user = await _target(session, user_id)
    if viewer is not None and viewer.id != user.id:
        blocked_by = await session.scalar(select(exists().where(
            Block.blocker_id == user.id, Block.blocked_id == viewer.id)))
        if blocked_by:
            raise NotFound("user not found")
    return user


async def _user_list(session: AsyncSession, viewer: User | None, query, at_col, id_col, *, limit: int,
                     cursor: str | None) -> tuple[list[tuple[User, object]], str | None]:
    if viewer is not None:
        query = query.where(~blocked_clause(viewer.id, User.id))
    rows = [(row[0], row[1]) for row in (await session.execute(
        _keyset(query, at_col, id_col, cursor).limit(limit + 1))).all()]
    return _page(rows, limit)


async def list_followers(session: AsyncSession, user_id: str, viewer: User | None, *, limit: int,
                         cursor: str | None) -> tuple[list[tuple[User, object]], str | None]:
    """[(follower, followed_at)], newest first."""
    user = await _visible_user(session, user_id, viewer)
    query = select(User, Follow.created_at).join(Follow, Follow.follower_id == User.id) \
        .where(Follow.followee_id == user.id)
    return await _user_list(session, viewer, query, Follow.created_at, Follow.follower_id, limit=limit, cursor=cursor)


async def list_following(session: AsyncSession, user_id: str, viewer: User | None, *, limit: int,
                         cursor: str | None) -> tuple[list[tuple[User, object]], str | None]:
    """[(followee, followed_at)], newest first."""
    user = await _visible_user(session, user_id, viewer)
    query = select(User, Follow.created_at).join(Follow, Follow.followee_id == User.id) \
        .where(Follow.follower_id == user.id)
    return await _user_list(session, viewer, query, Follow.created_at, Follow.followee_id, limit=limit, cursor=cursor)


async def list_blocks(session: AsyncSession, user: User, *, limit: int,
                      cursor: str | None) -> tuple[list[tuple[User, object]], str | None]:
    """[(blocked user, blocked_at)], newest first."""
    query = select(User, Block.created_at).join(Block, Block.blocked_id == User.id) \
        .where(Block.blocker_id == user.id)
    rows = [(row[0], row[1]) for row in (await session.execute(
        _keyset(query, Block.created_at, Block.blocked_id, cursor).limit(limit + 1))).all()]
    return _page(rows, limit)


def user_summary(user: User) -> dict:
    return {"id": user.id, "handle": user.handle, "display_name": user.display_name,
            "follower_count": user.follower_count, "following_count": user.following_count}

