"""The interaction event log as the For You feed consumes it.

The durable log is the append-only ``interaction_events`` table, written by the social services
in the request's transaction. After that transaction commits, ``publish`` fans the events out:

- to the user's own feature-store profile, in this process, at once (so the very next page the
  user asks for reflects it), and to this process's listeners (the user's ranked queue is
  re-ranked or dropped);
- embedded shape: to the video/creator counters of the in-memory store, in process;
- scale-out (``settings.redis_url``): XADD to the Redis Stream ``<namespace>:feed:events``,
  which a consumer group (``StreamConsumer``, run by ``clipfeed worker`` and by the in-process
  workers of ``clipfeed serve``) reads to update the shared counters in Redis.

Publishing never raises into the request: the committed row is the truth, the fan-out is best
effort (a lost stream entry costs one counter tick, never a user's data).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass

from clipfeed.config import Settings
from clipfeed.db import on_commit

log = logging.getLogger("clipfeed.feed.events")

STREAM_MAXLEN = 1_000_000
GROUP = "feature-store"


@dataclass(frozen=True, slots=True)
class FeedEvent:
    kind: str  # view, skip, like, unlike, share, comment, follow, unfollow, not_interested
    user_id: str | None
    video_id: str | None
    creator_id: str | None
    at: float  # epoch seconds
    watch_ms: int = 0
    duration_ms: int = 0
    completed: bool = False
    replay: bool = False
    hashtags: tuple[str, ...] = ()
    sound_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> FeedEvent:
        data = json.loads(raw)
        data["hashtags"] = tuple(data.get("hashtags") or ())
        return cls(**data)


def _hashtags(caption: str | None) -> tuple[str, ...]:
    from clipfeed.social.text import parse_hashtags

    return tuple(parse_hashtags(caption or "")) if caption else ()


def event_for(kind: str, *, user_id: str | None, video=None, creator_id: str | None = None,
              watch_ms: int = 0, completed: bool = False, replay: bool = False) -> FeedEvent:
    return FeedEvent(kind=kind, user_id=user_id, video_id=video.id if video is not None else None,
                     creator_id=creator_id or (video.owner_id if video is not None else None), at=time.time(),
                     watch_ms=int(watch_ms or 0), duration_ms=int((video.duration_ms if video is not None else 0) or 0),
                     completed=bool(completed), replay=bool(replay),
                     hashtags=_hashtags(video.caption) if video is not None else (),
                     sound_id=video.sound_id if video is not None else None)


def event_from_row(row) -> FeedEvent:
    """From an interaction_events row joined with its video (duration_ms, caption, sound_id)."""
    at = row.created_at.timestamp() if row.created_at is not None else time.time()
    return FeedEvent(kind=row.kind, user_id=row.user_id, video_id=row.video_id, creator_id=row.creator_id, at=at,
                     watch_ms=int(row.watch_ms or 0), duration_ms=int(row.duration_ms or 0),
                     completed=bool(row.completed), replay=bool(row.replay), hashtags=_hashtags(row.caption),
                     sound_id=row.sound_id)


# ---------------------------------------------------------------------------------------------
# Publishing (called by the social services, inside their transaction)
# ---------------------------------------------------------------------------------------------

def publish(session, kind: str, *, user_id: str | None, video=None, creator_id: str | None = None,
            **fields) -> None:
    """Fan the event out once the surrounding transaction commits."""
    if not user_id and kind not in ("view", "skip", "share"):
        return
    settings: Settings | None = session.info.get("settings")
    if settings is None:
        return
    event = event_for(kind, user_id=user_id, video=video, creator_id=creator_id,
                      **{k: v for k, v in fields.items() if k in ("watch_ms", "completed", "replay")})
    on_commit(session, lambda: dispatch(settings, [event]))


def dispatch(settings: Settings, events: list[FeedEvent]) -> None:
    from clipfeed.feed.feature_store import feature_store

    try:
        store = feature_store(settings)
        for event in events:
            if event.user_id:
                store.apply_user(event)
        if settings.redis_url:
            client = _redis(settings)
            pipe = client.pipeline(transaction=False)
            for event in events:
                pipe.xadd(stream_name(settings), {"e": event.to_json()}, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.execute()
        else:
            store.apply_global(events)
    except Exception:  # noqa: BLE001 - the committed row is the truth; never fail the request
        log.warning("feed event fan-out failed", exc_info=True)
    for listener in list(_listeners.get(_key(settings), ())):
        for event in events:
            try:
                listener(event)
            except Exception:  # noqa: BLE001
                log.warning("feed event listener failed", exc_info=True)


# In-process listeners (the For You queues of this process), per deployment.
_listeners: dict[str, list[Callable[[FeedEvent], None]]] = defaultdict(list)


def _key(settings: Settings) -> str:
    from clipfeed.feed.feature_store import deployment_key

    return deployment_key(settings)


def add_listener(settings: Settings, listener: Callable[[FeedEvent], None]) -> None:
    _listeners[_key(settings)].append(listener)


def remove_listener(settings: Settings, listener: Callable[[FeedEvent], None]) -> None:
    try:
        _listeners[_key(settings)].remove(listener)
    except ValueError:
        pass


_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def _redis(settings: Settings):
    with _clients_lock:
        client = _clients.get(settings.redis_url)
        if client is None:
            import redis

            client = _clients[settings.redis_url] = redis.Redis.from_url(
                settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        return client


def stream_name(settings: Settings) -> str:
    return f"{settings.queue_name}:feed:events"


# ---------------------------------------------------------------------------------------------
# Consuming the stream (scale-out)
# ---------------------------------------------------------------------------------------------

class StreamConsumer:
    """Reads the event stream in consumer group ``feature-store`` and updates the shared
    counters. Several workers share the group: each entry goes to one of them; an entry a dead
    consumer had claimed is re-claimed after ``claim_idle_ms``."""

    def __init__(self, settings: Settings, *, block_ms: int = 200, batch: int = 500, claim_idle_ms: int = 30_000):
        import redis

        self.settings = settings
        # Its own connection: XREADGROUP blocks it.
        self.client = redis.Redis.from_url(settings.redis_url, socket_timeout=max(5, block_ms / 1000 + 2))
        self.stream = stream_name(settings)
        self.name = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.block_ms, self.batch, self.claim_idle_ms = block_ms, batch, claim_idle_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied = 0

    def _ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def process(self, entries) -> None:
        from clipfeed.feed.feature_store import feature_store

        events, ids = [], []
        for entry_id, data in entries:
            ids.append(entry_id)
            try:
                events.append(FeedEvent.from_json(data[b"e"]))
            except (KeyError, TypeError, ValueError):
                log.warning("dropping a malformed feed event %s", entry_id)
        if events:
            feature_store(self.settings).apply_global(events)
            self.applied += len(events)
        if ids:
            self.client.xack(self.stream, GROUP, *ids)

    def run_once(self) -> int:
        reply = self.client.xreadgroup(GROUP, self.name, {self.stream: ">"}, count=self.batch, block=self.block_ms)
        count = 0
        for _stream, entries in reply or ():
            self.process(entries)
            count += len(entries)
        return count

    def _loop(self) -> None:
        last_claim = 0.0
        while not self._stop.is_set():
            try:
                self._ensure_group()
                while not self._stop.is_set():
                    self.run_once()
                    if time.monotonic() - last_claim > self.claim_idle_ms / 1000:
                        last_claim = time.monotonic()
                        _next, claimed, *_ = self.client.xautoclaim(
                            self.stream, GROUP, self.name, self.claim_idle_ms, "0-0", count=self.batch)
                        if claimed:
                            self.process([c for c in claimed if c and c[1]])
            except Exception:  # noqa: BLE001 - Redis restarted: wait and go on
                if self._stop.is_set():
                    break
                log.warning("feed stream consumer failed; retrying", exc_info=True)
                self._stop.wait(0.5)

    def start(self) -> StreamConsumer:
        self._thread = threading.Thread(target=self._loop, name="clipfeed-feed-stream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            pass
