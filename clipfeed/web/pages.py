"""Server-rendered shells of the web client: the landing page and /watch/{video_id}.

Pages are static templates (string.Template, values HTML-escaped); all behaviour lives in
/static/*.js and all styling in /static/*.css, so a strict Content-Security-Policy holds:
no inline script, no inline style.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from string import Template

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

TEMPLATES = Path(__file__).parent / "templates"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "media-src 'self' blob:",
    "worker-src 'self' blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'self'",
])

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

_VIDEO_ID = re.compile(r"^[0-9A-Za-z]{1,32}$")


def _load(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


_LAYOUT = _load("layout.html")
_WATCH = _load("watch.html")
_INDEX = _load("index.html")


def render(title: str, body: str, *, scripts: tuple[str, ...] = (), modules: tuple[str, ...] = ()) -> str:
    tags = [f'<script src="{html.escape(src)}" defer></script>' for src in scripts]
    tags += [f'<script type="module" src="{html.escape(src)}"></script>' for src in modules]
    return _LAYOUT.substitute(title=html.escape(title), body=body, scripts="\n    ".join(tags))


def page(content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status, headers=PAGE_HEADERS)


@router.get("/", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    return page(render("clipfeed", _INDEX.substitute()))


@router.get("/watch/{video_id}", response_class=HTMLResponse)
async def watch(video_id: str) -> HTMLResponse:
    # The page is a shell: watch.js asks the API for the video (which applies visibility rules),
    # so a hidden video shows "not found" to others exactly like an unknown one.
    known_shape = bool(_VIDEO_ID.match(video_id))
    body = _WATCH.substitute(video_id=html.escape(video_id if known_shape else "", quote=True))
    return page(render("clipfeed", body, scripts=("/static/vendor/hls.min.js",), modules=("/static/watch.js",)),
                status=200 if known_shape else 404)
