"""Server-rendered shells of the web client: the single-page app at / (and every client route),
and /watch/{video_id}.

Pages are static templates (string.Template, values HTML-escaped); all behaviour lives in
/static/*.js and all styling in /static/*.css, so a strict Content-Security-Policy holds:
no inline script, no inline style.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from string import Template

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from clipfeed.deps import SESSION_COOKIE

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
_APP = _load("app.html")

# Paths the single-page app routes in the browser (static/app/main.js): the server answers each
# with the same shell, so a reload or a shared link lands on the right page.
APP_ROUTES = ("/", "/following", "/trending", "/login", "/signup", "/discover", "/upload", "/inbox",
              "/analytics", "/analytics/{video_id}", "/u/{handle}", "/tag/{tag}", "/sound/{sound_id}",
              "/video/{video_id}")


def render(title: str, body: str, *, scripts: tuple[str, ...] = (), modules: tuple[str, ...] = ()) -> str:
    tags = [f'<script src="{html.escape(src)}" defer></script>' for src in scripts]
    tags += [f'<script type="module" src="{html.escape(src)}"></script>' for src in modules]
    return _LAYOUT.substitute(title=html.escape(title), body=body, scripts="\n    ".join(tags))


def page(content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status, headers=PAGE_HEADERS)


async def app_shell(request: Request) -> HTMLResponse:
    # Whether a session cookie came with the page (not whether it is valid): without one the
    # client knows it is anonymous and skips asking /api/v1/me for a 401.
    session = "1" if request.cookies.get(SESSION_COOKIE) else "0"
    return page(render("clipfeed", _APP.substitute(session=session), scripts=("/static/vendor/hls.min.js",),
                       modules=("/static/app/main.js",)))


for _path in APP_ROUTES:
    router.add_api_route(_path, app_shell, methods=["GET"], response_class=HTMLResponse)


@router.get("/watch/{video_id}", response_class=HTMLResponse)
async def watch(video_id: str) -> HTMLResponse:
    # The page is a shell: watch.js asks the API for the video (which applies visibility rules),
    # so a hidden video shows "not found" to others exactly like an unknown one.
    known_shape = bool(_VIDEO_ID.match(video_id))
    body = _WATCH.substitute(video_id=html.escape(video_id if known_shape else "", quote=True))
    return page(render("clipfeed", body, scripts=("/static/vendor/hls.min.js",), modules=("/static/watch.js",)),
                status=200 if known_shape else 404)
