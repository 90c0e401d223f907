"""The feed's gestures and sheets in Debian's chromium, each checked against the server: tap to
pause, double-tap like (with its heart, and without it under prefers-reduced-motion), sound
remembered across a reload, scrubbing, comment replies and deletes, the share sheet, "Not
interested", keyboard use and ARIA names; and the upload page's drop zone and pause/resume."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from clipfeed.feed.models import NotInterested
from tests.e2e.web.conftest import CURRENT_PLAYS, ChunkGate, seed_feed
from tests.feed.factories import make_user, run
from tests.mediagen import ffmpeg

pytestmark = pytest.mark.browser

CHUNK = 8 * 1024 * 1024

# Every .heart-burst added to the page, with the animation it was given.
WATCH_BURSTS = """() => {
  window.__bursts = [];
  new MutationObserver((records) => {
    for (const record of records) for (const node of record.addedNodes) {
      if (node.classList && node.classList.contains('heart-burst')) {
        const style = getComputedStyle(node);
        window.__bursts.push({name: style.animationName, duration: style.animationDuration, display: style.display});
      }
    }
  }).observe(document.getElementById('view'), {childList: true, subtree: true});
}"""

VIDEO = "id => document.querySelector(`.card[data-id='${id}'] video`)"


def _current(page) -> str:
    return page.evaluate("() => document.querySelector('.pager .card[aria-hidden=\"false\"]').dataset.id")


def _video(page, video_id: str, expression: str):
    return page.evaluate(f"id => {{ const v = ({VIDEO})(id); return {expression}; }}", video_id)


def _wait_video(page, video_id: str, condition: str, timeout: float = 15_000):
    page.wait_for_function(f"id => {{ const v = ({VIDEO})(id); return Boolean(v) && ({condition}); }}",
                           arg=video_id, timeout=timeout)


def _next(page, seen: list[str]) -> str:
    page.keyboard.press("ArrowDown")
    return page.wait_for_function(f"seen => {{ const id = ({CURRENT_PLAYS})(); return id && !seen.includes(id) && id; }}",
                                  arg=seen).json_value()


def _seconds(css_time: str) -> float:
    return max(float(part.strip().rstrip("s")) for part in css_time.split(","))


@pytest.fixture
def viewer(live_server):
    return make_user(live_server.settings, display_name="Viewer")


@pytest.fixture
def feed(live_server, sample_media):
    # Seeded before the browser starts: Playwright's sync API keeps an event loop on this thread.
    return seed_feed(live_server, sample_media, 4, creators=4)


@pytest.fixture
def other(live_server):
    return make_user(live_server.settings, display_name="Other")


def _db(settings, work):
    """A database read while Playwright's loop owns this thread: on a thread of its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run, settings, work).result()


def _api_get(client, path: str, user: dict):
    response = client.get(path, headers=user["headers"])
    assert response.status_code == 200, response.text
    return response.json()


def test_tap_pause_double_tap_like_sound_scrub_and_reduced_motion(live_server, client, feed, viewer, tabs):
    tab = tabs(token=viewer["token"])
    page = tab.goto("/")
    first = page.wait_for_function(CURRENT_PLAYS).json_value()
    assert first in feed
    card = page.locator(f".card[data-id='{first}']")

    # Tap pauses (after the double-tap window), a second tap resumes.
    card.locator(".tap-layer").tap()
    _wait_video(page, first, "v.paused")
    assert card.locator(".pause-indicator").is_visible()
    tab.shot("feed-paused")
    paused_at = _video(page, first, "v.currentTime")
    card.locator(".tap-layer").tap()
    page.wait_for_function(f"([id, t]) => {{ const v = ({VIDEO})(id); return !v.paused && v.currentTime > t + 0.2; }}",
                           arg=[first, paused_at])
    assert not card.locator(".pause-indicator").is_visible()

    # Double-tap likes: a heart flies (a real CSS animation), the server records the like, and the
    # video keeps playing (the first tap's pause was cancelled).
    page.evaluate(WATCH_BURSTS)
    with page.expect_response(lambda r: r.url.endswith(f"/videos/{first}/like") and r.request.method == "POST") as liked:
        card.locator(".tap-layer").dblclick()
    assert liked.value.ok, liked.value.status
    assert card.locator("button.like").get_attribute("aria-pressed") == "true"
    assert _api_get(client, f"/api/v1/videos/{first}", viewer)["liked"] is True
    bursts = page.evaluate("window.__bursts")
    assert len(bursts) == 1 and bursts[0]["name"] == "burst" and _seconds(bursts[0]["duration"]) >= 0.5, bursts
    page.wait_for_selector(f".card[data-id='{first}'] .heart-burst", state="detached")  # cleaned up after
    now = _video(page, first, "v.currentTime")
    page.wait_for_function(f"([id, t]) => {{ const v = ({VIDEO})(id); return !v.paused && v.currentTime > t + 0.5; }}",
                           arg=[first, now], timeout=10_000)
    assert _seconds(card.evaluate("c => getComputedStyle(c).transitionDuration")) > 0.1  # cards slide

    # Scrubbing: press at 20 %, drag to 70 %, release: the video seeks to where the pointer is.
    page.evaluate(f"id => {{ const v = ({VIDEO})(id); window.__seeks = [];"
                  " v.addEventListener('seeked', () => window.__seeks.push(v.currentTime)); }", first)
    box = card.locator(".progress").bounding_box()
    duration = _video(page, first, "v.duration")
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=4)
    page.mouse.up()
    page.wait_for_function("d => window.__seeks.some(t => Math.abs(t - 0.7 * d) < 0.35)", arg=duration)
    assert all(0.15 * duration <= t <= 0.75 * duration for t in page.evaluate("window.__seeks")), page.evaluate("window.__seeks")

    # Sound: tap to unmute, remembered across a reload.
    mute = card.locator("button.mute")
    assert mute.get_attribute("aria-label") == "Unmute" and _video(page, first, "v.muted") is True
    mute.click()
    _wait_video(page, first, "!v.muted && !v.paused")
    assert mute.get_attribute("aria-label") == "Mute" and mute.get_attribute("aria-pressed") == "true"
    page.reload()
    again = page.wait_for_function(CURRENT_PLAYS).json_value()
    assert _video(page, again, "v.muted") is False
    assert page.locator(f".card[data-id='{again}'] button.mute").get_attribute("aria-label") == "Mute"
    page.locator(f".card[data-id='{again}'] button.mute").click()
    _wait_video(page, again, "v.muted")
    assert page.evaluate("localStorage.getItem('clipfeed.unmuted')") == "0"

    # prefers-reduced-motion: the double-tap still likes, without a flying heart, and cards and
    # sheets move without animation.
    page.emulate_media(reduced_motion="reduce")
    page.evaluate(WATCH_BURSTS)
    target = _next(page, [again]) if again == first else again  # one not liked yet
    target_card = page.locator(f".card[data-id='{target}']")
    with page.expect_response(lambda r: r.url.endswith(f"/videos/{target}/like") and r.request.method == "POST") as liked:
        target_card.locator(".tap-layer").dblclick()
    assert liked.value.ok
    assert _api_get(client, f"/api/v1/videos/{target}", viewer)["liked"] is True
    assert page.evaluate("window.__bursts") == []
    assert _seconds(target_card.evaluate("c => getComputedStyle(c).transitionDuration")) < 0.001
    target_card.locator("button.share").click()
    sheet = page.locator(".sheet")
    sheet.wait_for()
    assert _seconds(sheet.evaluate("s => getComputedStyle(s).animationDuration")) < 0.001
    tab.shot("share-sheet-reduced-motion")
    page.keyboard.press("Escape")
    assert [e for e in tab.errors if "pageerror" in e] == [], tab.errors
    assert tab.csp_violations() == [], tab.errors


def test_comment_replies_delete_own_share_sheet_and_not_interested(live_server, client, feed, viewer, other, tabs):
    tab = tabs(token=viewer["token"])
    tab.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = tab.goto("/")
    video_id = page.wait_for_function(CURRENT_PLAYS).json_value()
    card = page.locator(f".card[data-id='{video_id}']")
    top = client.post(f"/api/v1/videos/{video_id}/comment", json={"text": "First!"}, headers=other["headers"]).json()
    client.post(f"/api/v1/videos/{video_id}/comment", json={"text": "Agreed", "parent_id": top["id"]},
                headers=other["headers"])

    # Someone else's comment with its reply, opened on demand; no Delete on what isn't yours.
    card.locator("button.comments").click()
    row = page.locator(f".comment[data-id='{top['id']}']")
    row.locator(".comment-text").first.wait_for()
    assert row.locator(".comment-text").first.inner_text() == "First!"
    assert row.get_by_role("button", name="Delete your comment").count() == 0
    row.get_by_role("button", name="View 1 reply").click()
    row.locator(".replies .comment-text:text('Agreed')").wait_for()

    # Reply through the sheet.
    row.get_by_role("button", name="Reply").first.click()
    assert f"Replying to @{other['handle']}" in page.locator(".reply-note").inner_text()
    page.fill(".comment-form input", "Me too")
    with page.expect_response(lambda r: r.url.endswith(f"/videos/{video_id}/comment") and r.request.method == "POST") as posted:
        page.click(".comment-form button[type=submit]")
    assert posted.value.ok, posted.value.status
    row.locator(".replies .comment-text:text('Me too')").wait_for()
    replies = client.get(f"/api/v1/comments/{top['id']}/replies").json()["items"]
    assert sorted(r["text"] for r in replies) == ["Agreed", "Me too"]
    assert page.locator(".reply-note").is_hidden()

    # A comment of one's own, then deleted: gone from the sheet, the server and the count.
    count_before = card.locator("button.comments .count").inner_text()
    page.fill(".comment-form input", "Delete me")
    page.click(".comment-form button[type=submit]")
    mine = page.locator(".comments > .comment", has_text="Delete me")
    mine.wait_for()
    page.wait_for_function("([sel, before]) => document.querySelector(sel).textContent !== before",
                           arg=[f".card[data-id='{video_id}'] button.comments .count", count_before])
    tab.shot("comments-replies")
    with page.expect_response(lambda r: "/comments/" in r.url and r.request.method == "DELETE") as deleted:
        mine.get_by_role("button", name="Delete your comment").click()
    assert deleted.value.ok, deleted.value.status
    mine.wait_for(state="detached")
    assert card.locator("button.comments .count").inner_text() == count_before
    texts = [c["text"] for c in client.get(f"/api/v1/videos/{video_id}/comments").json()["items"]]
    assert "Delete me" not in texts and "First!" in texts
    # The own reply can go too.
    own_reply = row.locator(".replies .comment", has_text="Me too")
    with page.expect_response(lambda r: "/comments/" in r.url and r.request.method == "DELETE") as deleted:
        own_reply.get_by_role("button", name="Delete your comment").click()
    assert deleted.value.ok
    own_reply.wait_for(state="detached")
    assert [r["text"] for r in client.get(f"/api/v1/comments/{top['id']}/replies").json()["items"]] == ["Agreed"]
    page.keyboard.press("Escape")
    page.wait_for_selector(".sheet-backdrop", state="detached")

    # Share: the link is the /v/{id} share page; Copy puts it on the clipboard; the share is counted.
    with page.expect_response(lambda r: r.url.endswith(f"/videos/{video_id}/share")) as shared:
        card.locator("button.share").click()
    assert shared.value.ok
    field = page.locator(".share-url")
    page.wait_for_function("u => document.querySelector('.share-url').value === u", arg=shared.value.json()["share_url"])
    url = field.input_value()
    assert url.endswith(f"/v/{video_id}"), url
    assert page.get_by_role("link", name="Open share page").get_attribute("href") == url
    page.get_by_role("button", name="Copy link").click()
    page.wait_for_function("() => document.getElementById('toast').textContent === 'Link copied'")
    assert page.evaluate("navigator.clipboard.readText()") == url
    share_page = client.get(f"/v/{video_id}")
    assert share_page.status_code == 200 and video_id in share_page.text
    assert _api_get(client, f"/api/v1/videos/{video_id}", viewer)["share_count"] == 1
    tab.shot("share-sheet")

    # Not interested: recorded by the server, the video leaves the pager (swiping back skips it).
    with page.expect_response(lambda r: r.url.endswith(f"/videos/{video_id}/not-interested")) as marked:
        page.get_by_role("button", name="Not interested").click()
    assert marked.value.ok, marked.value.status
    page.wait_for_selector(".sheet-backdrop", state="detached")
    replacement = page.wait_for_function(
        f"gone => {{ const id = ({CURRENT_PLAYS})(); return id && id !== gone && id; }}", arg=video_id).json_value()
    assert replacement in feed
    page.wait_for_selector(f".card[data-id='{video_id}']", state="detached")
    assert video_id not in page.evaluate("[...document.querySelectorAll('.pager .card')].map(c => c.dataset.id)")
    after = _next(page, [replacement])
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"back => ({CURRENT_PLAYS})() === back", arg=replacement)

    async def marks(session):
        return (await session.execute(select(NotInterested.video_id).where(NotInterested.user_id == viewer["id"]))).scalars().all()

    assert _db(live_server.settings, marks) == [video_id]
    assert after != video_id
    assert [e for e in tab.errors if "pageerror" in e] == [], tab.errors


def test_keyboard_navigation_and_aria_names(live_server, client, feed, viewer, tabs):
    tab = tabs(token=viewer["token"], mobile=False)
    page = tab.goto("/")
    first = page.wait_for_function(CURRENT_PLAYS).json_value()
    card = page.locator(f".card[data-id='{first}']")

    # Names a screen reader announces, found through the accessibility tree.
    nav = page.get_by_role("navigation", name="Main")
    for name in ("Home", "Discover", "Upload", "Inbox", "Your profile"):
        assert nav.get_by_role("link", name=name, exact=True).count() == 1, name
    assert page.get_by_role("feed").count() == 1
    for role, name in (("button", "Like"), ("button", "Comments"), ("button", "Share"), ("button", "Unmute"),
                       ("slider", "Seek")):
        assert card.get_by_role(role, name=name, exact=True).count() == 1, (role, name)
    assert card.get_by_role("slider", name="Seek").get_attribute("aria-valuemax") == "4"
    unnamed = page.evaluate("""() => [...document.querySelectorAll('button, a[href], [role=slider], input, select, textarea')]
        .filter(el => el.offsetParent !== null && !el.closest('[inert]'))
        .filter(el => !(el.getAttribute('aria-label') || el.textContent.trim() || (el.labels && el.labels.length)))
        .map(el => el.outerHTML.slice(0, 80))""")
    assert unnamed == [], unnamed
    # Off-screen cards are hidden from assistive tech and from the tab order.
    hidden = page.evaluate("[...document.querySelectorAll('.pager .card[aria-hidden=\"true\"]')].map(c => c.inert)")
    assert hidden and all(hidden), hidden
    assert page.evaluate("document.activeElement.classList.contains('pager')")

    # Arrow keys and j/k move; space pauses; m toggles sound; l likes (on the server too).
    second = _next(page, [first])
    page.keyboard.press("k")
    page.wait_for_function(f"id => ({CURRENT_PLAYS})() === id", arg=first)
    page.keyboard.press("j")
    page.wait_for_function(f"id => ({CURRENT_PLAYS})() === id", arg=second)
    card = page.locator(f".card[data-id='{second}']")
    page.keyboard.press(" ")
    _wait_video(page, second, "v.paused")
    page.keyboard.press(" ")
    _wait_video(page, second, "!v.paused")
    page.keyboard.press("m")
    _wait_video(page, second, "!v.muted")
    assert card.locator("button.mute").get_attribute("aria-label") == "Mute"
    page.keyboard.press("m")
    _wait_video(page, second, "v.muted")
    with page.expect_response(lambda r: r.url.endswith(f"/videos/{second}/like") and r.request.method == "POST") as liked:
        page.keyboard.press("l")
    assert liked.value.ok
    assert card.get_by_role("button", name="Unlike").get_attribute("aria-pressed") == "true"
    assert _api_get(client, f"/api/v1/videos/{second}", viewer)["liked"] is True

    # Tab walks the current card's controls (never a hidden card's) to Comments; Enter opens the
    # sheet with focus inside; Escape closes it and gives focus back.
    for _ in range(12):
        page.keyboard.press("Tab")
        where = page.evaluate("""() => { const a = document.activeElement; const c = a.closest('.card');
            return {inCard: c ? c.dataset.id : null, comments: a.classList.contains('comments')}; }""")
        assert where["inCard"] in (None, second), where
        if where["comments"]:
            break
    assert where == {"inCard": second, "comments": True}
    page.keyboard.press("Enter")
    page.locator(".sheet[role=dialog]").wait_for()
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Close"
    tab.shot("comments-keyboard-desktop")
    page.keyboard.press("Escape")
    page.wait_for_selector(".sheet-backdrop", state="detached")
    assert page.evaluate("document.activeElement.classList.contains('comments')")

    # The seek slider takes ←/→ (one second a press).
    slider = card.get_by_role("slider", name="Seek")
    slider.focus()
    page.keyboard.press(" ")  # space on the slider must not be taken as the pager's pause
    assert _video(page, second, "v.paused") is False
    before = _video(page, second, "v.currentTime")
    page.evaluate(f"id => {{ const v = ({VIDEO})(id); window.__seeks = [];"
                  " v.addEventListener('seeked', () => window.__seeks.push(v.currentTime)); }", second)
    page.keyboard.press("ArrowRight")
    page.wait_for_function("t => window.__seeks.length && window.__seeks[0] > t + 0.5", arg=before)
    assert _current(page) == second  # the arrow seeked; it did not change video
    tab.shot("feed-keyboard-desktop")
    assert [e for e in tab.errors if "pageerror" in e] == [], tab.errors


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory):
    """A 3 s clip over two 8 MB tus chunks (noisy frames compress badly on purpose)."""
    path = tmp_path_factory.mktemp("web-upload") / "dropped take.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=480x854:r=30,noise=alls=40:allf=t", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000", "-t", "3", "-map", "0:v", "-map", "1:a", "-c:a", "aac",
           "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p", "-g", "30",
           "-movflags", "+faststart", str(path))
    assert path.stat().st_size > 2 * CHUNK
    return path


DROP = """async ([url, name]) => {
  const blob = await (await fetch(url)).blob();
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], name, {type: 'video/mp4'}));
  const zone = document.querySelector('.dropzone');
  const fire = (type) => zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  fire('dragenter');
  fire('dragover');
  const highlighted = zone.classList.contains('over');
  const accepted = !fire('drop');  // the page called preventDefault(): it took the file
  return {highlighted, accepted, after: zone.classList.contains('over')};
}"""


def test_drop_a_file_then_pause_and_resume_the_upload(live_server, client, big_clip, viewer, tabs):
    tab = tabs(token=viewer["token"], mobile=False)
    page = tab.goto("/upload")
    page.wait_for_selector(".dropzone")
    # Keyboard: Tab reaches the (visually hidden) file input and the drop zone shows the focus.
    for _ in range(4):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "upload-file":
            break
    assert page.evaluate("document.activeElement.id") == "upload-file"
    assert page.evaluate("getComputedStyle(document.querySelector('.dropzone')).outlineStyle") == "solid"
    # The file comes from disk through a routed URL, then is dropped as a real DataTransfer.
    page.route("**/__test-drop/**", lambda route: route.fulfill(path=str(big_clip), content_type="video/mp4"))
    dropped = page.evaluate(DROP, ["/__test-drop/clip", big_clip.name])
    assert dropped == {"highlighted": True, "accepted": True, "after": False}, dropped
    assert big_clip.name in page.locator(".file-name").inner_text()
    assert page.locator("#upload-start").is_enabled()

    gate = ChunkGate(page)
    page.fill("#upload-caption", "dropped and paused #drop")
    # The second chunk's PATCH going out means the server has answered the first (offset 8 MB).
    with page.expect_request(lambda r: r.method == "PATCH" and int(r.headers.get("upload-offset", "0")) >= CHUNK):
        page.click("#upload-start")
    page.wait_for_function("() => { const v = document.getElementById('upload-progress').value; return v > 0 && v < 100; }")

    pause = page.locator("#upload-pause")
    assert pause.inner_text() == "Pause"
    pause.click()
    assert pause.inner_text() == "Resume"
    assert page.locator("#upload-progress-text").inner_text().startswith("Paused at")
    tab.shot("upload-paused-desktop")
    gate.open()
    pause.click()
    # The bar reaches 100 % once the last bytes are sent; "Uploaded." once the server has
    # acknowledged them (what the listing below depends on).
    page.wait_for_function("() => document.getElementById('upload-progress-text').textContent === 'Uploaded.'",
                           timeout=60_000)
    assert gate.offsets and gate.offsets[0] >= CHUNK, gate.offsets  # resumed at the server's offset, not from zero
    videos = client.get(f"/api/v1/users/{viewer['id']}/videos", headers=viewer["headers"]).json()["items"]
    assert [v["caption"] for v in videos] == ["dropped and paused #drop"]
    gate.release()
