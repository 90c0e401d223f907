"""/v/{id}: the public share page and its embed, through the real server, on every backend."""

from __future__ import annotations

from html.parser import HTMLParser

from tests.conftest import register
from tests.social import factories as f

HOSTILE = '<script>alert("pwned")</script> "quoted" & <img src=x onerror=alert(1)> #fun'


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.meta: dict[str, str] = {}
        self.scripts: list[dict] = []
        self.styles = 0
        self.inline_handlers: list[str] = []
        self.video: dict | None = None
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.inline_handlers += [name for name in attrs if name.startswith("on")]
        if tag == "meta" and ("property" in attrs or "name" in attrs):
            self.meta[attrs.get("property") or attrs["name"]] = attrs.get("content", "")
        elif tag == "script":
            self.scripts.append(attrs)
            self._in_script = True
        elif tag == "style" or "style" in attrs:
            self.styles += 1
        elif tag == "video":
            self.video = attrs

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.scripts.append({"inline": data})
        self.text.append(data)


def _parse(body: str) -> _Page:
    parsed = _Page()
    parsed.feed(body)
    return parsed


def test_share_page_has_open_graph_and_escapes_the_caption(client, live_server, user):
    video_id = f.make_video(live_server.settings, user["user"]["id"], caption=HOSTILE)
    response = client.get(f"/v/{video_id}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'self'" in csp
    body = response.text
    assert "<script>alert" not in body and "<img src=x" not in body
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in body
    page = _parse(body)
    # No inline script, handler or style: the CSP can stay strict.
    assert all("src" in script for script in page.scripts), page.scripts
    assert {s["src"] for s in page.scripts} == {"/static/vendor/hls.min.js", "/static/watch.js"}
    assert not page.inline_handlers and page.styles == 0
    meta = page.meta
    assert meta["og:title"].startswith('<script>alert("pwned")</script>')  # the text, as text
    assert meta["og:type"] == "video.other"
    assert meta["og:url"] == f"{live_server.url}/v/{video_id}"
    assert meta["og:image"] == f"{live_server.url}/media/videos/{video_id}/poster.jpg"
    assert meta["og:video"].startswith(live_server.url) and meta["og:video"].endswith("master.m3u8")
    assert meta["og:video:type"] == "application/x-mpegURL"
    assert meta["twitter:card"] == "player"
    assert meta["twitter:player"] == f"{live_server.url}/v/{video_id}/embed"
    assert meta["twitter:image"] == meta["og:image"]
    assert "robots" not in meta
    # The player is the /watch one: watch.js plays the video named here.
    assert f'data-video-id="{video_id}"' in body and page.video is not None
    assert page.video["poster"].endswith("poster.jpg")
    assert user["user"]["handle"] in "".join(page.text)


def test_share_page_visibility(client, live_server, user):
    settings = live_server.settings
    owner_id = user["user"]["id"]
    unlisted = f.make_video(settings, owner_id, visibility="unlisted", caption="link only")
    response = client.get(f"/v/{unlisted}")
    assert response.status_code == 200 and _parse(response.text).meta["robots"] == "noindex"
    for hidden in (f.make_video(settings, owner_id, visibility="private", caption="secret caption"),
                   f.make_video(settings, owner_id, visibility="followers", caption="secret caption"),
                   f.make_video(settings, owner_id, status="processing", caption="secret caption")):
        for headers in ({}, user["headers"]):  # not even the owner: there is no public page
            response = client.get(f"/v/{hidden}", headers=headers)
            assert response.status_code == 404 and "secret caption" not in response.text
    assert client.get("/v/nosuchvideo00000").status_code == 404
    assert client.get("/v/<script>").status_code == 404
    public = f.make_video(settings, owner_id)
    blocked = register(client)
    f.block(settings, owner_id, blocked["user"]["id"])
    assert client.get(f"/v/{public}", headers=blocked["headers"]).status_code == 404
    assert client.get(f"/v/{public}").status_code == 200


def test_embed_can_be_framed_and_escapes(client, live_server, user):
    video_id = f.make_video(live_server.settings, user["user"]["id"], caption=HOSTILE)
    response = client.get(f"/v/{video_id}/embed")
    assert response.status_code == 200
    assert "frame-ancestors *" in response.headers["content-security-policy"]
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "<script>alert" not in response.text
    page = _parse(response.text)
    assert all("src" in script for script in page.scripts)
    assert page.meta["robots"] == "noindex"
    private = f.make_video(live_server.settings, user["user"]["id"], visibility="private")
    assert client.get(f"/v/{private}/embed").status_code == 404
