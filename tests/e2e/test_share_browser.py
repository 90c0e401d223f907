"""/v/{id}, the public share page, in Debian's chromium (marker `browser`): OpenGraph/Twitter
meta, the poster and the embedded player that plays; captions with markup stay text; private
videos have no share page."""

from __future__ import annotations

import httpx
import pytest

from clipfeed.media.models import Visibility
from tests.conftest import register
from tests.e2e.test_watch_browser import (  # noqa: F401  (browser and sample_media are fixtures)
    ARTIFACTS,
    PLAYING,
    browser,
    fixture_video,
    processed_video,
    sample_media,
)

MOBILE = dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)


@pytest.fixture
def pages(browser):
    """Fresh anonymous browser pages (a shared link is opened by someone who is not signed in),
    each recording console errors and uncaught exceptions."""
    contexts = []

    def make():
        context = browser.new_context(**MOBILE)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.errors = []
        page.on("console", lambda msg: msg.type == "error" and page.errors.append(msg.text))
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        return page

    yield make
    for context in contexts:
        context.close()


def _meta(page, key: str, attr: str = "property") -> str | None:
    locator = page.locator(f'meta[{attr}="{key}"]')
    return locator.first.get_attribute("content") if locator.count() else None


def _plays(page) -> None:
    page.wait_for_function(PLAYING)
    start = page.evaluate("document.getElementById('player').currentTime")
    page.wait_for_function("t => document.getElementById('player').currentTime > t + 0.3", arg=start)


@pytest.mark.browser
def test_share_page_has_card_meta_poster_and_a_player_that_plays(live_server, client, pages, sample_media):
    owner = register(client)
    video_id, how = processed_video(live_server, owner, sample_media, "Morning run by the river #run")
    page = pages()
    response = page.goto(f"{live_server.url}/v/{video_id}")
    assert response.status == 200
    base = live_server.url

    # The card: what a link preview (OpenGraph, Twitter) reads.
    assert page.title() == "Morning run by the river #run · clipfeed"
    assert _meta(page, "og:title") == "Morning run by the river #run · clipfeed"
    assert _meta(page, "og:type") == "video.other"
    assert _meta(page, "og:url") == f"{base}/v/{video_id}"
    assert _meta(page, "og:description") == "Morning run by the river #run"
    og_image, og_video = _meta(page, "og:image"), _meta(page, "og:video")
    assert og_image == f"{base}/media/videos/{video_id}/poster.jpg"
    assert og_video == f"{base}/media/videos/{video_id}/hls/master.m3u8"
    assert _meta(page, "og:video:type") == "application/x-mpegURL"
    assert (_meta(page, "og:video:width"), _meta(page, "og:video:height")) == ("360", "640")
    assert _meta(page, "twitter:card", "name") == "player"
    assert _meta(page, "twitter:image", "name") == og_image
    assert _meta(page, "twitter:player", "name") == f"{base}/v/{video_id}/embed"
    assert page.locator('link[rel="canonical"]').get_attribute("href") == f"{base}/v/{video_id}"
    # The URLs in the card answer, anonymously, with the right types.
    with httpx.Client(timeout=30) as anonymous:
        image = anonymous.get(og_image)
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content[:3] == b"\xff\xd8\xff"
        master = anonymous.get(og_video)
        assert master.status_code == 200 and master.text.startswith("#EXTM3U")

    # The poster is on the player and really loads as an image in the browser.
    poster = page.evaluate("document.getElementById('player').getAttribute('poster')")
    assert poster == f"/media/videos/{video_id}/poster.jpg"
    size = page.evaluate("""src => new Promise(resolve => { const img = new Image();
        img.onload = () => resolve([img.naturalWidth, img.naturalHeight]); img.onerror = () => resolve(null);
        img.src = src; })""", poster)
    assert size and size[0] > 0 and size[1] > size[0], size

    # The embedded player plays: currentTime advances.
    _plays(page)
    assert page.locator("#caption").inner_text() == "Morning run by the river #run"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "share-390x844.png"))
    assert page.errors == [], page.errors

    # The Twitter player card frames /v/{id}/embed: it plays too.
    embed = pages()
    assert embed.goto(f"{base}/v/{video_id}/embed").status == 200
    _plays(embed)
    assert embed.errors == [], embed.errors
    print(f"share page played a video made by: {how}")


@pytest.mark.browser
def test_a_caption_with_script_is_shown_as_text_and_never_runs(live_server, client, pages, sample_media):
    owner = register(client)
    caption = ('<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
               '" onmouseover="window.__pwned=3" \'><b>bold?</b>')
    video_id = fixture_video(live_server, owner, sample_media, caption=caption)
    page = pages()
    assert page.goto(f"{live_server.url}/v/{video_id}").status == 200
    _plays(page)
    # Shown verbatim as text, in the page and in the card's attributes.
    assert page.locator("#caption").inner_text() == caption
    assert page.locator("#caption").evaluate("el => el.children.length") == 0
    assert _meta(page, "og:description") == " ".join(caption.split())
    assert page.title().startswith("<script>window.__pwned")
    # Nothing ran and nothing was injected: only the two /static scripts exist, no <img>, no <b>.
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("[...document.scripts].map(s => new URL(s.src).pathname)") == \
        ["/static/vendor/hls.min.js", "/static/watch.js"]
    assert page.locator("img, b").count() == 0
    page.dispatch_event("#caption", "mouseover")
    assert page.evaluate("window.__pwned") is None
    assert page.errors == [], page.errors  # not even a CSP refusal: nothing tried to run


@pytest.mark.browser
def test_a_private_video_has_no_share_page(live_server, client, pages, sample_media):
    owner = register(client)
    video_id = fixture_video(live_server, owner, sample_media, caption="just for me",
                             visibility=Visibility.PRIVATE)
    for token in (None, register(client)["token"]):
        page = pages()
        if token:
            page.context.add_cookies([{"name": "clipfeed_session", "value": token, "url": live_server.url}])
        for path in (f"/v/{video_id}", f"/v/{video_id}/embed"):
            response = page.goto(f"{live_server.url}{path}")
            assert response.status == 404, path
            assert "Video not found" in page.title()
            assert page.locator("video").count() == 0
            assert _meta(page, "og:title") is None and _meta(page, "og:image") is None
            assert "just for me" not in page.content()
    # Sharing it through the API is refused as well (no existence leak: 404).
    shared = client.post(f"/api/v1/videos/{video_id}/share", json={}, headers=owner["headers"])
    assert shared.status_code in (403, 404, 422), shared.text
    # Made public, the same link works.
    assert client.patch(f"/api/v1/videos/{video_id}", json={"visibility": "public"},
                        headers=owner["headers"]).status_code == 200
    page = pages()
    assert page.goto(f"{live_server.url}/v/{video_id}").status == 200
    _plays(page)
