"""Hooks for the nginx RTMP module (scale-out ingest, see deploy/nginx-rtmp.conf).

nginx calls ``on_publish`` with a form-encoded body (``app``, ``name`` = the stream key, ``addr``,
...) before it accepts any media; a 2xx lets the publisher in, anything else makes nginx drop
it. The check is the same ``authorize_publish`` the built-in RTMP server uses (key valid, stream
not ended, nobody else publishing; the stream is claimed). ``on_publish_done`` releases the
claim through ``publish_ended``. Both require ``?secret=`` equal to ``live_hook_secret``; with no
secret configured the hooks do not exist (404), so they are never an open door.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import PlainTextResponse

from clipfeed.deps import Session
from clipfeed.errors import Forbidden, NotFound
from clipfeed.live import service
from clipfeed.live.models import LiveStream

router = APIRouter(prefix="/api/v1/live/hooks", tags=["live"], include_in_schema=False)

MAX_FORM_BYTES = 8192


async def _form(request: Request) -> dict[str, str]:
    settings = request.app.state.settings
    secret = settings.live_hook_secret
    if not secret:
        raise NotFound("no such hook")
    given = request.query_params.get("secret", "")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise Forbidden("wrong hook secret")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Forbidden("hook body too large")
    from urllib.parse import parse_qsl

    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _key(form: dict[str, str]) -> str:
    return form.get("name", "").split("?", 1)[0].strip()


@router.post("/on_publish")
async def on_publish(request: Request, session: Session) -> PlainTextResponse:
    form = await _form(request)
    if form.get("app", "live").strip("/") != "live":
        raise service.PublishRefused("unknown application")
    stream = await service.authorize_publish(session, _key(form))
    return PlainTextResponse(f"ok {stream.id}\n")


@router.post("/on_publish_done")
async def on_publish_done(request: Request, session: Session) -> PlainTextResponse:
    form = await _form(request)
    key = _key(form)
    stream_id = await session.scalar(select(LiveStream.id).where(LiveStream.stream_key_hash == service.hash_key(key))) \
        if key else None
    if stream_id is None:
        raise NotFound("unknown stream key")
    await service.publish_ended(session, stream_id, None)
    return PlainTextResponse("ok\n")
