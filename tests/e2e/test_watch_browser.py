"""The /watch page: its security headers and markup, and (marker `browser`) Debian's chromium
playing real HLS through it, showing processing progress, rejection reasons and "not found"."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from clipfeed.media import keys
from clipfeed.media.models import VideoStatus, Visibility
from clipfeed.storage import LocalStore
from tests.browser import chromium
from tests.conftest import register, wait_for
from tests.csp import audit_page, csp_directives
from tests.delivery.test_media import insert_video, run_sync, update_video

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
RENDITIONS = [{"name": "360p", "width": 360, "height": 640, "bandwidth": 900000, "playlist": "360p/playlist.m3u8"}]

PLAYING = """() => {
  const v = document.getElementById('player');
  return v && !v.hidden && v.videoWidth > 0 && v.currentTime > 0.2 && !v.paused;
}"""


# ---------------------------------------------------------------------------------------------
# Markup and headers (no browser needed)
# ---------------------------------------------------------------------------------------------


def test_pages_send_a_strict_csp_and_have_no_inline_code(client):
    for path, status in (("/watch/abc123", 200), ("/", 200), ("/watch/not..an-id", 404)):
        response = client.get(path)
        assert response.status_code == status, path
        assert response.headers["content-type"].startswith("text/html")
        csp = response.headers["content-security-policy"]
        directives = csp_directives(csp)
        assert directives["default-src"] == ["'self'"]
        assert directives["script-src"] == ["'self'"] and directives["style-src"] == ["'self'"]
        assert directives["media-src"] == ["'self'", "blob:"]
        assert directives["worker-src"] == ["'self'", "blob:"]
        assert directives["object-src"] == ["'none'"] and directives["base-uri"] == ["'none'"]
        assert directives["frame-ancestors"] == ["'self'"]
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        audit = audit_page(response.text)
        assert audit.problems == [], (path, audit.problems)
        for href in ["/static/app.css", *audit.scripts]:
            assert client.get(href).status_code == 200, f"{href} missing (run: npm ci && node scripts/build_web.mjs)"
    watch = client.get("/watch/abc123").text
    assert '/static/vendor/hls.min.js' in watch and '/static/watch.js' in watch
    assert 'data-video-id="abc123"' in watch


def test_watch_escapes_what_it_echoes(client):
    response = client.get('/watch/%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E')
    assert response.status_code == 404
    assert "<script>alert(1)" not in response.text


# ---------------------------------------------------------------------------------------------
# Real video for the browser: a real upload when the endpoint exists, else HLS packaged here
# ---------------------------------------------------------------------------------------------


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="session")
def sample_media(tmp_path_factory) -> dict:
    """A 4 s 360x640 H.264/AAC clip, and the same clip packaged as fMP4 HLS (one rung + master),
    laid out like clipfeed's keys (hls/master.m3u8, hls/360p/{playlist.m3u8,init.mp4,seg_N.m4s})."""
    out = tmp_path_factory.mktemp("sample-media")
    lavfi = ["-f", "lavfi", "-i", "testsrc2=size=360x640:rate=30:duration=4",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=4"]
    encode = ["-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
              "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-c:a", "aac", "-b:a", "64k"]
    clip = out / "clip.mp4"
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *lavfi, *encode,
                    "-movflags", "+faststart", str(clip)], check=True, timeout=120)
    hls = out / "hls"
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-map", "0:v", "-map",
                    "0:a", "-c", "copy", "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
                    "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4", "-start_number", "1",
                    "-hls_segment_filename", str(hls / "%v" / "seg_%05d.m4s"), "-master_pl_name", "master.m3u8",
                    "-var_stream_map", "v:0,a:0,name:360p", str(hls / "%v" / "playlist.m3u8")],
                   check=True, timeout=120)
    poster = out / "poster.jpg"
    subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-ss", "1", "-i", str(clip),
                    "-frames:v", "1", str(poster)], check=True, timeout=60)
    return {"clip": clip, "hls": hls, "poster": poster}


def _has_route(app, path: str, method: str) -> bool:
    return any(getattr(r, "path", None) == path and method in (getattr(r, "methods", None) or ()) for r in app.routes)


def publish_fixture_hls(server, video_id: str, sample_media: dict) -> None:
    """Put the pre-packaged HLS and poster under the video's keys, as the pipeline would."""
    store = LocalStore(server.settings.blob_root)

    async def put_all():
        for path in sorted(sample_media["hls"].rglob("*"), key=lambda p: p.suffix == ".m3u8"):
            if path.is_file():
                await store.put_file(keys.hls_key(video_id, path.relative_to(sample_media["hls"]).as_posix()), path)
        await store.put_file(keys.artifact_key(video_id, "poster.jpg"), sample_media["poster"])

    run_sync(put_all)


def fixture_video(server, owner: dict, sample_media: dict, **values) -> str:
    values.setdefault("renditions", RENDITIONS)
    values.setdefault("artifacts", {"files": ["poster.jpg"]})
    video_id = insert_video(server, owner["user"]["id"], duration_ms=4000, width=360, height=640, **values)
    publish_fixture_hls(server, video_id, sample_media)
    return video_id


def processed_video(server, owner: dict, sample_media: dict, caption: str) -> tuple[str, str]:
    """(video_id, how): through POST /api/v1/videos/upload and the real pipeline when that
    endpoint exists; otherwise the fixture HLS under a ready Video row."""
    with httpx.Client(base_url=server.url, timeout=60, headers=owner["headers"]) as http:
        if _has_route(server.app, "/api/v1/videos/upload", "POST"):
            with open(sample_media["clip"], "rb") as handle:
                response = http.post("/api/v1/videos/upload", data={"caption": caption},
                                     files={"file": ("clip.mp4", handle, "video/mp4")})
            assert response.status_code in (200, 201, 202), response.text
            body = response.json()
            video_id = body.get("id") or (body.get("video") or {}).get("id")
            assert video_id, body

            def playable():
                video = http.get(f"/api/v1/videos/{video_id}").json()
                assert video.get("status") not in ("rejected", "failed"), video
                return video.get("status") == "ready" and (video.get("urls") or {}).get("hls")

            wait_for(playable, timeout=180, interval=0.25, message="the uploaded video to become playable")
            return video_id, "upload"
    return fixture_video(server, owner, sample_media, caption=caption), "fixture"


# ---------------------------------------------------------------------------------------------
# Browser
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def browser(live_server):
    # Function-scoped and after live_server on purpose (see tests.browser.chromium).
    with chromium("hls.min.js") as instance:
        yield instance


class Watcher:
    """One browser context (optionally signed in) that records console errors and CSP reports."""

    def __init__(self, browser, server, token: str | None = None):
        self.context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                           is_mobile=True, has_touch=True)
        if token:
            self.context.add_cookies([{"name": "clipfeed_session", "value": token, "url": server.url}])
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.errors: list[str] = []
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.server = server

    def open(self, video_id: str):
        self.page.goto(f"{self.server.url}/watch/{video_id}")
        return self.page

    def message(self) -> str:
        return self.page.locator("#message").inner_text()

    def close(self):
        self.context.close()


@pytest.fixture
def watchers(browser, live_server):
    made: list[Watcher] = []

    def make(token: str | None = None) -> Watcher:
        made.append(Watcher(browser, live_server, token))
        return made[-1]

    yield make
    for watcher in made:
        watcher.close()


def _assert_plays(page) -> None:
    page.wait_for_function(PLAYING)
    start = page.evaluate("document.getElementById('player').currentTime")
    page.wait_for_function("t => document.getElementById('player').currentTime > t + 0.3", arg=start)
    state = page.evaluate("""() => { const v = document.getElementById('player');
        return {w: v.videoWidth, h: v.videoHeight, muted: v.muted, loop: v.loop, inline: v.playsInline,
                overlay: document.getElementById('status').hidden}; }""")
    assert state["w"] > 0 and state["h"] > state["w"], state  # portrait
    assert state["muted"] and state["loop"] and state["inline"] and state["overlay"], state


@pytest.mark.browser
def test_watch_page_plays_a_processed_video(live_server, client, watchers, sample_media):
    owner = register(client)
    caption = 'Sunset run <img src=x onerror="window.__pwned=1"> #clipfeed'
    video_id, how = processed_video(live_server, owner, sample_media, caption)
    watcher = watchers()
    page = watcher.open(video_id)
    _assert_plays(page)
    assert page.locator("#caption").inner_text() == caption
    assert "&lt;img" in page.locator("#caption").inner_html()
    assert page.evaluate("window.__pwned") is None
    poster = page.evaluate("document.getElementById('player').getAttribute('poster')")
    assert poster and poster.startswith(f"/media/videos/{video_id}/poster.jpg")
    assert page.evaluate("window.Hls && window.Hls.isSupported()"), "hls.js should drive playback in chromium"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "watch-390x844.png"))
    assert not [e for e in watcher.errors if "Content Security Policy" in e or "Refused" in e], watcher.errors
    assert watcher.errors == [], watcher.errors
    print(f"watch page played a video made by: {how}")


@pytest.mark.browser
def test_private_video_page_plays_for_owner_and_is_not_found_for_others(live_server, client, watchers,
                                                                       sample_media):
    owner, other = register(client), register(client)
    video_id, _how = processed_video(live_server, owner, sample_media, "only for me")
    patched = client.patch(f"/api/v1/videos/{video_id}", json={"visibility": "private"}, headers=owner["headers"])
    assert patched.status_code == 200, patched.text

    as_owner = watchers(owner["token"])
    _assert_plays(as_owner.open(video_id))
    assert as_owner.errors == [], as_owner.errors

    for watcher in (watchers(), watchers(other["token"])):
        page = watcher.open(video_id)
        page.wait_for_function("() => document.getElementById('message').textContent.includes('available')")
        assert "isn't available" in watcher.message()
        assert page.evaluate("document.getElementById('player').hidden")
        assert page.evaluate("document.getElementById('player').currentSrc") == ""


@pytest.mark.browser
def test_unknown_video_shows_not_found(live_server, watchers):
    watcher = watchers()
    page = watcher.open("nosuchvideo00000")
    page.wait_for_function("() => document.getElementById('message').textContent.includes('available')")
    assert page.locator("#status").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "watch-not-found.png"))


@pytest.mark.browser
def test_page_shows_progress_then_plays_when_the_first_rung_lands(live_server, client, watchers, sample_media):
    owner = register(client)
    video_id = insert_video(live_server, owner["user"]["id"], status=VideoStatus.PROCESSING, progress=42.0,
                            renditions=[], artifacts={}, caption="almost there")
    watcher = watchers(owner["token"])
    page = watcher.open(video_id)
    page.wait_for_function("() => document.getElementById('message').textContent.includes('42%')")
    assert page.evaluate("document.getElementById('progress').value") == 42
    assert page.locator("#progress").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "watch-processing.png"))

    # The pipeline publishes the lowest rung: the page, polling every second, starts playing.
    publish_fixture_hls(live_server, video_id, sample_media)
    update_video(live_server, video_id, status=VideoStatus.READY, progress=60.0, renditions=RENDITIONS,
                 artifacts={"files": ["poster.jpg"]})
    _assert_plays(page)


@pytest.mark.browser
def test_rejected_video_shows_its_reason_to_the_owner(live_server, client, watchers):
    owner = register(client)
    reason = "this file has no video stream <b>really</b>"
    video_id = insert_video(live_server, owner["user"]["id"], status=VideoStatus.REJECTED, progress=0.0,
                            renditions=[], artifacts={}, rejection_code="no_video_stream",
                            rejection_reason=reason, visibility=Visibility.PUBLIC)
    watcher = watchers(owner["token"])
    page = watcher.open(video_id)
    page.wait_for_function("r => document.getElementById('message').textContent === r", arg=reason)
    assert page.evaluate("document.getElementById('status').classList.contains('error')")
    assert page.evaluate("document.getElementById('player').hidden")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "watch-rejected.png"))
    # Someone else gets "not found", not the reason.
    stranger = watchers()
    stranger.open(video_id).wait_for_function(
        "() => document.getElementById('message').textContent.includes('available')")
