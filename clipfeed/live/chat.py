"""``WS /api/v1/live/{stream_id}/chat``: rooms, connections and fan-out.

Anyone who may see the stream reads; signed-in users (session cookie, ``?token=`` or Bearer)
write. Client frames are JSON objects with a ``type``: ``message`` {text, nonce?}, ``delete``
{message_id}, ``timeout`` {user_id, seconds, reason?}, ``ban`` {user_id, reason?}, ``unban``
{user_id}, ``slow_mode`` {seconds}, ``ping``. The server sends ``hello``, ``backlog`` (the last
messages), ``message``, moderation/settings events and ``error`` {code, message, retry_after?,
nonce?}. A bad frame only ever costs its sender an error frame.

Fan-out: every accepted message or event is published once on the stream's channel
(``events.pubsub``: in-process broker embedded, Redis pub/sub at scale). Each server process
keeps one room per stream with one subscription. The room takes the next message plus whatever
else arrived while it was busy (no added delay when it keeps up), serializes them once, builds one
WebSocket frame (a JSON object, or an array of objects in order) and writes the same bytes to every
socket's transport (``chat_wire``: no ASGI layers, no per-socket compression; the ASGI path is
kept for other servers). A socket that cannot take it now (its own writer is sending an error
frame or a backlog, or its buffers are above the high-water mark) gets the messages in its queue
instead, in order; its writer sends everything queued as one frame when it can. A socket whose
queue passes ``live_chat_client_queue`` messages is closed (1013) behind what it has not read; the
client rejoins with ``?after=<last message id>`` and gets what it missed from the table. The room
never waits for a slow client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from clipfeed.accounts import service as accounts
from clipfeed.deps import SESSION_COOKIE
from clipfeed.errors import NotFound
from clipfeed.events.pubsub import live_channels
from clipfeed.live import chat_service as cs
from clipfeed.live import chat_wire
from clipfeed.live import service as live

log = logging.getLogger("clipfeed.live.chat")

router = APIRouter(tags=["live chat"])

MAX_FRAME_CHARS = 8192
_SHUTDOWN = None
DIRECT_SEND_S = 0.05  # longest the room waits on one socket's full buffers (ASGI path)
# Messages per frame at most (a room, or a reader, that fell behind): <= ~45 KB even with the
# longest messages, below the transport's 64 KB high-water mark (one frame alone never makes a
# reading client look stuck) and far below clients' message size limits (websockets: 1 MiB).
MAX_BATCH = 64
REJOIN_MAX_MESSAGES = 2000  # what a client rejoining with ?after= gets at most (~0.6 MB)
CLOSE_GRACE_S = 10.0  # a client cut off for not reading has this long to read the rest and leave
SEND_BUFFER_BYTES = 64 * 1024  # kernel send buffer per chat socket (see chat_wire.limit_send_buffer)
SAVE_DELAY_S = 0.05  # accepted messages reach the database in batches at most this late


def _dumps(message: dict) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def _batch_text(texts: list[str]) -> str:
    """One message is sent as its JSON object; several as a JSON array of them, in order."""
    return texts[0] if len(texts) == 1 else "[" + ",".join(texts) + "]"


class Connection:
    def __init__(self, ws: WebSocket, chatter: cs.Chatter | None, viewer_key: str, limit: int):
        self.ws = ws
        # uvicorn's protocol when the room may write pre-built frames to it (chat_wire), else None.
        self.protocol = chat_wire.protocol_of(ws.scope)
        self.chatter = chatter
        self.viewer_key = viewer_key
        # What the writer task still has to send, in order: a control frame's text (str), a list
        # of chat message texts (merged with its neighbours into one frame when sent), or
        # _SHUTDOWN. Bounded by `limit` chat messages.
        self.pending: deque[str | list[str] | None] = deque()
        self.pending_messages = 0
        self.limit = limit
        self.wake = asyncio.Event()
        self.skip_ids: set[str] = set()
        self.writer: asyncio.Task | None = None
        self.dropped = False
        self.sending = False

    def offer(self, item: str | list[str] | None) -> None:
        if self.dropped:
            return
        if isinstance(item, list):
            self.pending_messages += len(item)
            if self.pending_messages > self.limit:
                self._overflow()
                return
        self.pending.append(item)
        self.wake.set()

    def _overflow(self) -> None:
        """The client has not read `limit` messages (beyond what its TCP buffers hold): it is
        gone or stuck. Never wait for it and never skip messages silently: disconnect it (1013);
        the page rejoins with ?after=<last message id> and gets what it missed from the table."""
        self.dropped = True
        self.pending.clear()
        self.pending_messages = 0
        if self.writer is not None:
            self.writer.cancel()
        log.info("chat client %s cut off: %d messages behind", self.viewer_key[:12], self.limit)
        asyncio.get_running_loop().create_task(self._close(1013, "too slow; rejoin"))

    def error(self, exc: cs.ChatRefused, nonce: str | None = None) -> None:
        frame = {"type": "error", "code": exc.code, "message": exc.message}
        if exc.retry_after is not None:
            frame["retry_after"] = round(max(0.0, exc.retry_after), 3)
        if nonce is not None:
            frame["nonce"] = nonce
        self.offer(_dumps(frame))

    async def _close(self, code: int, reason: str) -> None:
        protocol = self.protocol
        if protocol is not None and not protocol.writable.is_set():
            chat_wire.close_behind(protocol, code, reason, grace_s=CLOSE_GRACE_S)
            return
        try:
            if self.ws.application_state == WebSocketState.CONNECTED:
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await self.ws.close(code=code, reason=reason)
        except Exception:  # noqa: BLE001 - already gone, or not reading at all
            chat_wire.abort(protocol)

    async def write_loop(self) -> None:
        pending = self.pending
        while True:
            while not pending:
                self.wake.clear()
                await self.wake.wait()
            item = pending.popleft()
            if item is _SHUTDOWN:
                return
            if isinstance(item, list):
                # Everything queued behind it goes out in the same frame: a reader that fell
                # behind catches up in one send, not one per message.
                texts = list(item)
                while pending and isinstance(pending[0], list) and len(texts) + len(pending[0]) <= MAX_BATCH:
                    texts.extend(pending.popleft())
                self.pending_messages -= len(texts)
                text = _batch_text(texts)
            else:
                text = item
            self.sending = True
            try:
                await self.ws.send_text(text)
            finally:
                self.sending = False

    def idle(self) -> bool:
        """Nothing queued or being written: the room may write to this socket itself."""
        return self.writer is not None and not self.sending and not self.dropped and not self.pending

    async def send_now(self, text: str, texts: list[str]) -> None:
        """The ASGI path, for servers other than uvicorn's sans-I/O protocol: write from the
        room's own task (no task switch per socket). The write completes at once unless the
        socket's buffers are full; if they stay full for DIRECT_SEND_S the messages go to the
        socket's queue and its writer task carries on. uvicorn's WebSocket protocols wait for
        writability before they write anything, so a timed-out write wrote nothing."""
        self.sending = True
        try:
            async with asyncio.timeout(DIRECT_SEND_S):
                await self.ws.send_text(text)
        except TimeoutError:
            self.sending = False
            self.offer(texts)
        except Exception:  # noqa: BLE001 - the client is gone; its reader loop cleans up
            self.dropped = True
        finally:
            self.sending = False

    def apply(self, message: dict) -> None:
        """Moderation events that concern this connection's user."""
        chatter = self.chatter
        if chatter is None or message.get("user_id") != chatter.user_id:
            return
        kind = message.get("type")
        if kind == "user_banned":
            chatter.banned = True
        elif kind == "user_timed_out":
            from datetime import datetime

            chatter.muted_until = datetime.fromisoformat(message["until"])
        elif kind == "user_unbanned":
            chatter.banned, chatter.muted_until = False, None


class Room:
    """This process's listeners on one stream's chat."""

    def __init__(self, app, stream_id: str, state: cs.RoomState):
        self.app = app
        self.settings = app.state.settings
        self.stream_id = stream_id
        self.state = state
        self.connections: set[Connection] = set()
        self.ready = asyncio.Event()
        self.channels = live_channels(self.settings)
        self.channel = self.channels.channel("live", stream_id, "chat")
        self._unsaved: list[dict] = []
        self._saving: asyncio.Task | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"chat-room-{stream_id}")
        self._presence = asyncio.get_running_loop().create_task(self._refresh_presence())

    async def _run(self) -> None:
        try:
            async with self.channels.subscribe(self.channel) as sub:
                await self._confirm(sub)
                self.ready.set()
                while True:
                    message = await sub.get(timeout=3600)
                    if message is None:
                        continue
                    # Whatever else arrived meanwhile (while the last fan-out ran) goes out with
                    # it as one frame: no added delay when the room keeps up, fewer writes per
                    # message when it does not.
                    batch = [m for m in (message, *sub.drain(MAX_BATCH - 1)) if m.get("type") != "_probe"]
                    if batch:
                        await self._deliver(batch)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("chat room %s stopped", self.stream_id)
            for conn in list(self.connections):
                await conn._close(1011, "chat unavailable")

    async def _confirm(self, sub) -> None:
        """Redis acknowledges SUBSCRIBE asynchronously: a message published in between would be
        lost to this room. Hear our own probe before declaring the room ready."""
        probe = {"type": "_probe", "nonce": secrets.token_hex(8)}
        for _ in range(40):
            await self.channels.publish(self.channel, probe)
            deadline = time.monotonic() + 0.5
            while (remaining := deadline - time.monotonic()) > 0:
                message = await sub.get(timeout=remaining)
                if message == probe:
                    return
                if message is not None and message.get("type") != "_probe":
                    await self._deliver([message])
        log.warning("chat room %s: subscription not confirmed; continuing", self.stream_id)

    async def _deliver(self, batch: list[dict]) -> None:
        """Serialize once, frame once, write the same bytes to every socket that can take them now;
        the others get the messages in their queue (in order, merged when they are sent)."""
        events = False
        for message in batch:
            self._apply(message)
            events = events or message.get("type") != "message"
        texts = [_dumps(message) for message in batch]
        ids = [message["id"] for message in batch if message.get("type") == "message"]
        text = _batch_text(texts)
        frame = chat_wire.text_frame(text)
        asgi_only: list[Connection] = []
        for conn in list(self.connections):
            if events:
                for message in batch:
                    conn.apply(message)
            skip = conn.skip_ids
            if skip and ids and not skip.isdisjoint(ids):  # C-level: this runs per socket per message
                # Already in the backlog this socket was sent on joining.
                keep = [t for t, m in zip(texts, batch, strict=True)
                        if not (m.get("type") == "message" and m.get("id") in skip)]
                if keep:
                    conn.offer(keep)
                continue
            if conn.idle():
                if conn.protocol is None:
                    asgi_only.append(conn)
                    continue
                if chat_wire.write(conn.protocol, frame):
                    continue
            conn.offer(texts)
        for conn in asgi_only:
            if conn.idle():
                await conn.send_now(text, texts)
            else:
                conn.offer(texts)

    def _apply(self, message: dict) -> None:
        state, kind = self.state, message.get("type")
        if kind == "slow_mode":
            state.slow_mode_s = int(message.get("seconds", 0))
        elif kind == "moderator_added":
            state.moderators.add(message["user_id"])
        elif kind == "moderator_removed":
            state.moderators.discard(message["user_id"])
        elif kind == "emote_added":
            state.emotes[message["name"]] = message["url"]
        elif kind == "emote_removed":
            state.emotes.pop(message["name"], None)
        elif kind == "banned_words":
            state.banned_words = set(message.get("words", []))
            state.refresh_words(self.settings.live_chat_banned_words)
        elif kind == "stream_ended":
            state.status = "ended"
        elif kind == "stream_live":
            state.status = "live"
        elif kind == "stream_offline":
            state.status = message.get("status", "idle")

    async def _refresh_presence(self) -> None:
        interval = max(1.0, self.settings.live_viewer_ttl_s / 3)
        while True:
            for conn in list(self.connections):
                await live.note_viewer(self.stream_id, conn.viewer_key, self.settings)
            await asyncio.sleep(interval)

    def save(self, frame: dict) -> None:
        """Persist an accepted message soon, batched with its neighbours: the database is off the
        delivery path (one transaction per SAVE_DELAY_S instead of one per message)."""
        self._unsaved.append(frame)
        if self._saving is None or self._saving.done():
            self._saving = asyncio.get_running_loop().create_task(self._save_batches())

    async def _save_batches(self) -> None:
        await asyncio.sleep(SAVE_DELAY_S)
        while self._unsaved:
            batch, self._unsaved = self._unsaved, []
            try:
                async with self.app.state.db.transaction() as session:
                    await cs.store_messages(session, batch)
            except Exception:  # noqa: BLE001 - delivered live already; only the backlog misses them
                log.exception("could not save %d chat messages of %s", len(batch), self.stream_id)

    async def saved(self) -> None:
        """Wait until every message this process accepted is in the database."""
        while self._saving is not None and not self._saving.done():
            await asyncio.shield(self._saving)

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)

    def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            rooms = _rooms(self.app)
            if rooms.get(self.stream_id) is self:
                del rooms[self.stream_id]
            self._task.cancel()
            self._presence.cancel()

    async def publish(self, message: dict) -> None:
        redis = _publisher(self.app)
        if redis is None:
            await self.channels.publish(self.channel, message)
            return
        # At scale, on this loop's own Redis client: events.pubsub publishes through a
        # synchronous client on a worker thread (any thread may publish there), a thread hop per
        # message on the delivery path. Same channel and JSON as events.pubsub; best effort like it.
        try:
            await redis.publish(self.channel, json.dumps(message, separators=(",", ":")))
        except Exception:  # noqa: BLE001 - the message is saved; only live delivery missed it
            log.warning("chat publish on %s failed", self.channel, exc_info=True)


def _rooms(app) -> dict[str, Room]:
    rooms = getattr(app.state, "live_rooms", None)
    if rooms is None:
        rooms = app.state.live_rooms = {}
    return rooms


def _publisher(app):
    """The app's async Redis client for chat publishes, None when embedded."""
    settings = app.state.settings
    if not settings.redis_url:
        return None
    client = getattr(app.state, "live_chat_redis", None)
    if client is None:
        import redis.asyncio as redis_asyncio

        client = app.state.live_chat_redis = redis_asyncio.Redis.from_url(settings.redis_url,
                                                                          client_name="clipfeed-chat")
    return client


async def close_clients(app) -> None:
    """Close the chat's Redis clients at shutdown (publishing, flood control): a collected open
    one warns "unclosed Connection"."""
    publisher = getattr(app.state, "live_chat_redis", None)
    flood = getattr(app.state, "live_flood", None)
    app.state.live_chat_redis = app.state.live_flood = None
    try:
        if publisher is not None:
            await publisher.aclose()
        if flood is not None:
            await flood.aclose()
    except Exception:  # noqa: BLE001 - shutting down
        log.debug("closing the chat's Redis clients failed", exc_info=True)


def _flood(app) -> cs.FloodControl:
    flood = getattr(app.state, "live_flood", None)
    if flood is None:
        flood = app.state.live_flood = cs.FloodControl(app.state.settings)
    return flood


def _ws_token(ws: WebSocket, settings) -> str | None:
    """?token= or Bearer first; the session cookie only from our own pages (a cookie sent by a
    foreign page's WebSocket must not act as the user: cross-site WebSocket hijacking)."""
    token = ws.query_params.get("token")
    if token:
        return token[:200]
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()[:200] or None
    cookie = ws.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    origin = ws.headers.get("origin")
    if origin is None:
        return cookie  # not a browser page (browsers always send Origin on WebSockets)
    host = ws.headers.get("host", "")
    if origin.split("://", 1)[-1] == host or origin in settings.cors_origins:
        return cookie
    return None


def _nonce(data: dict) -> str | None:
    nonce = data.get("nonce")
    return nonce if isinstance(nonce, str) and len(nonce) <= 64 else None


@router.websocket("/api/v1/live/{stream_id}/chat")
async def chat_socket(ws: WebSocket, stream_id: str):
    app = ws.app
    settings, db = app.state.settings, app.state.db
    token = _ws_token(ws, settings)
    stream = state = chatter = running = None
    user = None
    async with db.transaction() as session:
        if token:
            user = await accounts.user_for_token(session, token)
        try:
            stream = await live.get_visible(session, stream_id, user)
        except NotFound:
            stream = None
        if stream is not None:
            # A room already running in this process holds the state, kept current by its
            # subscription: 1,000 viewers joining do not each reload moderators and emotes.
            running = _rooms(app).get(stream_id)
            state = running.state if running is not None else await cs.load_room(session, settings, stream)
            chatter = await cs.load_chatter(session, state, user) if user is not None else None
    await ws.accept()
    if stream is None:
        await ws.send_text(_dumps({"type": "error", "code": "not_found", "message": "stream not found"}))
        await ws.close(code=4404)
        return

    rooms = _rooms(app)
    room = rooms.get(stream_id)
    if room is None:
        if running is not None:  # that room closed meanwhile: its state stopped following events
            async with db.transaction() as session:
                state = await cs.load_room(session, settings, stream)
        room = rooms[stream_id] = Room(app, stream_id, state)
    client_ip = ws.client.host if ws.client else None
    viewer_key = live.viewer_key_for(user.id if user else None, client_ip, ws.headers.get("user-agent"))
    conn = Connection(ws, chatter, viewer_key, settings.live_chat_client_queue)
    if conn.protocol is not None:
        chat_wire.limit_send_buffer(conn.protocol, SEND_BUFFER_BYTES)
    room.add(conn)
    try:
        await room.ready.wait()
        await room.saved()
        await _greet(ws, room, conn, stream_id)
        # The coroutine lives as long as the connection: do not keep what only the join needed.
        stream = user = None
        conn.writer = asyncio.get_running_loop().create_task(conn.write_loop())
        await live.note_viewer(stream_id, viewer_key, settings)
        await _read_loop(app, room, conn)
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ not in ("WebSocketDisconnect", "ConnectionClosed", "ClientDisconnected"):
            log.exception("chat connection failed")
    finally:
        room.remove(conn)
        if conn.writer is not None:
            conn.writer.cancel()


async def _greet(ws: WebSocket, room: Room, conn: Connection, stream_id: str) -> None:
    """Send hello and the backlog. A function of its own so the backlog's message dicts (~1.5 KB
    each, 50 of them) are freed once sent instead of living in the socket's coroutine for as long
    as the viewer stays (~75 KB per viewer, 75 MB for a room of 1,000)."""
    settings, db, chatter = ws.app.state.settings, ws.app.state.db, conn.chatter
    # ?after=<message id>: a client rejoining (e.g. after it was cut off for reading too slowly)
    # gets what it missed, up to REJOIN_MAX_MESSAGES.
    after = ws.query_params.get("after")
    after = after if after and len(after) <= 32 and after.isalnum() else None
    async with db.transaction() as session:
        if after is None:
            frames = await cs.backlog(session, stream_id, settings.live_chat_backlog)
        else:
            frames = await cs.backlog(session, stream_id, REJOIN_MAX_MESSAGES, after=after)
    conn.skip_ids = {frame["id"] for frame in frames}
    room_state = room.state
    you = None
    if chatter is not None:
        you = {"id": chatter.user_id, "handle": chatter.handle, "badges": cs.badges(room_state, chatter),
               "moderator": cs.is_moderator(room_state, chatter.user_id)}
    hello = {"type": "hello", "stream_id": stream_id, "status": room_state.status,
             "slow_mode_s": room_state.slow_mode_s, "you": you,
             "limits": {"messages": settings.live_chat_rate, "window_s": settings.live_chat_window_s,
                        "max_chars": settings.live_chat_max_chars},
             "emotes": [{"name": n, "emoji": e} for n, e in cs.GLOBAL_EMOTES.items()]
             + [{"name": n, "url": u} for n, u in room_state.emotes.items()]}
    await ws.send_text(_dumps(hello))
    await ws.send_text(_dumps({"type": "backlog", "messages": frames}))


async def _read_loop(app, room: Room, conn: Connection) -> None:
    settings = app.state.settings
    recent: deque[float] = deque()
    # Any frames (valid or not) per connection per window before it is cut off: well above what
    # the message limit lets through, so only a client hammering the server reaches it.
    frame_limit = 4 * settings.live_chat_rate + 20
    while True:
        event = await conn.ws.receive()
        if event["type"] == "websocket.disconnect":
            return
        now = time.monotonic()
        recent.append(now)
        while recent and recent[0] < now - settings.live_chat_window_s:
            recent.popleft()
        if len(recent) > frame_limit:
            conn.error(cs.ChatRefused("flood", "too many frames; disconnected"))
            conn.offer(_SHUTDOWN)
            await asyncio.wait_for(asyncio.shield(conn.writer), timeout=5) if conn.writer else None
            await conn._close(1008, "flood")
            return
        text = event.get("text")
        nonce = None
        try:
            if text is None:
                raise cs.ChatRefused("invalid_json", "send JSON text frames")
            if len(text) > MAX_FRAME_CHARS:
                raise cs.ChatRefused("message_too_long", f"messages are limited to {settings.live_chat_max_chars} characters")
            try:
                data = json.loads(text)
            except ValueError:
                raise cs.ChatRefused("invalid_json", "the frame is not valid JSON") from None
            if not isinstance(data, dict):
                raise cs.ChatRefused("invalid_message", "a frame is a JSON object with a type")
            nonce = _nonce(data)
            await _handle(app, room, conn, data, nonce)
        except cs.ChatRefused as refused:
            conn.error(refused, nonce)
        except Exception:  # noqa: BLE001 - one bad frame never takes the room (or the socket) down
            log.exception("chat frame failed")
            conn.error(cs.ChatRefused("internal_error", "that did not work; try again"), nonce)


async def _handle(app, room: Room, conn: Connection, data: dict, nonce: str | None) -> None:
    settings, db = app.state.settings, app.state.db
    kind, state, chatter = data.get("type"), room.state, conn.chatter
    if kind == "ping":
        conn.offer(_dumps({"type": "pong", "nonce": nonce} if nonce else {"type": "pong"}))
        return
    if kind == "message":
        text = cs.check_message(settings, state, chatter, data.get("text"))
        slow = 0 if cs.is_moderator(state, chatter.user_id) else state.slow_mode_s
        await _flood(app).admit(room.stream_id, chatter.user_id, slow_mode_s=slow)
        frame = cs.build_frame(state, chatter, text, nonce)
        await room.publish(frame)
        room.save(frame)
        return
    if kind not in ("delete", "timeout", "ban", "unban", "slow_mode"):
        raise cs.ChatRefused("unknown_type", "unknown frame type")
    if chatter is None:
        raise cs.ChatRefused("sign_in_required", "sign in to moderate")
    actor = chatter.user_id
    if kind == "delete":
        await room.saved()
    async with db.transaction() as session:
        if kind == "delete":
            event = await cs.delete_message(session, state, actor, data.get("message_id"))
        elif kind == "timeout":
            event = await cs.restrict(session, settings, state, actor, data.get("user_id"),
                                      seconds=data.get("seconds"), reason=data.get("reason"))
        elif kind == "ban":
            event = await cs.restrict(session, settings, state, actor, data.get("user_id"), reason=data.get("reason"))
        elif kind == "unban":
            event = await cs.lift(session, state, actor, data.get("user_id"))
        else:
            event = await cs.set_slow_mode(session, settings, state, actor, data.get("seconds"))
    await room.publish(event)


async def broadcast(settings, stream_id: str, message: dict) -> None:
    """Send a settings event (moderators, emotes, words) to every process's room of a stream."""
    channels = live_channels(settings)
    await channels.publish(channels.channel("live", stream_id, "chat"), message)
