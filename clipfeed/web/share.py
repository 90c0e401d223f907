"""/v/{video_id}: the public share page (OpenGraph + Twitter player card, poster, embedded
player) and /v/{video_id}/embed, the bare player that the Twitter card frames.

Only ready public and unlisted videos have a share page; anything else is the same 404 page as
an unknown id. Unlisted pages carry ``robots: noindex``. Every user-provided value (caption,
handle, display name) is HTML-escaped here; playback is /static/watch.js with hls.js, as on
/watch, so no inline script or style is needed and the page's CSP stays strict.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from clipfeed.accounts import service as accounts
from clipfeed.deps import OptionalUser, Session, Settings
from clipfeed.errors import NotFound
from clipfeed.media.models import Visibility
from clipfeed.media.presenter import video_urls
from clipfeed.social.interactions import shareable_video
from clipfeed.web.pages import CONTENT_SECURITY_POLICY, PAGE_HEADERS, page, render

router = APIRouter(include_in_schema=False)

_SHARE = Template((Path(__file__).parent / "templates" / "share.html").read_text(encoding="utf-8"))
_EMBED_HEADERS = {**PAGE_HEADERS, "Content-Security-Policy":
                  CONTENT_SECURITY_POLICY.replace("frame-ancestors 'self'", "frame-ancestors *")}
_NOT_FOUND = ('    <main class="landing"><h1>Video not found</h1>'
              "<p>This video isn't available. It may have been removed, or it is private.</p></main>")


def _esc(value: str) -> str:
    return html.escape(value or "", quote=True)


def _meta(key: str, content: str | int | None, attr: str = "property") -> str:
    if content in (None, ""):
        return ""
    return f'<meta {attr}="{_esc(key)}" content="{_esc(str(content))}">'


def _title(caption: str, handle: str) -> str:
    caption = " ".join((caption or "").split())
    if not caption:
        return f"Video by @{handle} · clipfeed"
    return (caption if len(caption) <= 70 else caption[:69] + "…") + " · clipfeed"


async def _load(session, video_id: str, viewer):
    try:
        video = await shareable_video(session, video_id, viewer)
    except NotFound:
        return None, None
    return video, await accounts.get_user(session, video.owner_id)


def _base(settings, request: Request) -> str:
    return (settings.public_base_url or str(request.base_url)).rstrip("/")


@router.get("/v/{video_id}", response_class=HTMLResponse)
async def share_page(video_id: str, request: Request, session: Session, viewer: OptionalUser,
                     settings: Settings) -> HTMLResponse:
    video, owner = await _load(session, video_id, viewer)
    if video is None:
        return page(render("Video not found · clipfeed", _NOT_FOUND), status=404)
    base = _base(settings, request)
    urls = video_urls(video, settings)
    poster = base + urls["poster"] if urls.get("poster") else None
    hls = base + urls["hls"] if urls.get("hls") else None
    page_url = f"{base}/v/{video.id}"
    title = _title(video.caption, owner.handle)
    description = " ".join((video.caption or "").split())[:200] or f"Watch @{owner.handle} on clipfeed"
    width, height = video.width or 720, video.height or 1280
    tags = [
        _meta("description", description, "name"),
        _meta("robots", "noindex" if video.visibility == Visibility.UNLISTED else None, "name"),
        f'<link rel="canonical" href="{_esc(page_url)}">',
        _meta("og:site_name", "clipfeed"),
        _meta("og:type", "video.other"),
        _meta("og:title", title),
        _meta("og:description", description),
        _meta("og:url", page_url),
        _meta("og:image", poster),
        _meta("og:video", hls),
        _meta("og:video:secure_url", hls if hls and hls.startswith("https://") else None),
        _meta("og:video:type", "application/x-mpegURL" if hls else None),
        _meta("og:video:width", width if hls else None),
        _meta("og:video:height", height if hls else None),
        _meta("twitter:card", "player", "name"),
        _meta("twitter:title", title, "name"),
        _meta("twitter:description", description, "name"),
        _meta("twitter:image", poster, "name"),
        _meta("twitter:player", f"{page_url}/embed", "name"),
        _meta("twitter:player:width", width, "name"),
        _meta("twitter:player:height", height, "name"),
    ]
    byline = (f'<p class="byline">@{_esc(owner.handle)} · {_esc(owner.display_name)} · '
              f'<a href="/watch/{_esc(video.id)}">Open in clipfeed</a></p>')
    body = _SHARE.substitute(
        title=_esc(title), meta="\n    ".join(t for t in tags if t), video_id=_esc(video.id),
        poster=f' poster="{_esc(urls["poster"])}"' if urls.get("poster") else "",
        caption=_esc(video.caption), byline=byline)
    return page(body)


@router.get("/v/{video_id}/embed", response_class=HTMLResponse)
async def embed_page(video_id: str, session: Session, viewer: OptionalUser) -> HTMLResponse:
    video, owner = await _load(session, video_id, viewer)
    if video is None:
        return page(render("Video not found · clipfeed", _NOT_FOUND), status=404)
    robots = _meta("robots", "noindex", "name")
    body = _SHARE.substitute(title=_esc(_title(video.caption, owner.handle)), meta=robots, video_id=_esc(video.id),
                             poster="", caption=_esc(video.caption), byline="")
    return HTMLResponse(body, headers=_EMBED_HEADERS)
