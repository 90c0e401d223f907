"""Notifications: stored rows (the inbox) plus a live push to connected clients.

Every notification is a row first. After the transaction that wrote it commits, its JSON is
published on the recipient's live channel (clipfeed.events.pubsub: in-process when embedded,
Redis pub/sub when scaled out), where the Server-Sent Events stream picks it up. The stream also
polls the table every few seconds for rows it has not sent, which covers a publisher in another
process without Redis (a `clipfeed worker` on SQLite) and a message lost in transit; and a
reconnecting client's ``Last-Event-ID`` replays what it missed.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.db import Database, on_commit
from clipfeed.db.base import utcnow
from clipfeed.events.pubsub import live_channels
from clipfeed.pagination import decode_cursor, encode_cursor
from clipfeed.social import graph
from clipfeed.social.models import Notification

KINDS = ("like", "comment", "reply", "follow", "mention", "video_ready", "video_rejected")

# Server-Sent Events timing.
RETRY_MS = 3000          # how long a browser waits before reconnecting
HEARTBEAT_S = 15.0       # a comment line keeps proxies and load balancers from closing the stream
POLL_S = 2.0             # fallback read of the table
LOOKBACK_S = 60.0        # how far back a poll looks for rows committed late (long transactions)
MAX_REPLAY = 200         # rows replayed after Last-Event-ID


def channel_name(settings: Settings, user_id: str) -> str:
    return live_channels(settings).channel("notifications", user_id)


def notification_out(notification: Notification, actor: User | None) -> dict:
    return {
        "id": notification.id,
        "kind": notification.kind,
        "actor": None if actor is None else {"id": actor.id, "handle": actor.handle,
                                              "display_name": actor.display_name},
        "video_id": notification.video_id,
        "comment_id": notification.comment_id,
        "text": notification.text,
        "read": notification.read_at is not None,
        "created_at": notification.created_at.isoformat(),
    }


async def notify(session: AsyncSession, user_id: str, kind: str, *, actor_id: str | None = None,
                 video_id: str | None = None, comment_id: str | None = None, text: str = "") -> Notification | None:
    """Record a notification for user_id (never for one's own action, never across a block) and
    push it live once the surrounding transaction commits."""
    if actor_id is not None and actor_id == user_id:
        return None
    if actor_id is not None and await graph.is_blocked(session, user_id, actor_id):
        return None
    notification = Notification(user_id=user_id, kind=kind, actor_id=actor_id, video_id=video_id,
                                comment_id=comment_id, text=(text or "")[:280], created_at=utcnow())
    session.add(notification)
    await session.flush()
    settings = session.info.get("settings")
    if settings is not None:
        actor = await session.get(User, actor_id) if actor_id else None
        payload = notification_out(notification, actor)
        channels = live_channels(settings)
        channel = channel_name(settings, user_id)
        on_commit(session, lambda: channels.publish(channel, payload))
    return notification


def _visible(user_id: str):
    """Notifications from someone on either side of a block stay hidden."""
    return or_(Notification.actor_id.is_(None), ~graph.blocked_clause(user_id, Notification.actor_id))


async def unread_count(session: AsyncSession, user_id: str) -> int:
    return int(await session.scalar(select(func.count()).select_from(Notification).where(
        Notification.user_id == user_id, Notification.read_at.is_(None), _visible(user_id))) or 0)


async def list_notifications(session: AsyncSession, user: User, *, limit: int,
                             cursor: str | None) -> tuple[list[dict], str | None]:
    """The inbox, newest first."""
    query = select(Notification, User).outerjoin(User, User.id == Notification.actor_id) \
        .where(Notification.user_id == user.id, _visible(user.id))
    if cursor:
        created, last_id = decode_cursor(cursor)
        query = query.where(or_(Notification.created_at < created,
                                and_(Notification.created_at == created, Notification.id < last_id)))
    rows = (await session.execute(query.order_by(Notification.created_at.desc(), Notification.id.desc())
                                  .limit(limit + 1))).all()
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1][0]
        next_cursor = encode_cursor(last.created_at, last.id)
    return [notification_out(n, actor) for n, actor in rows[:limit]], next_cursor


async def mark_read(session: AsyncSession, user: User, *, ids: list[str] | None, everything: bool) -> int:
    """Mark some (ids; others' ids are ignored) or all of the user's notifications read."""
    query = update(Notification).where(Notification.user_id == user.id, Notification.read_at.is_(None))
    if not everything:
        if not ids:
            return 0
        query = query.where(Notification.id.in_(set(ids)))
    result = await session.execute(query.values(read_at=utcnow()).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


# ---------------------------------------------------------------------------------------------
# The live stream (Server-Sent Events)
# ---------------------------------------------------------------------------------------------


def sse_frame(item: dict) -> bytes:
    data = json.dumps(item, separators=(",", ":"))  # one line: json.dumps escapes newlines
    return f"id: {item['id']}\nevent: notification\ndata: {data}\n\n".encode()


async def _rows_after(db: Database, user_id: str, after: tuple[datetime, str], *,
                      not_before: datetime | None, limit: int) -> list[dict]:
    """The user's notifications after the keyset `after`, oldest first."""
    at, row_id = after
    query = select(Notification, User).outerjoin(User, User.id == Notification.actor_id).where(
        Notification.user_id == user_id, _visible(user_id),
        or_(Notification.created_at > at, and_(Notification.created_at == at, Notification.id > row_id)))
    if not_before is not None:
        query = query.where(Notification.created_at > not_before)
    async with db.transaction() as session:
        rows = (await session.execute(query.order_by(Notification.created_at, Notification.id).limit(limit))).all()
    return [notification_out(n, actor) for n, actor in rows]


async def _anchor(db: Database, user_id: str, last_event_id: str) -> tuple[datetime, str] | None:
    async with db.transaction() as session:
        row = (await session.execute(select(Notification.created_at, Notification.id).where(
            Notification.id == last_event_id, Notification.user_id == user_id))).first()
    return (row.created_at, row.id) if row is not None else None


class _Sent:
    """Ids already sent on this stream (bounded), so live pushes and polls never repeat one."""

    def __init__(self) -> None:
        self._ids: dict[str, float] = {}

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._ids

    def add(self, item_id: str) -> None:
        self._ids[item_id] = time.monotonic()
        if len(self._ids) > 2000:
            cutoff = time.monotonic() - 2 * LOOKBACK_S
            self._ids = {k: v for k, v in self._ids.items() if v > cutoff}


async def stream(db: Database, settings: Settings, user_id: str, last_event_id: str | None) -> AsyncIterator[bytes]:
    """The user's notifications as they happen, as SSE frames (plus replay after Last-Event-ID)."""
    floor = (utcnow(), "")
    channels = live_channels(settings)
    async with channels.subscribe(channel_name(settings, user_id)) as live:
        yield f"retry: {RETRY_MS}\n: connected\n\n".encode()
        sent = _Sent()
        if last_event_id:
            anchor = await _anchor(db, user_id, last_event_id)
            if anchor is not None:
                floor = anchor
                for item in await _rows_after(db, user_id, floor, not_before=None, limit=MAX_REPLAY):
                    sent.add(item["id"])
                    yield sse_frame(item)
        now = time.monotonic()
        next_poll, next_beat = now + POLL_S, now + HEARTBEAT_S
        while True:
            wait = max(0.01, min(next_poll, next_beat) - time.monotonic())
            item = await live.get(timeout=wait)
            if item is not None and item.get("id") not in sent:
                sent.add(item["id"])
                yield sse_frame(item)
            now = time.monotonic()
            if now >= next_poll:
                not_before = utcnow() - timedelta(seconds=LOOKBACK_S)
                for row in await _rows_after(db, user_id, floor, not_before=not_before, limit=100):
                    if row["id"] not in sent:
                        sent.add(row["id"])
                        yield sse_frame(row)
                next_poll = time.monotonic() + POLL_S
            if now >= next_beat:
                yield b": heartbeat\n\n"
                next_beat = now + HEARTBEAT_S
