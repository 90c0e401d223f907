"""Chat rules: who may write, what a message becomes (emotes, badges), flood control, moderation.

The WebSocket plumbing (rooms, fan-out, connections) lives in ``chat.py``; everything here is
plain functions over a session or a small state object, so the rules are testable on their own.

Flood control is a sliding window (``live_chat_rate`` messages per ``live_chat_window_s``)
plus slow mode, per (stream, user): in this process when embedded, in Redis (one Lua script,
atomic) at scale so a user cannot double their allowance by opening sockets on two servers.
Only accepted messages count.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.db.base import utcnow
from clipfeed.errors import ClipfeedError, Conflict, Forbidden, NotFound, ValidationFailed
from clipfeed.live.models import ChatBan, ChatMessage, ChatModerator, LiveStatus, LiveStream, StreamerEmote
from clipfeed.social import graph

# The global emote set: ``:name:`` anywhere in chat becomes this emoji.
GLOBAL_EMOTES: dict[str, str] = {
    "heart": "\u2764\ufe0f", "fire": "\U0001f525", "joy": "\U0001f602", "clap": "\U0001f44f",
    "wave": "\U0001f44b", "100": "\U0001f4af", "eyes": "\U0001f440", "pog": "\U0001f62e",
    "sad": "\U0001f622", "thumbsup": "\U0001f44d", "party": "\U0001f389", "skull": "\U0001f480",
    "laugh": "\U0001f923", "cool": "\U0001f60e", "gg": "\U0001f3c6", "rocket": "\U0001f680",
}
EMOTE_NAME = re.compile(r"^[a-z0-9_]{2,32}$")
_EMOTE_TOKEN = re.compile(r":([A-Za-z0-9_]{2,32}):")
EMOTE_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"GIF87a": "image/gif", b"GIF89a": "image/gif"}
MAX_EMOTE_BYTES = 64 * 1024
MAX_BANNED_WORDS = 200


class ChatRefused(ClipfeedError):
    """A chat frame the server drops; becomes an error frame, never closes the room."""

    status = 400
    code = "chat_refused"

    def __init__(self, code: str, message: str, *, retry_after: float | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


# --- room state ------------------------------------------------------------------------------

@dataclass
class RoomState:
    """What a room needs to judge a message without a query: refreshed on join and by the
    control events every moderation/setting change broadcasts."""

    stream_id: str
    owner_id: str
    status: str
    slow_mode_s: int
    banned_words: set[str]
    moderators: set[str]
    emotes: dict[str, str]  # streamer emote name -> url
    banned_re: re.Pattern | None = field(default=None)

    def refresh_words(self, deployment_words: list[str]) -> None:
        words = {w.strip().lower() for w in deployment_words if w.strip()} | set(self.banned_words)
        self.banned_re = re.compile(r"(?<!\w)(" + "|".join(sorted(map(re.escape, words), key=len, reverse=True))
                                    + r")(?!\w)", re.IGNORECASE) if words else None


def emote_url(emote_id: str) -> str:
    return f"/api/v1/live/emotes/{emote_id}"


async def load_room(session: AsyncSession, settings: Settings, stream: LiveStream) -> RoomState:
    moderators = set((await session.scalars(select(ChatModerator.user_id).where(
        ChatModerator.channel_id == stream.owner_id))).all())
    emotes = {e.name: emote_url(e.id) for e in (await session.scalars(select(StreamerEmote).where(
        StreamerEmote.channel_id == stream.owner_id))).all()}
    state = RoomState(stream.id, stream.owner_id, stream.status, stream.slow_mode_s,
                      {w.lower() for w in (stream.banned_words or [])}, moderators, emotes)
    state.refresh_words(settings.live_chat_banned_words)
    return state


@dataclass
class Chatter:
    """One signed-in writer in one room (anonymous readers have none)."""

    user_id: str
    handle: str
    display_name: str
    follower: bool
    muted_until: datetime | None = None  # timeout end
    banned: bool = False


async def load_chatter(session: AsyncSession, state: RoomState, user: User) -> Chatter:
    following = await graph.is_following(session, user.id, state.owner_id) if user.id != state.owner_id else False
    chatter = Chatter(user.id, user.handle, user.display_name, following)
    ban = await session.get(ChatBan, (state.owner_id, user.id))
    if ban is not None:
        if ban.expires_at is None:
            chatter.banned = True
        elif ban.expires_at > utcnow():
            chatter.muted_until = ban.expires_at
    return chatter


def is_moderator(state: RoomState, user_id: str) -> bool:
    return user_id == state.owner_id or user_id in state.moderators


def badges(state: RoomState, chatter: Chatter) -> list[str]:
    out = []
    if chatter.user_id == state.owner_id:
        out.append("streamer")
    elif chatter.user_id in state.moderators:
        out.append("moderator")
    if chatter.follower:
        out.append("follower")
    return out


def parts(state: RoomState, text: str) -> list[dict]:
    """Split text into text and emote parts; unknown ``:names:`` stay text."""
    out: list[dict] = []
    position = 0
    for match in _EMOTE_TOKEN.finditer(text):
        name = match.group(1)
        emote: dict | None = None
        if name in state.emotes:  # the streamer's own emote wins over a global one of that name
            emote = {"type": "emote", "name": name, "url": state.emotes[name]}
        elif name in GLOBAL_EMOTES:
            emote = {"type": "emote", "name": name, "emoji": GLOBAL_EMOTES[name]}
        if emote is None:
            continue
        if match.start() > position:
            out.append({"type": "text", "text": text[position:match.start()]})
        out.append(emote)
        position = match.end()
    if position < len(text):
        out.append({"type": "text", "text": text[position:]})
    return out


_last_id = [0, 0]  # (ms, sequence) of the last id made by this process


def new_message_id() -> str:
    """Time-ordered and unique: strictly increasing within a process (a sequence number breaks
    ties inside one millisecond), by millisecond across processes, random tail against clashes."""
    ms = int(time.time() * 1000)
    if ms <= _last_id[0]:
        ms, seq = _last_id[0], _last_id[1] + 1
    else:
        seq = 0
    _last_id[0], _last_id[1] = ms, seq
    return f"{ms:013d}{seq:04d}{secrets.token_hex(4)}"


def check_message(settings: Settings, state: RoomState, chatter: Chatter | None, text) -> str:
    """Everything but flood control; returns the cleaned text or raises ChatRefused."""
    if chatter is None:
        raise ChatRefused("sign_in_required", "sign in to chat")
    if chatter.banned:
        raise ChatRefused("banned", "you are banned from this chat")
    if chatter.muted_until is not None:
        remaining = (chatter.muted_until - utcnow()).total_seconds()
        if remaining > 0:
            raise ChatRefused("timed_out", f"you are timed out for {int(remaining) + 1} more seconds",
                              retry_after=remaining)
        chatter.muted_until = None
    if state.status == LiveStatus.ENDED:
        raise ChatRefused("stream_ended", "this stream has ended")
    if not isinstance(text, str):
        raise ChatRefused("invalid_message", "text must be a string")
    text = text.strip()
    if not text:
        raise ChatRefused("invalid_message", "the message is empty")
    if len(text) > settings.live_chat_max_chars:
        raise ChatRefused("message_too_long", f"messages are limited to {settings.live_chat_max_chars} characters")
    if any(ord(ch) < 32 and ch not in "\t" for ch in text):
        raise ChatRefused("invalid_message", "control characters are not allowed")
    if state.banned_re is not None and state.banned_re.search(text):
        raise ChatRefused("banned_word", "the message contains a word this chat does not allow")
    return text


def build_frame(state: RoomState, chatter: Chatter, text: str, nonce: str | None) -> dict:
    frame = {
        "type": "message", "id": new_message_id(), "stream_id": state.stream_id,
        "user": {"id": chatter.user_id, "handle": chatter.handle, "display_name": chatter.display_name},
        "badges": badges(state, chatter), "text": text, "parts": parts(state, text),
        "at": utcnow().isoformat(),
    }
    if nonce is not None:
        frame["nonce"] = nonce
    return frame


async def store_messages(session: AsyncSession, frames: list[dict]) -> None:
    session.add_all([ChatMessage(id=frame["id"], stream_id=frame["stream_id"], user_id=frame["user"]["id"],
                                 text=frame["text"], frame={k: v for k, v in frame.items() if k != "nonce"},
                                 deleted=False) for frame in frames])
    await session.flush()


async def backlog(session: AsyncSession, stream_id: str, limit: int, after: str | None = None) -> list[dict]:
    """The last `limit` messages; with `after` (a message id the client saw last: it is
    rejoining), the first `limit` messages after it, oldest first either way."""
    query = select(ChatMessage.frame).where(ChatMessage.stream_id == stream_id, ChatMessage.deleted.is_(False))
    if after is not None:
        rows = (await session.scalars(query.where(ChatMessage.id > after).order_by(ChatMessage.id).limit(limit))).all()
        return list(rows)
    rows = (await session.scalars(query.order_by(ChatMessage.id.desc()).limit(limit))).all()
    return list(reversed(rows))


# --- flood control -----------------------------------------------------------------------------

# KEYS[1] = sliding log (zset of accept times), KEYS[2] = last accepted time
# ARGV = now, window, limit, slow_s, member  ->  {0, 0} accepted | {1, wait} rate | {2, wait} slow
_FLOOD_SCRIPT = """
local now = tonumber(ARGV[1]); local window = tonumber(ARGV[2]); local limit = tonumber(ARGV[3])
local slow = tonumber(ARGV[4])
if slow > 0 then
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  if now - last < slow then return {2, tostring(slow - (now - last))} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {1, tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('EXPIRE', KEYS[1], math.ceil(window) + 1)
redis.call('SET', KEYS[2], now, 'EX', math.max(slow, 1) + 1)
return {0, '0'}
"""


class FloodControl:
    """Per (stream, user) sliding-window rate limit and slow mode."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._logs: dict[tuple[str, str], deque[float]] = {}
        self._redis = None
        if settings.redis_url:
            import redis.asyncio as redis_asyncio

            self._redis = redis_asyncio.Redis.from_url(settings.redis_url, client_name="clipfeed-chat")
            self._script = self._redis.register_script(_FLOOD_SCRIPT)
        self._prefix = f"clipfeed:{settings.queue_name}:chat:"

    async def aclose(self) -> None:
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.aclose()

    async def admit(self, stream_id: str, user_id: str, *, slow_mode_s: int) -> None:
        window, limit = self.settings.live_chat_window_s, self.settings.live_chat_rate
        now = time.time()
        if self._redis is not None:
            base = f"{self._prefix}{stream_id}:{user_id}"
            verdict, wait = await self._script(keys=[base + ":log", base + ":last"],
                                               args=[now, window, limit, slow_mode_s, f"{now}:{secrets.token_hex(4)}"])
            verdict, wait = int(verdict), float(wait)
        else:
            verdict, wait = self._admit_local(stream_id, user_id, now, window, limit, slow_mode_s)
        if verdict == 1:
            raise ChatRefused("rate_limited", f"at most {limit} messages per {window} seconds; slow down",
                              retry_after=wait)
        if verdict == 2:
            raise ChatRefused("slow_mode", f"slow mode is on: one message every {slow_mode_s} seconds",
                              retry_after=wait)

    def _admit_local(self, stream_id, user_id, now, window, limit, slow_s) -> tuple[int, float]:
        log = self._logs.setdefault((stream_id, user_id), deque())
        if slow_s > 0 and log and now - log[-1] < slow_s:
            return 2, slow_s - (now - log[-1])
        while log and log[0] <= now - window:
            log.popleft()
        if len(log) >= limit:
            return 1, log[0] + window - now
        log.append(now)
        if len(self._logs) > 100_000:
            self._logs = {k: v for k, v in self._logs.items() if v and v[-1] > now - max(window, slow_s)}
        return 0, 0.0

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


# --- moderation --------------------------------------------------------------------------------

def require_moderator(state: RoomState, actor_id: str) -> None:
    if not is_moderator(state, actor_id):
        raise ChatRefused("forbidden", "only the streamer and moderators can do this")


def _check_target(state: RoomState, actor_id: str, target_id) -> str:
    if not isinstance(target_id, str) or not target_id or len(target_id) > 32:
        raise ChatRefused("invalid_message", "user_id is required")
    if target_id == state.owner_id:
        raise ChatRefused("forbidden", "the streamer cannot be moderated in their own chat")
    if target_id in state.moderators and actor_id != state.owner_id:
        raise ChatRefused("forbidden", "only the streamer can moderate a moderator")
    if target_id == actor_id:
        raise ChatRefused("forbidden", "you cannot moderate yourself")
    return target_id


async def delete_message(session: AsyncSession, state: RoomState, actor_id: str, message_id) -> dict:
    require_moderator(state, actor_id)
    if not isinstance(message_id, str) or len(message_id) > 32:
        raise ChatRefused("invalid_message", "message_id is required")
    result = await session.execute(update(ChatMessage).where(
        ChatMessage.id == message_id, ChatMessage.stream_id == state.stream_id).values(deleted=True)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise ChatRefused("not_found", "no such message in this chat")
    return {"type": "message_deleted", "id": message_id, "by": actor_id}


async def restrict(session: AsyncSession, settings: Settings, state: RoomState, actor_id: str, target_id,
                   *, seconds=None, reason="") -> dict:
    """A timeout (seconds) or a ban (seconds None) from this channel's chat; replaces an earlier one."""
    require_moderator(state, actor_id)
    target_id = _check_target(state, actor_id, target_id)
    if await session.get(User, target_id) is None:
        raise ChatRefused("not_found", "no such user")
    expires = None
    if seconds is not None:
        if type(seconds) is not int or not 1 <= seconds <= settings.live_chat_max_timeout_s:
            raise ChatRefused("invalid_message", f"seconds must be 1..{settings.live_chat_max_timeout_s}")
        expires = utcnow() + timedelta(seconds=seconds)
    reason = str(reason or "")[:200]
    ban = await session.get(ChatBan, (state.owner_id, target_id))
    if ban is None:
        session.add(ChatBan(channel_id=state.owner_id, user_id=target_id, expires_at=expires, by_id=actor_id,
                            reason=reason))
    else:
        ban.expires_at, ban.by_id, ban.reason, ban.created_at = expires, actor_id, reason, utcnow()
    await session.flush()
    if expires is None:
        return {"type": "user_banned", "user_id": target_id, "by": actor_id}
    return {"type": "user_timed_out", "user_id": target_id, "until": expires.isoformat(), "seconds": seconds,
            "by": actor_id}


async def lift(session: AsyncSession, state: RoomState, actor_id: str, target_id) -> dict:
    require_moderator(state, actor_id)
    target_id = _check_target(state, actor_id, target_id)
    await session.execute(delete(ChatBan).where(ChatBan.channel_id == state.owner_id, ChatBan.user_id == target_id))
    return {"type": "user_unbanned", "user_id": target_id, "by": actor_id}


async def set_slow_mode(session: AsyncSession, settings: Settings, state: RoomState, actor_id: str, seconds) -> dict:
    require_moderator(state, actor_id)
    if type(seconds) is not int or not 0 <= seconds <= settings.live_chat_max_slow_mode_s:
        raise ChatRefused("invalid_message", f"seconds must be 0..{settings.live_chat_max_slow_mode_s}")
    await session.execute(update(LiveStream).where(LiveStream.id == state.stream_id).values(slow_mode_s=seconds)
                          .execution_options(synchronize_session=False))
    return {"type": "slow_mode", "seconds": seconds, "by": actor_id}


# --- channel settings over HTTP (the streamer) ----------------------------------------------------

async def appoint_moderator(session: AsyncSession, stream: LiveStream, user_id: str) -> dict:
    if user_id == stream.owner_id:
        raise ValidationFailed("the streamer moderates their chat already", field="user_id")
    if await session.get(User, user_id) is None:
        raise NotFound("user not found")
    if await session.get(ChatModerator, (stream.owner_id, user_id)) is None:
        session.add(ChatModerator(channel_id=stream.owner_id, user_id=user_id))
        await session.flush()
    return {"type": "moderator_added", "user_id": user_id}


async def remove_moderator(session: AsyncSession, stream: LiveStream, user_id: str) -> dict:
    await session.execute(delete(ChatModerator).where(ChatModerator.channel_id == stream.owner_id,
                                                      ChatModerator.user_id == user_id))
    return {"type": "moderator_removed", "user_id": user_id}


async def list_moderators(session: AsyncSession, stream: LiveStream) -> list[User]:
    return list((await session.scalars(select(User).join(ChatModerator, ChatModerator.user_id == User.id)
                                       .where(ChatModerator.channel_id == stream.owner_id)
                                       .order_by(ChatModerator.created_at))).all())


def validate_banned_words(words: list[str]) -> list[str]:
    cleaned = sorted({w.strip().lower() for w in words if w.strip()})
    if len(cleaned) > MAX_BANNED_WORDS or any(len(w) > 40 for w in cleaned):
        raise ValidationFailed(f"at most {MAX_BANNED_WORDS} words of up to 40 characters", field="banned_words")
    return cleaned


def sniff_emote(data: bytes) -> str:
    if len(data) > MAX_EMOTE_BYTES:
        raise ValidationFailed(f"emote images are limited to {MAX_EMOTE_BYTES} bytes", field="image")
    for magic, content_type in EMOTE_TYPES.items():
        if data.startswith(magic):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValidationFailed("emote images must be PNG, GIF or WebP", field="image")


async def add_emote(session: AsyncSession, store, stream: LiveStream, name: str, data: bytes) -> StreamerEmote:
    name = (name or "").strip().lower()
    if not EMOTE_NAME.match(name):
        raise ValidationFailed("emote names are 2-32 characters of a-z, 0-9 and _", field="name")
    content_type = sniff_emote(data)
    existing = await session.scalar(select(StreamerEmote).where(StreamerEmote.channel_id == stream.owner_id,
                                                                StreamerEmote.name == name))
    if existing is not None:
        raise Conflict(f"you already have an emote :{name}:", code="emote_exists")
    emote = StreamerEmote(channel_id=stream.owner_id, name=name, content_type=content_type, blob_key="")
    session.add(emote)
    await session.flush()
    emote.blob_key = f"live/emotes/{emote.id}"

    async def body():
        yield data

    await store.put(emote.blob_key, body())
    await session.flush()
    return emote


async def remove_emote(session: AsyncSession, store, stream: LiveStream, name: str) -> StreamerEmote:
    emote = await session.scalar(select(StreamerEmote).where(StreamerEmote.channel_id == stream.owner_id,
                                                             StreamerEmote.name == (name or "").lower()))
    if emote is None:
        raise NotFound("no such emote")
    await session.delete(emote)
    await session.flush()
    return emote


async def list_emotes(session: AsyncSession, channel_id: str) -> list[StreamerEmote]:
    return list((await session.scalars(select(StreamerEmote).where(StreamerEmote.channel_id == channel_id)
                                       .order_by(StreamerEmote.name))).all())


def require_streamer(stream: LiveStream, user: User) -> None:
    if stream.owner_id != user.id:
        raise Forbidden("only the streamer can do this")
