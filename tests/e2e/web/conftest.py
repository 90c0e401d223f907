"""Fixtures for the web client's browser suite: Debian's chromium through Playwright, a page
that records console errors and CSP violations, and feed videos seeded in bulk (one packaged
HLS clip copied under many video rows, so seeding costs no transcoding)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import chromium
from tests.e2e.test_watch_browser import RENDITIONS, publish_fixture_hls, sample_media  # noqa: F401 (fixture)
from tests.feed.factories import make_user, make_video

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts" / "web"


@pytest.fixture
def browser(live_server):
    # After live_server on purpose (see tests.browser.chromium).
    with chromium("hls.min.js", "tus.min.js") as instance:
        yield instance


class Tab:
    """One browser context + page; console errors, page errors and CSP violations recorded."""

    def __init__(self, browser, server, *, mobile: bool = True, token: str | None = None):
        options = dict(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True, has_touch=True) \
            if mobile else dict(viewport={"width": 1280, "height": 800})
        self.context = browser.new_context(**options)
        if token:
            self.context.add_cookies([{"name": "clipfeed_session", "value": token, "url": server.url}])
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.errors: list[str] = []
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.server = server

    def goto(self, path: str):
        self.page.goto(self.server.url + path)
        return self.page

    def csp_violations(self) -> list[str]:
        return [e for e in self.errors if "Content Security Policy" in e or "Refused to" in e]

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def close(self):
        self.context.close()


@pytest.fixture
def tabs(browser, live_server):
    made: list[Tab] = []

    def make(**kwargs) -> Tab:
        made.append(Tab(browser, live_server, **kwargs))
        return made[-1]

    yield make
    for tab in made:
        tab.close()


class Seeded(list):
    """Video ids, with `owners`: user id -> the factory's user (id, handle, token, headers)."""

    owners: dict


def seed_feed(server, sample_media, count: int, *, creators: int = 3) -> Seeded:
    """`count` ready public videos by `creators` users, all playing the same packaged clip."""
    owners = [make_user(server.settings, display_name=f"Creator {i}") for i in range(creators)]
    ids = Seeded()
    ids.owners = {owner["id"]: owner for owner in owners}
    for i in range(count):
        video_id = make_video(server.settings, owners[i % creators]["id"], caption=f"clip {i} #seeded",
                              duration_ms=4000, width=360, height=640, renditions=RENDITIONS,
                              artifacts={"files": ["poster.jpg"]})
        publish_fixture_hls(server, video_id, sample_media)
        ids.append(video_id)
    return ids


CURRENT_PLAYS = """() => {
  const card = document.querySelector('.pager .card[aria-hidden="false"]');
  const v = card && card.querySelector('video');
  return Boolean(v && v.videoWidth > 0 && v.currentTime > 0.25 && !v.paused) && card.dataset.id;
}"""


UPLOADS = "**/api/v1/uploads/*"


class ChunkGate:
    """Lets an upload's first tus PATCH through and holds every later one (so a test can reload
    or pause mid-upload with nothing finishing behind its back); records each PATCH's offset."""

    def __init__(self, page):
        self.page = page
        self.offsets: list[int] = []
        self._held: list = []
        self._passed = False
        page.on("request", lambda r: r.method == "PATCH" and "/api/v1/uploads/" in r.url
                and self.offsets.append(int(r.headers.get("upload-offset", "-1"))))
        page.route(UPLOADS, self._route)

    def _route(self, route) -> None:
        if route.request.method == "PATCH":
            if self._passed:
                self._held.append(route)
                return
            self._passed = True
        route.continue_()

    def open(self) -> None:
        """Stop holding: what the page sends from now on goes through."""
        self.page.unroute(UPLOADS)
        self.offsets.clear()

    def release(self) -> None:
        """Drop the held requests (their page may be gone: nothing to do then)."""
        for route in self._held:
            try:
                route.abort()
            except Exception:  # noqa: BLE001 - the page that made it is gone
                pass
