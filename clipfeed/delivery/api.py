"""GET/HEAD /media/{key}: playlists, segments, images and sounds from the BlobStore.

The per-request path is kept lean (this is the origin for segments): the key is matched against
an allow-list, the video's access facts come from a ~2 s in-process cache, the caller's session
is only looked up (through the same cache) for hidden videos without a valid signature and for
public ones requested with a session (a block hides a creator's media from the blocked user), and
the body streams from the store in constant memory.

Access model, by design:
- PUBLIC (and unlisted) media is served to anonymous requests. It must be: the share page, embeds,
  players without cookies and CDN edges fetch it without a session, and its responses are
  ``Cache-Control: public`` so an edge can serve them. A block therefore cannot stop someone who
  signs out (or asks a cache); it stops the blocked user's own signed-in session, which is what
  the app and the web client use: a request carrying a session of a user blocked with the
  creator (either way) gets 404 for the creator's renditions, segments, posters, previews,
  storyboards and sounds, exactly as for a video that does not exist.
- Followers-only and private media is never anonymous: it needs the owner's (or a follower's)
  session, or a signed URL (``?exp&sig``, see service.py) minted for someone who may see it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from clipfeed.delivery import service
from clipfeed.delivery.service import AccessCache, Kind, Signature
from clipfeed.deps import request_token
from clipfeed.errors import ClipfeedError, Forbidden, NotFound
from clipfeed.storage import InvalidKey

router = APIRouter(tags=["media"])

PREFIX = "/media/"
_ERROR_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class _Delivery:
    """Per-application state, built once on first use (settings are never re-read per request)."""

    def __init__(self, app) -> None:
        self.settings = app.state.settings
        self.signing_key: bytes = self.settings.signing_key
        self.store = app.state.store
        self.db = app.state.db
        self.cache = AccessCache(self.db)


def delivery_state(app) -> _Delivery:
    state = getattr(app.state, "delivery", None)
    if state is None:
        state = app.state.delivery = _Delivery(app)
    return state


def _not_found() -> NotFound:
    return NotFound("no such media", headers=dict(_ERROR_HEADERS))


def _raw_key(request: Request, key: str) -> str:
    """The key exactly as sent. Percent-encoding never appears in a key clipfeed builds, so any
    '%' (an encoded slash, dot, backslash or NUL) is refused rather than decoded."""
    raw = request.scope.get("raw_path")
    if raw is None:
        return key
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise _not_found() from None
    root = request.scope.get("root_path", "")
    if root and text.startswith(root):
        text = text[len(root):]
    if not text.startswith(PREFIX) or "%" in text:
        raise _not_found()
    return text[len(PREFIX):]


class BlobResponse(Response):
    """A response whose body is bytes or an async iterator of chunks; no body for HEAD."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes | AsyncIterator[bytes] | None):
        self.status_code = status
        self.raw_headers = headers
        self.background = None
        self._content = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        content = self._content
        if content is None or isinstance(content, bytes):
            await send({"type": "http.response.body", "body": content or b"", "more_body": False})
            return
        try:
            async for chunk in content:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-body
        finally:
            await content.aclose()


async def _refuse_blocked_session(state: _Delivery, request: Request, owner_id: str) -> None:
    """Public media: anyone may fetch it, except a signed-in viewer on the wrong side of a block
    with its creator. Only requests that carry a session pay for the (cached) check."""
    token = request_token(request)
    if token is not None:
        viewer_id = await state.cache.viewer_id(token)
        if (await state.cache.relation(viewer_id, owner_id)).blocked:
            raise _not_found()


@router.api_route("/media/{key:path}", methods=["GET", "HEAD"], response_class=Response,
                  summary="Serve a playlist, segment, image or sound (Range, ETag, Cache-Control)")
async def serve_media(key: str, request: Request) -> Response:
    state = delivery_state(request.app)
    media_key = service.parse_media_key(_raw_key(request, key))
    if media_key is None:
        raise _not_found()

    public, settled, sign_query, max_age_cap = True, True, None, None
    if media_key.sound_id is not None:
        sound_owner = await state.cache.sound_owner(media_key.sound_id)
        if sound_owner is None:
            raise _not_found()
        await _refuse_blocked_session(state, request, sound_owner)
    else:
        video_id = media_key.video_id
        access = await state.cache.video(video_id)
        if access is None or not access.servable:
            raise _not_found()
        settled = access.settled
        if access.public:
            await _refuse_blocked_session(state, request, access.owner_id)
        else:
            public = False
            params = request.query_params
            exp, sig = params.get("exp"), params.get("sig")
            verdict = service.check_signature(state.signing_key, video_id, exp, sig)
            if verdict is Signature.VALID:
                sign_query = service.sign_query(state.signing_key, video_id, int(exp))
                max_age_cap = int(exp) - int(time.time())
            else:
                token = request_token(request)
                viewer_id = await state.cache.viewer_id(token) if token else None
                rel = await state.cache.relation(viewer_id, access.owner_id)
                if not access.viewable_by(viewer_id, follows_owner=rel.follows_owner, blocked=rel.blocked):
                    if verdict is Signature.EXPIRED:
                        raise Forbidden("this media link has expired", code="link_expired",
                                        headers=dict(_ERROR_HEADERS))
                    raise _not_found()

    try:
        info = await state.store.stat(media_key.key)
    except InvalidKey:  # e.g. a symlink planted under the blob root pointing outside it
        info = None
    if info is None:
        raise _not_found()

    size, etag, body = info.size, info.etag, None
    if sign_query is not None and media_key.kind is not Kind.IMMUTABLE:
        # Playlists and the storyboard cues reference sibling files: make them carry the signature.
        try:
            text = (await state.store.read_all(media_key.key)).decode("utf-8")
        except (InvalidKey, FileNotFoundError, UnicodeDecodeError):
            raise _not_found() from None
        body = service.rewrite_for_signature(media_key.kind, text, sign_query).encode("utf-8")
        size = len(body)
        # The rewritten body depends on the signature: give it its own validator.
        etag = f'{etag[:-1]}-s{request.query_params["exp"]}"' if etag.endswith('"') else f"{etag}-s"

    headers = [
        (b"content-type", media_key.mime.encode()),
        (b"accept-ranges", b"bytes"),
        (b"etag", etag.encode()),
        (b"last-modified", service.http_date(info.modified).encode()),
        (b"cache-control", service.cache_control(media_key.kind, public=public, settled=settled,
                                                 max_age_cap=max_age_cap).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    req_headers = request.headers
    if service.not_modified(req_headers.get("if-none-match"), req_headers.get("if-modified-since"), etag,
                            info.modified):
        return BlobResponse(304, headers, None)

    start, end, status = 0, size, 200
    if service.if_range_matches(req_headers.get("if-range"), etag):
        wanted = service.parse_range(req_headers.get("range"), size)
        if wanted is service.UNSATISFIABLE:
            raise ClipfeedError("the requested range is outside the file", code="range_not_satisfiable",
                                status=416, headers={"Content-Range": f"bytes */{size}", **_ERROR_HEADERS})
        if wanted is not None:
            start, end = wanted
            status = 206
            headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
    headers.append((b"content-length", str(end - start).encode()))

    if request.method == "HEAD" or start == end:
        return BlobResponse(status, headers, None)
    if body is not None:
        return BlobResponse(status, headers, body[start:end])
    return BlobResponse(status, headers, state.store.read(media_key.key, start, end))
