"""Who is watching a live stream right now: deduplicated, expiring presence.

A viewer is a key (``viewer_key_for``: the user id when signed in, else a hash of address and
user agent) seen within ``settings.live_viewer_ttl_s``. Playlist polls (ingest side) and chat
sockets both report presence, so one person with the player and the chat open counts once.

- Embedded: a dict per (deployment, stream) in this process.
- Scale-out (``settings.redis_url``): one sorted set per stream (member = viewer key, score =
  expiry), shared by every API process; the peak is kept beside it with an atomic max.

Reports are throttled per (stream, viewer) to one per ttl/3: LL-HLS players poll several times
a second and only the first poll in a while carries news.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import weakref

from clipfeed.config import Settings

DEFAULT_TTL_S = 30
_LOCAL_NAMESPACE = "clipfeed"

_lock = threading.Lock()
# (namespace, stream_id) -> {viewer_key: expires (time.time())}
_viewers: dict[tuple[str, str], dict[str, float]] = {}
_peaks: dict[tuple[str, str], int] = {}
# (namespace, stream_id, viewer_key) -> when it was last reported onwards
_last_report: dict[tuple[str, str, str], float] = {}
_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
ASYNC_CLIENT_NAME = "clipfeed-presence"

# KEYS[1] = viewers zset, KEYS[2] = peak; ARGV = now, member, expiry, ttl
_NOTE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local count = redis.call('ZCARD', KEYS[1])
local peak = tonumber(redis.call('GET', KEYS[2]) or '0')
if count > peak then
  redis.call('SET', KEYS[2], count, 'EX', 604800)
end
return count
"""


def viewer_key_for(user_id: str | None, client_ip: str | None, user_agent: str | None) -> str:
    """The one dedup rule for playlist polls and chat sockets alike."""
    if user_id:
        return "u:" + user_id
    digest = hashlib.sha256(f"{client_ip or ''}|{user_agent or ''}".encode()).hexdigest()[:20]
    return "a:" + digest


def _namespace(settings: Settings | None) -> str:
    return settings.queue_name if settings is not None else _LOCAL_NAMESPACE


def _ttl(settings: Settings | None) -> int:
    return settings.live_viewer_ttl_s if settings is not None else DEFAULT_TTL_S


def _redis_keys(settings: Settings, stream_id: str) -> tuple[str, str]:
    base = f"clipfeed:{settings.queue_name}:live:{stream_id}"
    return base + ":viewers", base + ":peak"


def _async_client(url: str):
    loop = asyncio.get_running_loop()
    per_loop = _async_clients.setdefault(loop, {})
    client = per_loop.get(url)
    if client is None:
        import redis.asyncio as redis_asyncio

        client = per_loop[url] = redis_asyncio.Redis.from_url(url, client_name=ASYNC_CLIENT_NAME)
    return client


async def close_clients() -> None:
    """Close the Redis clients live code opened: this event loop's presence clients and the shared
    publishing clients of ``events.pubsub`` (the ingest's announcements, the hooks'). Called by the
    app's lifespan and ``clipfeed ingest`` at shutdown; a client left open would be collected with
    its socket still connected ("unclosed Connection")."""
    from clipfeed.events.pubsub import close_sync_clients

    loop = asyncio.get_running_loop()
    per_loop = _async_clients.pop(loop, {})
    for client in per_loop.values():
        try:
            await client.aclose()
        except Exception:  # noqa: BLE001 - shutting down
            pass
    close_sync_clients()


def _sync_client(url: str):
    from clipfeed.events.pubsub import _sync_client as shared_sync_client

    return shared_sync_client(url)


def _due(namespace: str, stream_id: str, viewer_key: str, ttl: int, now: float) -> bool:
    """True when this viewer's presence should be reported again (and remember that it was)."""
    key = (namespace, stream_id, viewer_key)
    with _lock:
        last = _last_report.get(key)
        if last is not None and now - last < ttl / 3:
            return False
        _last_report[key] = now
        if len(_last_report) > 200_000:  # forget viewers long gone
            cutoff = now - ttl
            for stale in [k for k, at in _last_report.items() if at < cutoff]:
                del _last_report[stale]
    return True


def _note_local(namespace: str, stream_id: str, viewer_key: str, ttl: int, now: float) -> int:
    with _lock:
        viewers = _viewers.setdefault((namespace, stream_id), {})
        viewers[viewer_key] = now + ttl
        for gone in [k for k, expires in viewers.items() if expires <= now]:
            del viewers[gone]
        count = len(viewers)
        if count > _peaks.get((namespace, stream_id), 0):
            _peaks[(namespace, stream_id)] = count
        return count


async def note_viewer(stream_id: str, viewer_key: str, settings: Settings | None = None) -> None:
    """Record that `viewer_key` watches `stream_id` now. Cheap enough for every playlist request;
    never raises (presence is best effort)."""
    now = time.time()
    namespace, ttl = _namespace(settings), _ttl(settings)
    if not _due(namespace, stream_id, viewer_key, ttl, now):
        return
    if settings is not None and settings.redis_url:
        viewers_key, peak_key = _redis_keys(settings, stream_id)
        try:
            await _async_client(settings.redis_url).eval(
                _NOTE_SCRIPT, 2, viewers_key, peak_key, now, viewer_key, now + ttl, ttl * 4)
        except Exception:  # noqa: BLE001 - a lost presence report only makes the count lag
            with _lock:
                _last_report.pop((namespace, stream_id, viewer_key), None)
        return
    _note_local(namespace, stream_id, viewer_key, ttl, now)


def forget_viewer(stream_id: str, viewer_key: str, settings: Settings | None = None) -> None:
    """Drop the report throttle for a viewer (their next report goes through at once)."""
    with _lock:
        _last_report.pop((_namespace(settings), stream_id, viewer_key), None)


def viewer_count(stream_id: str, settings: Settings | None = None) -> int:
    """Distinct viewers seen within the presence TTL."""
    now = time.time()
    if settings is not None and settings.redis_url:
        viewers_key, _ = _redis_keys(settings, stream_id)
        try:
            return int(_sync_client(settings.redis_url).zcount(viewers_key, f"({now}", "+inf"))
        except Exception:  # noqa: BLE001
            return 0
    with _lock:
        viewers = _viewers.get((_namespace(settings), stream_id), {})
        return sum(1 for expires in viewers.values() if expires > now)


def peak_viewers(stream_id: str, settings: Settings | None = None) -> int:
    """The highest count seen since this process (embedded) or Redis (scale-out) started tracking."""
    if settings is not None and settings.redis_url:
        _, peak_key = _redis_keys(settings, stream_id)
        try:
            return int(_sync_client(settings.redis_url).get(peak_key) or 0)
        except Exception:  # noqa: BLE001
            return 0
    with _lock:
        return _peaks.get((_namespace(settings), stream_id), 0)
