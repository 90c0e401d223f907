"""Live stream HTTP API: start, state, key rotation, end, "live now", moderators, emotes, chat settings."""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Request, Response

from clipfeed.deps import CurrentUser, OptionalUser, Pagination, Session, Settings, Store
from clipfeed.db import on_commit
from clipfeed.errors import NotFound, ValidationFailed
from clipfeed.live import chat_service as cs
from clipfeed.live import service as live
from clipfeed.live.chat import broadcast
from clipfeed.live.models import LiveStream, StreamerEmote
from clipfeed.live.schemas import ChatSettingsPatch, EmoteRequest, ModeratorRequest, StartRequest
from clipfeed.social.graph import user_summary

router = APIRouter(prefix="/api/v1/live", tags=["live"])


def _stream_out(settings, stream: LiveStream, owner=None) -> dict:
    viewers, peak = live.stream_viewers(settings, stream)
    out = {"id": stream.id, "owner_id": stream.owner_id, "title": stream.title, "visibility": stream.visibility,
           "status": stream.status, "viewers": viewers, "peak_viewers": peak,
           "playback_url": live.playback_url(stream.id), "chat_url": f"/api/v1/live/{stream.id}/chat",
           "slow_mode_s": stream.slow_mode_s, "replay_video_id": stream.replay_video_id,
           "created_at": stream.created_at.isoformat(),
           "started_at": stream.started_at.isoformat() if stream.started_at else None,
           "ended_at": stream.ended_at.isoformat() if stream.ended_at else None}
    if owner is not None:
        out["owner"] = user_summary(owner)
    return out


def _key_out(request: Request, settings, stream: LiveStream, key: str) -> dict:
    return {"stream_id": stream.id, "ingest_url": live.ingest_url(settings, request.headers.get("host")),
            "stream_key": key, "playback_url": live.playback_url(stream.id)}


def _after_commit_broadcast(session, settings, stream_id: str, event: dict) -> None:
    on_commit(session, lambda: broadcast(settings, stream_id, event))


@router.post("/start", status_code=201)
async def start(request: Request, session: Session, user: CurrentUser, settings: Settings,
                body: StartRequest | None = None):
    body = body or StartRequest()
    stream, key = await live.start_stream(session, user, title=body.title, visibility=body.visibility)
    return _key_out(request, settings, stream, key)


@router.get("")
async def live_now(session: Session, viewer: OptionalUser, settings: Settings, page: Pagination):
    rows, next_cursor = await live.list_live(session, viewer, limit=page.limit, cursor=page.cursor)
    return {"items": [_stream_out(settings, stream, owner) for stream, owner in rows], "next_cursor": next_cursor}


@router.get("/emotes/{emote_id}")
async def emote_image(emote_id: str, session: Session, store: Store):
    emote = await session.get(StreamerEmote, emote_id) if len(emote_id) <= 16 else None
    if emote is None:
        raise NotFound("emote not found")
    data = await store.read_all(emote.blob_key)
    return Response(data, media_type=emote.content_type,
                    headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})


@router.get("/{stream_id}")
async def get_stream(stream_id: str, session: Session, viewer: OptionalUser, settings: Settings):
    stream = await live.get_visible(session, stream_id, viewer)
    return _stream_out(settings, stream)


@router.post("/{stream_id}/rotate-key")
async def rotate_key(stream_id: str, request: Request, session: Session, user: CurrentUser, settings: Settings):
    stream, key = await live.rotate_key(session, stream_id, user)
    return _key_out(request, settings, stream, key)


@router.post("/{stream_id}/end")
async def end(stream_id: str, session: Session, user: CurrentUser, settings: Settings):
    return _stream_out(settings, await live.end_stream(session, stream_id, user))


@router.get("/{stream_id}/moderators")
async def moderators(stream_id: str, session: Session, user: CurrentUser):
    stream = await live.get_owned(session, stream_id, user)
    return {"items": [user_summary(u) for u in await cs.list_moderators(session, stream)]}


@router.post("/{stream_id}/moderators", status_code=201)
async def appoint(stream_id: str, body: ModeratorRequest, session: Session, user: CurrentUser, settings: Settings):
    stream = await live.get_owned(session, stream_id, user)
    event = await cs.appoint_moderator(session, stream, body.user_id)
    _after_commit_broadcast(session, settings, stream.id, event)
    return {"user_id": body.user_id, "moderator": True}


@router.delete("/{stream_id}/moderators/{user_id}")
async def dismiss(stream_id: str, user_id: str, session: Session, user: CurrentUser, settings: Settings):
    stream = await live.get_owned(session, stream_id, user)
    event = await cs.remove_moderator(session, stream, user_id)
    _after_commit_broadcast(session, settings, stream.id, event)
    return {"user_id": user_id, "moderator": False}


@router.patch("/{stream_id}/chat")
async def chat_settings(stream_id: str, body: ChatSettingsPatch, session: Session, user: CurrentUser,
                        settings: Settings):
    stream = await live.get_owned(session, stream_id, user)
    if body.slow_mode_s is not None:
        if body.slow_mode_s > settings.live_chat_max_slow_mode_s:
            raise ValidationFailed(f"slow_mode_s is at most {settings.live_chat_max_slow_mode_s}", field="slow_mode_s")
        stream.slow_mode_s = body.slow_mode_s
        _after_commit_broadcast(session, settings, stream.id, {"type": "slow_mode", "seconds": body.slow_mode_s,
                                                               "by": user.id})
    if body.banned_words is not None:
        stream.banned_words = cs.validate_banned_words(body.banned_words)
        _after_commit_broadcast(session, settings, stream.id, {"type": "banned_words", "words": stream.banned_words})
    await session.flush()
    return {"slow_mode_s": stream.slow_mode_s, "banned_words": stream.banned_words}


@router.get("/{stream_id}/emotes")
async def emotes(stream_id: str, session: Session, viewer: OptionalUser):
    stream = await live.get_visible(session, stream_id, viewer)
    own = await cs.list_emotes(session, stream.owner_id)
    return {"global": [{"name": n, "emoji": e} for n, e in cs.GLOBAL_EMOTES.items()],
            "streamer": [{"name": e.name, "url": cs.emote_url(e.id)} for e in own]}


@router.post("/{stream_id}/emotes", status_code=201)
async def add_emote(stream_id: str, body: EmoteRequest, session: Session, user: CurrentUser, settings: Settings,
                    store: Store):
    stream = await live.get_owned(session, stream_id, user)
    try:
        data = base64.b64decode(body.image_base64, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("image_base64 is not base64", field="image_base64") from None
    emote = await cs.add_emote(session, store, stream, body.name, data)
    out = {"name": emote.name, "url": cs.emote_url(emote.id)}
    _after_commit_broadcast(session, settings, stream.id, {"type": "emote_added", **out})
    return out


@router.delete("/{stream_id}/emotes/{name}")
async def remove_emote(stream_id: str, name: str, session: Session, user: CurrentUser, settings: Settings,
                       store: Store):
    stream = await live.get_owned(session, stream_id, user)
    emote = await cs.remove_emote(session, store, stream, name)
    on_commit(session, lambda: store.delete(emote.blob_key))
    _after_commit_broadcast(session, settings, stream.id, {"type": "emote_removed", "name": emote.name})
    return {"name": emote.name, "removed": True}
