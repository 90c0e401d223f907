"""GET /media/live/{stream_id}/...: LL-HLS playlists (blocking reload), init segments, parts, segments.

Registered before the delivery router so ``/media/live/`` is never taken for a video's media key.

* Names are matched against a fixed grammar (``master.m3u8``, ``<rung>/index.m3u8``,
  ``<rung>/init.mp4``, ``<rung>/s<n>.m4s``, ``<rung>/p<n>.<i>.m4s``) and the stream id against
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
_NAME = re.compile(r"^(?:(master\.m3u8)|([a-z]{1,8})/(index\.m3u8|init\.mp4|s\d{1,9}\.m4s|p\d{1,9}\.\d{1,4}\.m4s))$")
_PART = re.compile(r"^p(\d+)\.(\d+)\.m4s$")
_MIME = {".m3u8": "application/vnd.apple.mpegurl", ".mp4": "video/mp4", ".m4s": "video/iso.segment"}
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
FILE_POLL_S = 0.05


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


async def _wait(rung_dir: Path, msn: int, part: int | None, timeout_s: float) -> None:
    """Hold until the rung's playlist holds (msn, part), or the timeout passes."""
    packager = packaging.active(rung_dir)
    deadline = time.monotonic() + timeout_s
    if packager is not None:
        current, _ = packager.position()
        if msn > current + 2:
            raise ValidationFailed("_HLS_msn is more than two segments ahead of the live edge",
                                   code="msn_too_far", headers=dict(_NO_STORE))
        cond = packager.changed
        async with cond:
            try:
                await asyncio.wait_for(cond.wait_for(lambda: packager.has(msn, part)), timeout_s)
            except asyncio.TimeoutError:
                pass
        return
    playlist = rung_dir / packaging.PLAYLIST
    first = True
    while True:
        try:
            current, parts, ended = packaging.playlist_position(playlist.read_text())
        except OSError:
            current, parts, ended = -1, 0, False
        if first and current >= 0 and msn > current + 2:
            raise ValidationFailed("_HLS_msn is more than two segments ahead of the live edge",
                                   code="msn_too_far", headers=dict(_NO_STORE))
        first = False
        satisfied = ended or current > msn or (current == msn and (parts == -1 or (part is not None and part < parts)))
        if satisfied or time.monotonic() >= deadline:
            return
        await asyncio.sleep(FILE_POLL_S)  # another process writes the playlist: nothing to wait on


async def _note_viewer(request: Request, stream_id: str) -> None:
    from clipfeed.live import service

    settings = request.app.state.settings
    token = request_token(request)
    client = request.client.host if request.client else None
    # A signed-in viewer is keyed by the token's hash (no database hit on the hot path); chat
    # keys them by user id, so someone watching and chatting may count twice while signed in.
    user_key = "t" + hashlib.sha256(token.encode()).hexdigest()[:16] if token else None
    key = service.viewer_key_for(user_key, client, request.headers.get("user-agent"))
    try:
        await service.note_viewer(stream_id, key, settings)
    except Exception:  # presence is best effort; playback never fails for it
        pass


@router.get("/media/live/{stream_id}/{name:path}", summary="LL-HLS playlists, parts and segments of a live stream")
async def live_media(stream_id: str, name: str, request: Request) -> Response:
    raw = request.scope.get("raw_path", b"")
    if b"%" in raw or not _STREAM_ID.match(stream_id):
        raise _not_found()
    match = _NAME.match(name)
    if match is None:
        raise _not_found()
    settings = request.app.state.settings
    stream_dir = settings.resolved_data_dir / "live" / stream_id
    if not stream_dir.is_dir():
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
        await _wait(path.parent, int(hint.group(1)), int(hint.group(2)), timeout_s)
    elif leaf == packaging.MASTER and not path.exists():
        pass
    try:
        body = path.read_bytes()
    except OSError:
        raise _not_found() from None
    headers = {"Cache-Control": _cache_control(name), "X-Content-Type-Options": "nosniff"}
    return Response(body, media_type=_MIME[path.suffix], headers=headers)
