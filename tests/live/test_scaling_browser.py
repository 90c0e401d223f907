"""The scaling rule reaches players already watching: the live page's player (player.js, hls.js)
re-reads the master playlist, loads the rung added mid-stream and can switch to it; the master
never lists a rung before it has media (no 404s)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import LiveServer, wait_for
from tests.live.ingest_support import publish, rtmp_port, start_stream
from tests.live.test_ingest_browser import browser  # noqa: F401 - the Chromium fixture

# The product's player module on a bare page at the server's origin (the live page adds chat).
PAGE = """<!doctype html><html><body>
<video id="player" muted playsinline autoplay></video>
<script src="/static/vendor/hls.min.js"></script>
<script type="module">
  import { playLive } from "/static/live/player.js";
  window.errors = []; window.missing = [];
  const hls = playLive(document.getElementById('player'), new URLSearchParams(location.search).get('src'),
                       { rungCheckMs: 1000 });
  hls.on(Hls.Events.ERROR, (_e, data) => {
    if (data.fatal) window.errors.push(data.details);
    if (data.response && data.response.code === 404) window.missing.push(data.url || data.details);
  });
  // How long a rung reload interrupts playback: manifest (re)load -> the next 'playing'.
  window.loads = []; window.playing = [];
  hls.on(Hls.Events.MANIFEST_LOADING, () => window.loads.push(performance.now()));
  document.getElementById('player').addEventListener('playing', () => window.playing.push(performance.now()));
  window.hls = hls;
</script></body></html>"""


@pytest.fixture
def ingest_server(settings_factory):
    settings = settings_factory(rtmp_enabled=True, rtmp_port=0, live_scale_viewers=2,
                                # Rungs as in production, smaller: low 180p, mid (scaled) 360p, src 480p.
                                live_low_short_edge=180, live_low_video_kbps=200,
                                live_scale_short_edge=360, live_scale_video_kbps=600, live_ingest_check_s=0.5)
    server = LiveServer(settings).start()
    yield server
    server.stop()


def _width(page) -> int:
    return page.evaluate("document.getElementById('player').videoWidth")


@pytest.mark.browser
def test_a_rung_added_mid_stream_reaches_a_player_already_watching(ingest_server, browser, tmp_path):  # noqa: F811
    with httpx.Client(base_url=ingest_server.url, timeout=30, headers={"User-Agent": "second-viewer"}) as http:
        stream = start_stream(http)
        base = f"/media/live/{stream['stream_id']}"
        publisher = publish(rtmp_port(ingest_server), stream["stream_key"], seconds=40, log=tmp_path / "pub.log")
        try:
            wait_for(lambda: http.get(f"{base}/master.m3u8").status_code == 200, timeout=30, message="master")
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(30_000)
            context.route(f"{ingest_server.url}/scale-test.html**",
                       lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE))
            playing = ("() => { const v = document.getElementById('player');"
                       " return v.videoWidth > 0 && v.currentTime > 0.5 && !v.paused; }")
            page.goto(f"{ingest_server.url}/scale-test.html?src={base}/master.m3u8")
            page.wait_for_function(playing)
            # A second player (same viewer) on the top rung: the new rung would not serve it better.
            top = context.new_page()
            top.set_default_timeout(30_000)
            top.goto(f"{ingest_server.url}/scale-test.html?src={base}/master.m3u8")
            top.wait_for_function(playing)
            top.evaluate("hls.currentLevel = hls.levels.findIndex(l => l.height === 480)")
            top.wait_for_function("() => document.getElementById('player').videoWidth === 854")
            names = page.evaluate("hls.levels.map(l => l.uri || l.url[0])")
            assert len(names) == 2 and not any("mid/" in n for n in names), names
            # A player on the weak-network rung (one viewer so far: below the threshold of 2).
            page.evaluate("hls.currentLevel = hls.levels.findIndex(l => l.height === 180)")
            page.wait_for_function("() => document.getElementById('player').videoWidth === 320")
            assert "mid/index.m3u8" not in http.get(f"{base}/master.m3u8").text

            # A second viewer arrives: the stream gains the mid rung; the player that was watching gets it.
            http.get(f"{base}/src/index.m3u8")
            wait_for(lambda: "mid/index.m3u8" in http.get(f"{base}/master.m3u8").text, timeout=30,
                     message="the scaled rung in the master playlist")
            page.wait_for_function("() => hls.rungReloads === 1 && hls.levels.length === 3")
            resumed_from = page.evaluate("document.getElementById('player').currentTime")
            page.wait_for_function("t => { const v = document.getElementById('player');"
                                   " return !v.paused && v.currentTime > t + 1; }", arg=resumed_from)
            mid = page.evaluate("hls.levels.findIndex(l => l.height === 360)")
            assert mid >= 0
            page.evaluate(f"hls.currentLevel = {mid}")
            page.wait_for_function("() => document.getElementById('player').videoWidth === 640")
            now = page.evaluate("document.getElementById('player').currentTime")
            page.wait_for_function("t => document.getElementById('player').currentTime > t + 1", arg=now)
            state = page.evaluate("({errors: window.errors, missing: window.missing, reloads: hls.rungReloads})")
            stall = page.evaluate("(() => { const t = window.loads[window.loads.length - 1];"
                                  " return window.playing.find(p => p > t) - t; })()")
            print("scaled player", state, f"reload interrupted playback for {stall:.0f} ms")
            assert state == {"errors": [], "missing": [], "reloads": 1}, state
            levels = top.evaluate("hls.levels.map(l => [l.height, l.bitrate])")
            top_state = top.evaluate("({reloads: hls.rungReloads, levels: hls.levels.length, errors: window.errors,"
                                     " t: document.getElementById('player').currentTime})")
            print("top player", top_state, levels)
            assert top_state["reloads"] == 0 and top_state["levels"] == 2 and top_state["errors"] == [], top_state
            top.wait_for_function("t => document.getElementById('player').currentTime > t + 1", arg=top_state["t"])
            # Every rung the master lists has media (nothing advertised that would 404).
            for rung in re.findall(r"^(\w+)/index\.m3u8$", http.get(f"{base}/master.m3u8").text, re.M):
                assert http.get(f"{base}/{rung}/index.m3u8").status_code == 200
            context.close()
        finally:
            publisher.kill()
            publisher.wait()
