"""Live channels: push small JSON messages to whoever listens on a named channel right now
(a user's notifications; later live chat). Fire-and-forget: a message published while nobody
listens is gone, so readers that must not miss anything keep a durable source (a table) too.

- Embedded (no Redis): one in-process broker per deployment namespace. Publishing is
  thread-safe, so a media job on a worker thread (its own event loop) reaches a stream served by
  the API's loop in the same process.
- Scale-out (``settings.redis_url``): Redis pub/sub. Publishers use a small synchronous client
  (any thread, any loop); each API event loop keeps ONE subscriber connection that subscribes to
  exactly the channels its connected clients listen on and fans messages out to them.

Channel names are prefixed with ``settings.queue_name``, so deployments (and test runs) sharing a
Redis never hear each other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from clipfeed.config import Settings

log = logging.getLogger("clipfeed.events.pubsub")

QUEUE_LIMIT = 1000  # per subscriber; a reader that falls this far behind drops messages


class Subscription:
    """One listener on one channel, bound to the event loop that created it."""

    def __init__(self, channel: str):
        self.channel = channel
        self.loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.dropped = 0

    def _put(self, message: dict) -> None:  # on self.loop
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    def deliver(self, message: dict) -> None:
        """Hand a message over from any thread."""
        try:
            self.loop.call_soon_threadsafe(self._put, message)
        except RuntimeError:  # the subscriber's loop is closed
            pass

    def drain(self, limit: int) -> list[dict]:
        """Up to `limit` messages that are already queued, without waiting (a reader that fell
        behind takes them in one go)."""
        items: list[dict] = []
        while len(items) < limit:
            try:
                items.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return items

    async def get(self, timeout: float) -> dict | None:
        """The next message, or None after `timeout` seconds."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None


class LocalBroker:
    """Process-wide channels for one namespace (embedded shape)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)

    def add(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers[sub.channel].add(sub)

    def remove(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subscribers.get(sub.channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[sub.channel]

    def publish(self, channel: str, message: dict) -> int:
        with self._lock:
            subs = list(self._subscribers.get(channel, ()))
        for sub in subs:
            sub.deliver(message)
        return len(subs)

    def listeners(self, channel: str) -> int:
        with self._lock:
            return len(self._subscribers.get(channel, ()))


class RedisFanout:
    """One Redis subscriber connection per (event loop, Redis URL): it subscribes to a channel
    while at least one local client listens on it, and closes when the last client leaves."""

    def __init__(self, url: str):
        import redis.asyncio as redis_asyncio

        self._client = redis_asyncio.Redis.from_url(url)
        self._pubsub = self._client.pubsub()
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task | None = None
        self.closed = False

    async def add(self, sub: Subscription) -> bool:
        """Start delivering sub's channel to it; False when this fanout already closed."""
        async with self._lock:
            if self.closed:
                return False
            first = not self._subscribers[sub.channel]
            self._subscribers[sub.channel].add(sub)
            if first:
                await self._pubsub.subscribe(sub.channel)
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(), name="clipfeed-redis-fanout")
            return True

    async def remove(self, sub: Subscription) -> bool:
        """Drop a listener; True when the fanout closed because nobody listens any more."""
        async with self._lock:
            subs = self._subscribers.get(sub.channel)
            if subs is None:
                return False
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.channel]
                try:
                    await self._pubsub.unsubscribe(sub.channel)
                except Exception:  # noqa: BLE001 - the connection is being torn down anyway
                    log.debug("unsubscribe failed", exc_info=True)
            if self._subscribers:
                return False
            self.closed = True
            if self._reader is not None:
                self._reader.cancel()
                try:
                    await self._reader
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
                self._reader = None
            try:
                await self._pubsub.aclose()
                await self._client.aclose()
            except Exception:  # noqa: BLE001
                log.debug("closing the fanout connection failed", exc_info=True)
            return True

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis restarted or the link dropped: retry, never die
                log.warning("redis pub/sub read failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if not message or message.get("type") != "message":
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else str(channel)
            try:
                payload = json.loads(message["data"])
            except (TypeError, ValueError):
                log.warning("dropping a malformed message on %s", channel)
                continue
            for sub in list(self._subscribers.get(channel, ())):
                sub._put(payload)


_registry_lock = threading.Lock()
_local_brokers: dict[str, LocalBroker] = {}
_sync_clients: dict[str, object] = {}
SYNC_CLIENT_NAME = "clipfeed-pubsub"  # CLIENT LIST shows who holds a connection
# loop -> {redis url -> fanout}; weak so a finished loop takes its fanouts with it.
_fanouts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _local_broker(namespace: str) -> LocalBroker:
    with _registry_lock:
        broker = _local_brokers.get(namespace)
        if broker is None:
            broker = _local_brokers[namespace] = LocalBroker()
        return broker


def _sync_client(url: str):
    with _registry_lock:
        client = _sync_clients.get(url)
        if client is None:
            import redis

            client = _sync_clients[url] = redis.Redis.from_url(
                url, socket_timeout=5, socket_connect_timeout=5, client_name=SYNC_CLIENT_NAME)
        return client


def close_sync_clients() -> None:
    """Close the shared publishing clients (at shutdown). A later publish opens a new one, so an
    app still running in this process carries on."""
    with _registry_lock:
        clients = list(_sync_clients.values())
        _sync_clients.clear()
    for client in clients:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - shutting down: nothing to do about a broken link
            log.debug("closing a Redis client failed", exc_info=True)


def _fanout(url: str) -> RedisFanout:
    loop = asyncio.get_running_loop()
    per_loop = _fanouts.setdefault(loop, {})
    fanout = per_loop.get(url)
    if fanout is None or fanout.closed:
        fanout = per_loop[url] = RedisFanout(url)
    return fanout


class LiveChannels:
    """The deployment's live channels (cheap to build: state lives in module registries)."""

    def __init__(self, namespace: str, redis_url: str | None):
        self.namespace = namespace
        self.redis_url = redis_url

    def channel(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    async def publish(self, channel: str, message: dict) -> None:
        """Deliver to current listeners. Never raises: a live push is best effort."""
        try:
            if self.redis_url:
                data = json.dumps(message, separators=(",", ":"))
                await asyncio.to_thread(_sync_client(self.redis_url).publish, channel, data)
            else:
                _local_broker(self.namespace).publish(channel, message)
        except Exception:  # noqa: BLE001 - the durable copy is already committed
            log.warning("live publish on %s failed", channel, exc_info=True)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        sub = Subscription(channel)
        if self.redis_url:
            fanout = _fanout(self.redis_url)
            while not await fanout.add(sub):  # raced with the last listener closing it
                fanout = _fanout(self.redis_url)
            try:
                yield sub
            finally:
                await asyncio.shield(fanout.remove(sub))
        else:
            broker = _local_broker(self.namespace)
            broker.add(sub)
            try:
                yield sub
            finally:
                broker.remove(sub)


def live_channels(settings: Settings) -> LiveChannels:
    return LiveChannels(settings.queue_name, settings.redis_url)
