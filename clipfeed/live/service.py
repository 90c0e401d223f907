"""Live stream rules: start, stream keys, the publish claim, end, replays, visibility, viewers.

State machine (``LiveStream.status``)::

    idle --authorize_publish--> live --publish_ended--> idle   (encoder disconnected: the
      ^                           |                             creator may reconnect)
      |                           +--end_stream------> ended   (creator ended it; the ingest
      +------- rotate_key                                        must stop; no publish again)

Rule for ``publish_ended``: the claim is released; a stream the creator has ended stays
``ended``, any other goes back to ``idle`` (an encoder that drops out - network, OBS restart -
must be able to come back on the same key without the creator doing anything). Every publish
session's recording becomes its own replay video (``replay_video_id`` names the latest).

Stream keys are secret: only their SHA-256 is stored; the key is returned by ``start_stream``
and ``rotate_key`` and never again. The publish URL is ``ingest_url + "/" + stream_key``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import timedelta
from pathlib import Path

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.db import on_commit
from clipfeed.db.base import utcnow
from clipfeed.errors import Conflict, Forbidden, NotFound, ValidationFailed
from clipfeed.events.pubsub import live_channels
from clipfeed.live import presence
from clipfeed.live.models import LiveStatus, LiveStream
from clipfeed.media.models import VideoOrigin
from clipfeed.live.presence import note_viewer, peak_viewers, viewer_count, viewer_key_for
from clipfeed.pagination import decode_cursor, encode_cursor
from clipfeed.social import graph

log = logging.getLogger("clipfeed.live")

__all__ = [
    "PublishRefused", "authorize_publish", "publish_ended", "publish_heartbeat", "publish_allowed",
    "note_viewer", "viewer_count", "peak_viewers", "viewer_key_for", "live_dir", "playback_url",
    "ingest_url", "start_stream", "rotate_key", "end_stream", "get_visible", "get_owned", "list_live",
]

MAX_TITLE = 140
KEY_PREFIX = "live_"
VISIBILITIES = ("public", "followers", "unlisted", "private")


class PublishRefused(Forbidden):
    """The ingest must refuse this publish before reading any media."""

    code = "publish_refused"

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- paths and URLs ----------------------------------------------------------------------------

def live_dir(settings: Settings, stream_id: str) -> Path:
    """Where the packager writes a stream's playlists and parts (the ingest node's disk, see
    ``Settings.live_dir``; playback reads them there, never through the blob store)."""
    return settings.resolved_live_dir / stream_id


def playback_url(stream_id: str) -> str:
    return f"/media/live/{stream_id}/master.m3u8"


def ingest_url(settings: Settings, request_host: str | None = None) -> str:
    """What OBS calls "Server"; the stream key goes in "Stream key" (OBS joins them with '/')."""
    host = settings.live_public_host or (request_host or settings.host).split(":")[0] or "127.0.0.1"
    port = getattr(settings, "rtmp_port", 1935)
    return f"rtmp://{host}:{port}/live"


# --- keys ------------------------------------------------------------------------------------

def hash_key(stream_key: str) -> str:
    return hashlib.sha256(stream_key.encode()).hexdigest()


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def _settings(session: AsyncSession) -> Settings:
    return session.info["settings"]


# --- creator actions ---------------------------------------------------------------------------

def _validate_title(title: str | None) -> str:
    title = " ".join((title or "").split())
    if len(title) > MAX_TITLE:
        raise ValidationFailed(f"title is longer than {MAX_TITLE} characters", field="title")
    return title


def _validate_visibility(visibility: str | None) -> str:
    visibility = (visibility or "public").strip().lower()
    if visibility not in VISIBILITIES:
        raise ValidationFailed(f"visibility must be one of {', '.join(VISIBILITIES)}", field="visibility")
    return visibility


async def start_stream(session: AsyncSession, owner: User, *, title: str | None,
                       visibility: str | None = None) -> tuple[LiveStream, str]:
    """A new stream and its secret key (returned once). One open (idle or live) stream per
    creator: a second start is a conflict - end the first or rotate its key."""
    open_stream = await session.scalar(select(LiveStream.id).where(
        LiveStream.owner_id == owner.id, LiveStream.status != LiveStatus.ENDED).limit(1))
    if open_stream is not None:
        raise Conflict(f"you already have an open stream ({open_stream}); end it or rotate its key",
                       code="stream_open")
    key = _new_key()
    stream = LiveStream(owner_id=owner.id, title=_validate_title(title), visibility=_validate_visibility(visibility),
                        status=LiveStatus.IDLE, stream_key_hash=hash_key(key), publishing=False,
                        peak_viewers=0, slow_mode_s=0, banned_words=[])
    session.add(stream)
    await session.flush()
    return stream, key


async def get_owned(session: AsyncSession, stream_id: str, user: User) -> LiveStream:
    stream = await get_visible(session, stream_id, user)
    if stream.owner_id != user.id:
        raise Forbidden("only the streamer can do this")
    return stream


async def rotate_key(session: AsyncSession, stream_id: str, user: User) -> tuple[LiveStream, str]:
    """A new key; the old one stops working at once (a publish already running continues)."""
    stream = await get_owned(session, stream_id, user)
    if stream.status == LiveStatus.ENDED:
        raise Conflict("this stream has ended; start a new one", code="stream_ended")
    key = _new_key()
    stream.stream_key_hash = hash_key(key)
    await session.flush()
    return stream, key


async def end_stream(session: AsyncSession, stream_id: str, user: User) -> LiveStream:
    """The creator ends the stream (idempotent). The ingest learns it from ``publish_allowed``
    and the control message on the stream's channel, and stops; chat rooms are told."""
    stream = await get_owned(session, stream_id, user)
    if stream.status != LiveStatus.ENDED:
        stream.status = LiveStatus.ENDED
        stream.ended_at = utcnow()
        stream.peak_viewers = max(stream.peak_viewers, peak_viewers(stream.id, _settings(session)))
        await session.flush()
        _announce(session, stream.id, {"type": "stream_ended", "stream_id": stream.id})
    return stream


def _announce(session: AsyncSession, stream_id: str, message: dict) -> None:
    """After commit: tell chat rooms and the ingest (channel ``live:<id>:control``)."""
    channels = live_channels(_settings(session))

    async def send() -> None:
        await channels.publish(channels.channel("live", stream_id, "control"), message)
        await channels.publish(channels.channel("live", stream_id, "chat"), message)

    on_commit(session, send)


# --- the publish claim (called by the ingest) ----------------------------------------------------

async def authorize_publish(session: AsyncSession, stream_key: str) -> LiveStream:
    """Check a stream key before any media is read, and claim the stream for this publisher.

    Raises PublishRefused for an unknown (or rotated-away) key, an ended stream, or a stream
    another encoder is already publishing (claims are taken with one conditional UPDATE, so two
    simultaneous publishers cannot both win). The stream is ``live`` once this commits."""
    if not stream_key or len(stream_key) > 200:
        raise PublishRefused("unknown stream key")
    stream = await session.scalar(select(LiveStream).where(LiveStream.stream_key_hash == hash_key(stream_key)))
    if stream is None:
        raise PublishRefused("unknown stream key")
    if stream.status == LiveStatus.ENDED:
        raise PublishRefused("this stream has ended")
    now = utcnow()
    stale_before = now - timedelta(seconds=_settings(session).live_claim_ttl_s)
    claimed = await session.execute(
        update(LiveStream)
        .where(LiveStream.id == stream.id, LiveStream.status != LiveStatus.ENDED,
               or_(LiveStream.publishing.is_(False), LiveStream.publish_heartbeat_at.is_(None),
                   LiveStream.publish_heartbeat_at < stale_before))
        .values(publishing=True, status=LiveStatus.LIVE, started_at=now, publish_heartbeat_at=now)
        .execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        raise PublishRefused("this stream is already being published")
    await session.refresh(stream)
    _announce(session, stream.id, {"type": "stream_live", "stream_id": stream.id})
    return stream


async def publish_heartbeat(session: AsyncSession, stream_id: str) -> bool:
    """Keep the claim fresh (call every few seconds while publishing). False when the stream was
    ended or the claim lost: the ingest must stop publishing."""
    result = await session.execute(
        update(LiveStream)
        .where(LiveStream.id == stream_id, LiveStream.publishing.is_(True), LiveStream.status == LiveStatus.LIVE)
        .values(publish_heartbeat_at=utcnow())
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


async def publish_allowed(session: AsyncSession, stream_id: str) -> bool:
    """Whether a running publish may go on (the creator has not ended the stream)."""
    status = await session.scalar(select(LiveStream.status).where(LiveStream.id == stream_id))
    return status == LiveStatus.LIVE


async def publish_ended(session: AsyncSession, stream_id: str, recording_path: Path | None, *,
                        jobs=None, store=None):
    """The encoder stopped (or was stopped). Releases the claim; ``ended`` stays ended, ``live``
    goes back to ``idle``. A non-empty recording becomes a normal video of the streamer (caption
    = title, same visibility), processed by the spine pipeline once this commits; this function
    takes ownership of the file (it is moved into the blob store). Returns the replay Video or
    None. `jobs`/`store` default to ones built from the session's settings."""
    stream = await session.get(LiveStream, stream_id)
    if stream is None:
        raise NotFound("stream not found")
    settings = _settings(session)
    stream.publishing = False
    stream.publish_heartbeat_at = None
    if stream.status == LiveStatus.LIVE:
        stream.status = LiveStatus.IDLE
    stream.peak_viewers = max(stream.peak_viewers, peak_viewers(stream.id, settings))
    await session.flush()
    _announce(session, stream.id, {"type": "stream_offline", "stream_id": stream.id,
                                   "status": stream.status})
    if recording_path is None or not Path(recording_path).is_file() or Path(recording_path).stat().st_size == 0:
        return None
    from clipfeed.media import imports

    owner = await session.get(User, stream.owner_id)
    caption = stream.title or "Live replay"
    video = await imports.import_local_file(
        session, owner, Path(recording_path), filename=f"live-{stream.id}.mp4", caption=caption,
        visibility=stream.visibility, jobs=jobs, store=store, origin=VideoOrigin.LIVE_REPLAY)
    stream.replay_video_id = video.id
    await session.flush()
    return video


# --- viewing ---------------------------------------------------------------------------------

def _visible_to(stream: LiveStream, viewer_id: str | None, rel: graph.Relation) -> bool:
    if viewer_id is not None and viewer_id == stream.owner_id:
        return True
    if rel.blocked or stream.visibility == "private":
        return False
    if stream.visibility in ("public", "unlisted"):
        return True
    return rel.following


async def get_visible(session: AsyncSession, stream_id: str, viewer: User | None) -> LiveStream:
    """404 alike for unknown and hidden streams (no existence leak)."""
    stream = await session.get(LiveStream, stream_id) if len(stream_id) <= 16 else None
    if stream is None:
        raise NotFound("stream not found")
    viewer_id = viewer.id if viewer is not None else None
    rel = await graph.relation(session, viewer_id, stream.owner_id) if viewer_id else graph.NO_RELATION
    if not _visible_to(stream, viewer_id, rel):
        raise NotFound("stream not found")
    return stream


async def list_live(session: AsyncSession, viewer: User | None, *, limit: int,
                    cursor: str | None) -> tuple[list[tuple[LiveStream, User]], str | None]:
    """"Live now": streams being published, most recently started first (keyset cursor). Public
    streams, followers-only ones of people the viewer follows, the viewer's own; never across a
    block; unlisted and private never listed."""
    query = select(LiveStream, User).join(User, User.id == LiveStream.owner_id) \
        .where(LiveStream.status == LiveStatus.LIVE)
    if viewer is None:
        query = query.where(LiveStream.visibility == "public")
    else:
        query = query.where(or_(
            LiveStream.owner_id == viewer.id,
            and_(~graph.blocked_clause(viewer.id, LiveStream.owner_id),
                 or_(LiveStream.visibility == "public",
                     and_(LiveStream.visibility == "followers", graph.follows_clause(viewer.id, LiveStream.owner_id))))))
    if cursor:
        started, last_id = decode_cursor(cursor)
        query = query.where(or_(LiveStream.started_at < started,
                                and_(LiveStream.started_at == started, LiveStream.id < last_id)))
    rows = (await session.execute(
        query.order_by(LiveStream.started_at.desc(), LiveStream.id.desc()).limit(limit + 1))).all()
    items = [(row[0], row[1]) for row in rows]
    if len(items) <= limit:
        return items, None
    last = items[limit - 1][0]
    return items[:limit], encode_cursor(last.started_at, last.id)


def stream_viewers(settings: Settings, stream: LiveStream) -> tuple[int, int]:
    """(viewers now, peak) - presence counts only while the stream is live."""
    now = viewer_count(stream.id, settings) if stream.status == LiveStatus.LIVE else 0
    return now, max(stream.peak_viewers, peak_viewers(stream.id, settings))


__all__ += ["stream_viewers", "hash_key", "presence"]
