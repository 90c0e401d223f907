"""Chromium plays a live stream's LL-HLS playlist with hls.js in low-latency mode (loading parts)."""

from __future__ import annotations


import httpx
import pytest

from tests.browser import chromium
from tests.conftest import LiveServer, wait_for
from tests.live.ingest_support import publish, rtmp_port, start_stream


# A minimal page (the product's live page belongs to the web client); served at the server's own
# origin through Playwright's router so hls.js fetches the playlists same-origin.
PAGE = """<!doctype html><html><body>
<video id="player" muted playsinline autoplay></video>
<script src="/static/vendor/hls.min.js"></script>
<script>
  window.parts = 0; window.errors = [];
  const video = document.getElementById('player');
  const hls = new Hls({lowLatencyMode: true, backBufferLength: 10, maxLiveSyncPlaybackRate: 1.5});
  hls.on(Hls.Events.FRAG_LOADED, (_e, data) => { if (data.part) window.parts += 1; });
  hls.on(Hls.Events.ERROR, (_e, data) => { if (data.fatal) window.errors.push(data.details); });
  hls.loadSource(new URLSearchParams(location.search).get('src'));
  hls.attachMedia(video);
  window.hls = hls;
</script></body></html>"""


@pytest.fixture
def ingest_server(settings_factory):
    server = LiveServer(settings_factory(rtmp_enabled=True, rtmp_port=0)).start()
    yield server
    server.stop()


@pytest.fixture
def browser(ingest_server):
    with chromium("hls.min.js") as instance:
        yield instance


@pytest.mark.browser
def test_hls_js_plays_the_live_stream_in_low_latency_mode(ingest_server, browser, tmp_path):
    with httpx.Client(base_url=ingest_server.url, timeout=30) as http:
        stream = start_stream(http)
        publisher = publish(rtmp_port(ingest_server), stream["stream_key"], seconds=25, log=tmp_path / "pub.log")
        try:
            master = f"/media/live/{stream['stream_id']}/master.m3u8"
            wait_for(lambda: http.get(master).status_code == 200, timeout=30, message="master playlist")
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.route(f"{ingest_server.url}/live-test.html**",
                       lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE))
            page.goto(f"{ingest_server.url}/live-test.html?src={master}")
            page.wait_for_function("() => { const v = document.getElementById('player');"
                                   " return v.videoWidth > 0 && v.currentTime > 0.5 && !v.paused; }")
            start = page.evaluate("document.getElementById('player').currentTime")
            page.wait_for_function("t => document.getElementById('player').currentTime > t + 6", arg=start)
            state = page.evaluate("""() => ({parts: window.parts, errors: window.errors, lowLatency: hls.lowLatencyMode,
                latency: hls.latency, width: document.getElementById('player').videoWidth})""")
            print("hls.js", state)
            assert state["errors"] == [], state
            assert state["lowLatency"] and state["parts"] > 0, state
            assert state["width"] in (854, 640), state
            # With catch-up allowed hls.js settles near PART-HOLD-BACK (~1 s) behind the live edge.
            assert 0 < state["latency"] < 2.0, state
            # Viewers are counted from playlist polls.
            state_api = http.get(f"/api/v1/live/{stream['stream_id']}").json()
            assert state_api["viewers"] >= 1, state_api
            context.close()
        finally:
            publisher.kill()
            publisher.wait()
