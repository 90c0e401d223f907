"""The Go-live page (/live/go: ingest URL and key for OBS, preview) and the live page
(/live/{stream_id}: low-latency player + chat). Shells only: behaviour in /static/live/*.js,
styles in /static/live/live.css, so the strict Content-Security-Policy of the web client holds."""

from __future__ import annotations

import html
import re
from pathlib import Path
from string import Template

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from clipfeed.errors import NotFound
from clipfeed.web.pages import page, render

router = APIRouter(include_in_schema=False)

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
_STREAM_ID = re.compile(r"^[0-9a-z]{1,16}$")
_STATIC_NAME = re.compile(r"^[a-z_-]+\.(js|css)$")
_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}

_GO_LIVE = Template((TEMPLATES / "go_live.html").read_text(encoding="utf-8"))
_LIVE = Template((TEMPLATES / "live.html").read_text(encoding="utf-8"))
_STYLE = '<link rel="stylesheet" href="/static/live/live.css">'


@router.get("/live/go", response_class=HTMLResponse)
async def go_live() -> HTMLResponse:
    body = _STYLE + _GO_LIVE.substitute()
    return page(render("Go live · clipfeed", body, scripts=("/static/vendor/hls.min.js",),
                       modules=("/static/live/go_live.js",)))


@router.get("/live/{stream_id}", response_class=HTMLResponse)
async def live_page(stream_id: str) -> HTMLResponse:
    known = bool(_STREAM_ID.match(stream_id))
    body = _STYLE + _LIVE.substitute(stream_id=html.escape(stream_id if known else "", quote=True))
    return page(render("Live · clipfeed", body, scripts=("/static/vendor/hls.min.js",),
                       modules=("/static/live/live.js",)), status=200 if known else 404)


@router.get("/static/live/{name}")
async def live_static(name: str) -> FileResponse:
    path = STATIC / name
    if not _STATIC_NAME.match(name) or not path.is_file():
        raise NotFound("no such file")
    return FileResponse(path, media_type=_TYPES[name.rsplit(".", 1)[1]],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
