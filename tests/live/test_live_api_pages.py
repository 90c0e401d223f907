"""The Go-live and live pages: shells under the strict CSP, their scripts served, ids checked."""

from __future__ import annotations

import re

import pytest

from tests.browser import chromium
from tests.conftest import register


def test_pages_are_csp_clean_shells(client):
    for path in ("/live/go", "/live/abc123"):
        response = client.get(path)
        assert response.status_code == 200
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page = response.text
        # No inline script or style: every <script> has a src, no style attributes or blocks.
        assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", page))
        assert "<style" not in page and " style=" not in page
        assert "/static/vendor/hls.min.js" in page
    assert 'data-stream-id="abc123"' in client.get("/live/abc123").text
    hostile = client.get("/live/%22%3E%3Cscript%3E")
    assert hostile.status_code == 404 and "<script>alert" not in hostile.text and 'data-stream-id=""' in hostile.text

    for name, kind in (("live.js", "javascript"), ("go_live.js", "javascript"), ("player.js", "javascript"),
                       ("live.css", "css")):
        asset = client.get(f"/static/live/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    assert client.get("/static/live/nope.js").status_code == 404
    assert client.get("/static/live/..%2Fpages.py").status_code == 404
    # The web client's own static files are still served by the /static mount.
    assert client.get("/static/app.css").status_code == 200


@pytest.mark.browser
def test_live_page_chat_in_chromium(live_server, client):
    """A signed-in viewer chats from the live page (cookie-authenticated WebSocket from our own
    origin); messages from others appear with emotes and badges; no CSP or console errors."""
    from tests.live.test_chat import Chat, said, start_stream

    owner, fan = register(client), register(client)
    stream_id = start_stream(client, owner, title="browser show")
    streamer = Chat(live_server.url, stream_id, owner["token"])
    try:
        with chromium() as browser:
            context = browser.new_context()
            context.add_cookies([{"name": "clipfeed_session", "value": fan["token"], "url": live_server.url}])
            page = context.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{live_server.url}/live/{stream_id}")
            page.wait_for_function("() => document.getElementById('live-title').textContent === 'browser show'")
            # The page's socket is open once the streamer's message reaches it.
            streamer.say("welcome :wave:")
            page.wait_for_function("() => document.getElementById('chat-log').textContent.includes('welcome')")
            line = page.locator("#chat-log li").last
            assert line.locator(".badge").inner_text() == "streamer"
            assert "\U0001f44b" in line.inner_text()
            # Fan-out frames are written uncompressed (RSV1 clear) although Chromium negotiated
            # permessage-deflate, and several may share one frame as a JSON array: a burst
            # renders in order.
            for word in ("one", "two", "three"):
                streamer.say(f"burst {word}")
            page.wait_for_function("() => document.getElementById('chat-log').textContent.includes('burst three')")
            texts = page.locator("#chat-log li").all_inner_texts()
            assert [t.split("burst ")[-1] for t in texts if "burst " in t] == ["one", "two", "three"], texts
            page.fill("#chat-text", "hello from chromium <b>not bold</b>")
            page.click("#chat-form button")
            streamer.wait_for(said("hello from chromium <b>not bold</b>"))
            page.wait_for_function("() => document.getElementById('chat-log').textContent.includes('not bold')")
            assert page.locator("#chat-log b").count() == 0  # text, never markup
            assert not errors, errors
    finally:
        streamer.close()
