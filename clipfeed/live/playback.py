"""GET /media/live/{stream_id}/...: LL-HLS playlists (blocking reload), init segments, parts, segments.

Registered before the delivery router so ``/media/live/`` is never taken for a video's media key.

* Names are matched against a fixed grammar (``master.m3u8``, ``<rung>/index.m3u8``,
  ``<rung>/init.mp4``, ``<rung>/s<n>.m4s``, ``<rung>/part<n>.m4s``) and the stream id against
  the id alphabet, so no path can leave the stream's folder; anything else is a 404, as is an
  unknown stream.
* Blocking reload: ``index.m3u8?_HLS_msn=M[&_HLS_part=P]`` is held until the playlist holds
  segment M (part P), waiting on the packager's ``asyncio.Condition`` (or re-reading the playlist
  every 50 ms when the ingest runs in another process), at most ``live_block_timeout_s``; a
  request more than two segments ahead is a 400, as the LL-HLS spec asks.
* A request for the part named in ``EXT-X-PRELOAD-HINT`` is held the same way until it exists.
* Cache-Control: playlists ``max-age=1`` (a blocking request's URL names the version it waits
  for, so an edge may cache it briefly and collapse identical requests), ``master.m3u8`` a few
  seconds, parts/segments/init ``max-age=86400, immutable`` (their names are never reused within a
  publish session).
* Media playlist requests report the viewer (deduplicated by ``live.service.viewer_key_for``).
* Visibility follows the stream's: public and unlisted streams are served to anyone with the id
  (and may sit in shared caches); followers-only and private ones only to whom
  ``live.service.get_visible`` allows, with ``Cache-Control: private``; hidden = 404.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

from clipfeed.deps import request_token
from clipfeed.errors import NotFound, ValidationFailed
from clipfeed.live import packager as packaging

router = APIRouter(tags=["live"])

_STREAM_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_NAME = re.compile(r"^(?:(master\.m3u8)|([a-z]{1,8})/(index\.m3u8|init\.mp4|s\d{1,9}\.m4s|part\d{1,9}\.m4s))$")
_PART = re.compile(r"^part(\d+)\.m4s$")
_MIME = {".m3u8": "application/vnd.apple.mpegurl", ".mp4": "video/mp4", ".m4s": "video/iso.segment"}
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
FILE_POLL_S = 0.05
MAX_PARTS_AHEAD = 3  # a part request further ahead of the preload hint is a 404 at once


def _not_found() -> NotFound:
    return NotFound("no such live media", headers=dict(_NO_STORE))


def _cache_control(name: str) -> str:
    if name.endswith(".m4s") or name.endswith("init.mp4"):
        return "public, max-age=86400, immutable"
    if name == "master.m3u8":
        return "public, max-age=2"
    return "public, max-age=1"


def _int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 9:
        raise ValidationFailed(f"{name} must be a non-negative integer", field=name)
    return int(value)


async def _wait(rung_dir: Path, msn: int | None, part: int | None, timeout_s: float, *,
                part_file: int | None = None) -> None:
    """Hold until the rung's playlist holds segment ``msn`` (its part ``part``), or part file
    number ``part_file`` exists, or the timeout passes."""
    packager = packaging.active(rung_dir)
    deadline = time.monotonic() + timeout_s
    if packager is not None:
        if msn is not None and msn > packager.position()[0] + 2:
            raise ValidationFailed("_HLS_msn is more than two segments ahead of the live edge",
                                   code="msn_too_far", headers=dict(_NO_STORE))
        if part_file is not None:
            if part_file > packager.next_part + MAX_PARTS_AHEAD:
                raise _not_found()  # not the hinted part: nothing to hold a connection for
            ready = lambda: packager.has_part(part_file)  # noqa: E731
        else:
            ready = lambda: packager.has(msn, part)  # noqa: E731
        cond = packager.changed
        async with cond:
            try:
                await asyncio.wait_for(cond.wait_for(ready), timeout_s)
            except asyncio.TimeoutError:
                pass
        return
    playlist = rung_dir / packaging.PLAYLIST
    first = True
    while True:
        try:
            current, parts, ended, next_part = packaging.playlist_position(playlist.read_text())
        except (OSError, ValueError, IndexError):
            current, parts, ended, next_part = -1, 0, False, 0
        if first and msn is not None and current >= 0 and msn > current + 2:
            raise ValidationFailed("_HLS_msn is more than two segments ahead of the live edge",
                                   code="msn_too_far", headers=dict(_NO_STORE))
        if first and part_file is not None and part_file > next_part + MAX_PARTS_AHEAD:
            raise _not_found()
        first = False
        if part_file is not None:
            satisfied = ended or part_file < next_part
        else:
            satisfied = ended or current > msn or (
                current == msn and (parts == -1 or (part is not None and part < parts)))
        if satisfied or time.monotonic() >= deadline:
            return
        await asyncio.sleep(FILE_POLL_S)  # another process writes the playlist: nothing to wait on


async def _note_viewer(request: Request, stream_id: str) -> None:
    from clipfeed.live import service

    state = request.app.state
    token = request_token(request)
    client = request.client.host if request.client else None
    try:
        # Keyed like chat sockets (user id when signed in), so watching and chatting count once;
        # the token -> user id lookup is cached, polls several times a second cost no query.
        user_id = await _user_id(state, token) if token else None
        key = service.viewer_key_for(user_id, client, request.headers.get("user-agent"))
        await service.note_viewer(stream_id, key, state.settings)
    except Exception:  # presence is best effort; playback never fails for it
        pass


USER_TTL_S = 60.0


async def _user_id(state, token: str) -> str | None:
    from clipfeed.accounts import service as accounts

    cache: dict = getattr(state, "live_viewer_users", None)
    if cache is None:
        cache = state.live_viewer_users = {}
    digest = hashlib.sha256(token.encode()).hexdigest()
    now = time.monotonic()
    hit = cache.get(digest)
    if hit is None or hit[0] <= now:
        if len(cache) > MAX_ACCESS_ENTRIES:
            cache.clear()
        async with state.db.transaction() as session:
            user = await accounts.user_for_token(session, token)
        hit = cache[digest] = (now + USER_TTL_S, user.id if user is not None else None)
    return hit[1]


ACCESS_TTL_S = 2.0
MAX_ACCESS_ENTRIES = 20_000


async def _audience(request: Request, stream_id: str) -> str | None:
    """"public" (anyone with the id: public and unlisted streams), "private" (this caller may see
    a followers-only or private stream), or None (unknown stream, or hidden from this caller -
    both a 404). Cached for ~2 s per stream (and per caller for restricted streams): playlist
    polls arrive several times a second per viewer and must not each cost a query."""
    from clipfeed.accounts import service as accounts
    from clipfeed.live import service
    from clipfeed.live.models import LiveStream

    state = request.app.state
    cache: dict = getattr(state, "live_access", None)
    if cache is None:
        cache = state.live_access = {}
    now = time.monotonic()
    if len(cache) > MAX_ACCESS_ENTRIES:
        cache.clear()
    hit = cache.get(stream_id)
    if hit is None or hit[0] <= now:
        async with state.db.transaction() as session:
            stream = await session.get(LiveStream, stream_id)
            visibility = stream.visibility if stream is not None else None
        hit = cache[stream_id] = (now + ACCESS_TTL_S, visibility)
    visibility = hit[1]
    if visibility is None:
        return None
    if visibility in ("public", "unlisted"):
        return "public"
    token = request_token(request)
    key = (stream_id, hashlib.sha256(token.encode()).hexdigest() if token else "")
    hit = cache.get(key)
    if hit is None or hit[0] <= now:
        allowed = True
        async with state.db.transaction() as session:
            user = await accounts.user_for_token(session, token) if token else None
            try:
                await service.get_visible(session, stream_id, user)
            except NotFound:
                allowed = False
        hit = cache[key] = (now + ACCESS_TTL_S, allowed)
    return "private" if hit[1] else None


@router.get("/media/live/{stream_id}/{name:path}", summary="LL-HLS playlists, parts and segments of a live stream")
async def live_media(stream_id: str, name: str, request: Request) -> Response:
    raw = request.scope.get("raw_path", b"")
    if b"%" in raw or not _STREAM_ID.match(stream_id):
        raise _not_found()
    match = _NAME.match(name)
    if match is None:
        raise _not_found()
    settings = request.app.state.settings
    # The ingest's local files, whatever blob store is configured (Settings.live_dir says why).
    stream_dir = settings.resolved_live_dir / stream_id
    if not stream_dir.is_dir():
        raise _not_found()
    audience = await _audience(request, stream_id)
    if audience is None:
        raise _not_found()
    path = stream_dir / name
    timeout_s = settings.live_block_timeout_s
    leaf = path.name
    if leaf == packaging.PLAYLIST:
        msn, part = _int_param(request, "_HLS_msn"), _int_param(request, "_HLS_part")
        if part is not None and msn is None:
            raise ValidationFailed("_HLS_part needs _HLS_msn", field="_HLS_part", headers=dict(_NO_STORE))
        if msn is not None:
            await _wait(path.parent, msn, part, timeout_s)
        await _note_viewer(request, stream_id)
    elif (hint := _PART.match(leaf)) is not None and not path.exists():
        # The preload hint: hold the request until the part is written (or give up).
        await _wait(path.parent, None, None, timeout_s, part_file=int(hint.group(1)))
    elif leaf == packaging.MASTER and not path.exists():
        pass
    try:
        body = path.read_bytes()
    except OSError:
        raise _not_found() from None
    cache_control = _cache_control(name)
    if audience != "public":  # followers-only / private: never in a shared cache
        cache_control = cache_control.replace("public", "private")
    headers = {"Cache-Control": cache_control, "X-Content-Type-Options": "nosniff"}
    return Response(body, media_type=_MIME[path.suffix], headers=headers)
