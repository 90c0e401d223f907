"""Swipe benchmark in Chromium (Debian's /usr/bin/chromium through Playwright).

    python bench/swipe.py [--minutes 20] [--videos 40] [--swipes 20] [--dwell 0.6]
    clipfeed bench swipe            (default 20 min soak)

One demo clip goes through the real upload and ladder in a real `clipfeed serve`; its
renditions are then copied under `--videos` video rows (distinct URLs, so nothing is shared in
the browser's cache between videos). Then, on a 390x844 phone viewport:

1. first frame after a swipe: time from the swipe to the first presented frame of the new
   video (requestVideoFrameCallback, measured by the client), p50 / p95, with preloading on
   (the default) and off (`?preload=0`), each in a fresh browser context. Bytes fetched per
   video come from the DevTools network log (encoded bytes of /media responses).
2. memory soak: swipes continuously (`--dwell` seconds per video after it plays) for
   `--minutes`, sampling JS heap (CDP Performance.getMetrics JSHeapUsedSize) plus the media
   held by the live <video> elements (buffered seconds x level bitrate) every 10 s; reports
   the peak and the growth from the first-minute level to the last third. Beside it, the PSS of
   Chromium's processes (/proc smaps): the renderer's at the start, after the first minute and at
   the end, its growth after the first minute and over the last third, with the goals beside.
   The page's own figures cannot see the renderer's decoders, media pipelines or decoded-image
   cache; a poster <img> per card once grew it by ~3.7 MB a swipe (see playback.js Poster).
   The soak and the control run in a Chromium driven over bare CDP (bench/_cdp.py), not
   Playwright: an attached DevTools Network agent keeps response bodies in the renderer (~200 MB
   each), which no person's browser does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._cdp import BareChromium, CdpError  # noqa: E402
from bench._harness import ServerProcess, print_table, register  # noqa: E402
from clipfeed.accounts.models import User  # noqa: E402
from clipfeed.config import Settings  # noqa: E402
from clipfeed.db import Database, utcnow  # noqa: E402
import clipfeed.db.models  # noqa: E402,F401 (every table, for the foreign keys)
from clipfeed.media.ffmpeg import generate_demo_clip  # noqa: E402
from clipfeed.media.models import Video  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
        "--enable-precise-memory-info"]
GOAL_FIRST_FRAME_MS = 150
GOAL_MEMORY_MB = 150
# Chromium's renderer (PSS, decoders and image caches included, what the page cannot see):
# growth from the first minute to the end of the soak, and over the soak's last third.
GOAL_RENDERER_GROWTH_MB = 150
GOAL_RENDERER_LATE_MB = 25

# The soak's browser (bench/_cdp.py) gets what Playwright would have added for a headless run
# that must keep playing: muted output and no throttling of a page it deems backgrounded.
BARE_ARGS = ARGS + ["--mute-audio", "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
                    "--disable-backgrounding-occluded-windows"]

CURRENT = """() => document.querySelector('.pager .card[aria-hidden="false"]').dataset.id"""
PLAYING = """() => {
  const card = document.querySelector('.pager .card[aria-hidden="false"]');
  const v = card && card.querySelector('video');
  return Boolean(v && v.videoWidth > 0 && v.currentTime > 0 && !v.paused) && card.dataset.id;
}"""


# The control for --control: a bare page with nothing of ours (no pager, no posters, no DOM
# cards), one <video> that gets a fresh hls.js instance per clip, played 0.6 s each, the old one
# destroyed as the issue prescribes. If the renderer grows the same way here, that growth is
# Chromium's (its media pipeline per clip, software decoding), not the client's.
CONTROL_PAGE = """<!doctype html><meta charset="utf-8"><script src="/static/vendor/hls.min.js"></script>
<style>body{margin:0;background:#000}video{width:100vw;height:100vh;object-fit:cover}</style><body><script>
const urls = __URLS__, dwell = __DWELL__;
const video = document.createElement("video");
video.muted = true; video.playsInline = true; video.loop = true; video.preload = "auto";
document.body.append(video);
window.__clips = 0;
let hls = null, n = 0;
function next() {
  if (hls) { hls.destroy(); video.removeAttribute("src"); video.load(); }
  hls = new Hls({maxBufferLength: 8, maxMaxBufferLength: 16, backBufferLength: 4});
  hls.loadSource(urls[n++ % urls.length]);
  hls.attachMedia(video);
  video.play().catch(() => null);
  video.requestVideoFrameCallback(() => setTimeout(() => { window.__clips += 1; next(); }, dwell));
}
next();
</script>"""


def control_soak(url: str, hls_urls: list[str], minutes: float, dwell: float) -> list:
    """Renderer memory on CONTROL_PAGE, sampled like the soak; returns [(t, chromium_pss())]."""
    with BareChromium(CHROMIUM, BARE_ARGS) as browser:
        tab = browser.new_tab(390, 844)
        # Same origin as the media, and no CSP: a JSON endpoint's document, rewritten.
        tab.goto(f"{url}/healthz")
        body = CONTROL_PAGE.replace("__URLS__", json.dumps(hls_urls)).replace("__DWELL__", str(int(dwell * 1000)))
        tab.evaluate(f"document.open(); document.write({json.dumps(body)}); document.close(); true")
        tab.wait_for("() => window.__clips > 0", timeout=60)
        samples = []
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            samples.append((elapsed, {"chromium": chromium_pss(), "clips": tab.evaluate("window.__clips")}))
            if elapsed >= minutes * 60:
                break
            time.sleep(10)  # the sampling period
    return samples


def upload_source(server: ServerProcess, tmp: Path) -> tuple[str, dict]:
    token = register(server.url, "swipebench")
    headers = {"Authorization": f"Bearer {token}"}
    clip = generate_demo_clip(tmp / "source.mp4", width=720, height=1280, seconds=8, text="swipe")
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as http:
        with clip.open("rb") as handle:
            created = http.post("/api/v1/videos/upload", data={"caption": "swipe bench #bench"},
                                files={"file": ("source.mp4", handle, "video/mp4")})
        created.raise_for_status()
        video_id = created.json().get("id") or created.json()["video"]["id"]
        deadline = time.monotonic() + 900  # a shared, loaded machine can take minutes
        while True:
            video = http.get(f"/api/v1/videos/{video_id}").json()
            if video["status"] in ("rejected", "failed"):
                raise RuntimeError(f"source clip was not accepted: {video}")
            if video["status"] == "ready" and video["progress"] >= 100:
                return video_id, video
            if time.monotonic() > deadline:
                raise RuntimeError("the source clip did not finish processing")
            time.sleep(0.5)


def clone_videos(data_dir: Path, source_id: str, count: int, creators: int = 10) -> list[str]:
    """Copy the processed video's blobs and row under `count` new ids, spread over `creators`
    users: For You never shows one creator more than twice in ten, so one owner would end the
    feed after two videos."""
    settings = Settings(data_dir=data_dir)
    blobs = data_dir / "blobs" / "videos"

    async def work():
        db = Database(settings, pooled=False)
        ids = []
        try:
            async with db.transaction() as session:
                source = await session.get(Video, source_id)
                owners = [source.owner_id]
                for i in range(1, creators):
                    user = User(handle=f"swipecreator{i}", display_name=f"Creator {i}", password_hash="!")
                    session.add(user)
                    await session.flush()
                    owners.append(user.id)
                for i in range(count):
                    video = Video(owner_id=owners[i % len(owners)], status="ready", visibility="public",
                                  caption=f"bench clip {i} #bench", duration_ms=source.duration_ms,
                                  width=source.width, height=source.height, fps=source.fps, progress=100.0,
                                  renditions=source.renditions, artifacts=source.artifacts, features={},
                                  published_at=utcnow())
                    session.add(video)
                    await session.flush()
                    ids.append(video.id)
        finally:
            await db.dispose()
        return ids

    ids = asyncio.run(work())
    for video_id in ids:
        shutil.copytree(blobs / source_id, blobs / video_id)
    return ids


def chromium_pss() -> dict:
    """Proportional set size of the Chromium processes under this one, in total and by process
    type (browser, renderer, gpu-process, utility: the network and audio services, ...): what
    the page cannot see itself, decoders and media buffers included. PSS splits shared pages
    between processes, so the sums do not count them twice. `page_renderer` is the largest
    renderer alone, the page's: Chromium also starts short-lived and spare renderers (~50 MB
    each) that make the renderer sum jump."""
    import psutil

    by_type: dict[str, int] = {}
    largest = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chrom" not in proc.name():
                continue
            kind = next((arg.split("=", 1)[1] for arg in proc.cmdline() if arg.startswith("--type=")), "browser")
            pss = proc.memory_full_info().pss
            by_type[kind] = by_type.get(kind, 0) + pss
            if kind == "renderer":
                largest = max(largest, pss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return {"total": sum(by_type.values()), **by_type, "page_renderer": largest}


def _thinned(rows: list, count: int) -> list:
    """About `count` rows spread over the run, always ending with the last."""
    picked = rows[:: max(1, len(rows) // count)]
    return picked if picked[-1] is rows[-1] else picked + [rows[-1]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Session:
    def __init__(self, browser, url: str, preload: bool):
        self.context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("Network.enable")
        self.cdp.send("Performance.enable")
        self.urls: dict[str, str] = {}
        self.media_bytes = 0
        self.cdp.on("Network.requestWillBeSent", lambda e: self.urls.__setitem__(e["requestId"], e["request"]["url"]))
        self.cdp.on("Network.loadingFinished", self._finished)
        self.page.goto(f"{url}/?preload={'1' if preload else '0'}")
        self.page.wait_for_function(PLAYING)

    def _finished(self, event) -> None:
        if "/media/" in self.urls.pop(event["requestId"], ""):
            self.media_bytes += int(event.get("encodedDataLength") or 0)

    def swipe(self, dwell: float) -> None:
        before = self.page.evaluate("document.querySelector('.pager .card[aria-hidden=\"false\"]').dataset.id")
        self.page.keyboard.press("ArrowDown")
        try:
            self.page.wait_for_function(f"b => {{ const id = ({PLAYING})(); return id && id !== b; }}", arg=before)
        except Exception:
            state = self.page.evaluate("""() => [...document.querySelectorAll('.pager .card')].map(c => {
                const v = c.querySelector('video');
                return {id: c.dataset.id, hidden: c.getAttribute('aria-hidden'), t: v && v.currentTime,
                        paused: v && v.paused, ready: v && v.readyState, w: v && v.videoWidth,
                        err: c.querySelector('.card-error').textContent}; })""")
            raise RuntimeError(f"no video started playing after a swipe from {before}: {state}; "
                               f"page errors: {self.errors[-5:]}") from None
        self.page.wait_for_timeout(dwell * 1000)  # watching: the pace of the benchmark, not a sync

    def first_frames(self) -> list[float]:
        return [f["ms"] for f in self.page.evaluate("window.__clipfeed.firstFrames")]

    def memory(self) -> dict:
        metrics = {m["name"]: m["value"] for m in self.cdp.send("Performance.getMetrics")["metrics"]}
        media = self.page.evaluate("window.__clipfeed.mediaBytes()")
        return {"heap": metrics.get("JSHeapUsedSize", 0), "media": media["bytes"], "videos": media["elements"],
                "nodes": metrics.get("Nodes", 0), "chromium": chromium_pss()}

    def close(self) -> None:
        self.context.close()


class SoakTab:
    """The soak's page, driven through BareChromium: no DevTools Network agent holding every
    response body in the renderer (see bench/_cdp.py), so its memory is a person's."""

    def __init__(self, browser: BareChromium, url: str):
        self.tab = browser.new_tab(390, 844)
        self.tab.goto(f"{url}/?preload=1")
        self.tab.wait_for(PLAYING)

    def swipe(self, dwell: float) -> None:
        before = self.tab.evaluate(f"({CURRENT})()")
        self.tab.press("ArrowDown", 40)
        try:
            self.tab.wait_for(f"() => {{ const id = ({PLAYING})(); return id && id !== {json.dumps(before)} && id; }}")
        except CdpError:
            raise RuntimeError(f"no video started playing after a swipe from {before}") from None
        time.sleep(dwell)  # watching: the pace of the benchmark

    def first_frames(self) -> list[float]:
        return [f["ms"] for f in self.tab.evaluate("window.__clipfeed.firstFrames")]

    def memory(self) -> dict:
        metrics = self.tab.metrics()
        media = self.tab.evaluate("window.__clipfeed.mediaBytes()")
        return {"heap": metrics.get("JSHeapUsedSize", 0), "media": media["bytes"], "videos": media["elements"],
                "nodes": metrics.get("Nodes", 0), "chromium": chromium_pss()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="memory soak duration")
    parser.add_argument("--videos", type=int, default=40, help="distinct videos in the feed")
    parser.add_argument("--swipes", type=int, default=20, help="swipes per first-frame measurement")
    parser.add_argument("--dwell", type=float, default=0.6, help="seconds watched per video before the next swipe")
    parser.add_argument("--seconds", type=int, default=0, help="ignored (shared CLI flag)")
    parser.add_argument("--control", action="store_true",
                        help="also soak a bare hls.js page for as long (is the renderer's growth ours?)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw samples and timings here")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="clipfeed-swipe-") as tmp_name:
        tmp = Path(tmp_name)
        server = ServerProcess(tmp / "data", workers=True)
        try:
            source_id, source = upload_source(server, tmp)
            ids = clone_videos(tmp / "data", source_id, args.videos)
            rungs = ", ".join(r["name"] for r in source["renditions"])
            print(f"feed: {len(ids)} copies of one {source['duration_ms'] / 1000:.0f} s clip ({rungs})")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                results = {}
                for preload in (True, False):
                    session = Session(browser, server.url, preload)
                    session.page.wait_for_timeout(1500)  # let the first page settle, as a person would
                    start_bytes = session.media_bytes
                    for _ in range(args.swipes):
                        session.swipe(args.dwell + 0.4)
                    frames = session.first_frames()
                    results[preload] = {"frames": frames,
                                        "bytes_per_video": (session.media_bytes - start_bytes) / args.swipes}
                    session.close()
                browser.close()
            with BareChromium(CHROMIUM, BARE_ARGS) as bare:
                soak = SoakTab(bare, server.url)
                samples = []
                started = time.monotonic()
                next_sample = started
                swipes = 0
                while time.monotonic() - started < args.minutes * 60:
                    soak.swipe(args.dwell)
                    swipes += 1
                    if time.monotonic() >= next_sample:
                        samples.append((time.monotonic() - started, soak.memory()))
                        next_sample += 10
                samples.append((time.monotonic() - started, soak.memory()))
                soak_frames = soak.first_frames()
            control = None
            if args.control:
                hls_urls = [f"/media/videos/{video_id}/hls/master.m3u8" for video_id in ids]
                control = control_soak(server.url, hls_urls, args.minutes, args.dwell)
        finally:
            server.stop()

    if args.json:
        args.json.write_text(json.dumps({"frames": {"preload": results[True], "no_preload": results[False],
                                                    "soak": soak_frames},
                                         "swipes": swipes, "samples": samples, "control": control}, indent=1))
    report(args.minutes, args.dwell, results, samples, swipes, soak_frames, control)


def report(minutes: float, dwell: float, results: dict, samples: list, swipes: int, soak_frames: list,
           control: list | None) -> None:
    """Print the tables (also from a --json file: `report(**load_report(path, minutes, dwell))`)."""
    on, off = results[True]["frames"], results[False]["frames"]
    p50_on, p95_on, p50_off, p95_off = (percentile(on, 0.5), percentile(on, 0.95), percentile(off, 0.5),
                                        percentile(off, 0.95))
    totals = [(t, (m["heap"] + m["media"]) / 1e6, m) for t, m in samples]
    peak = max(total for _, total, _ in totals)
    warm = [total for t, total, _ in totals if t >= min(60, minutes * 60 / 3)] or [totals[-1][1]]
    first_level = statistics.mean(warm[: max(1, len(warm) // 3)])
    last_level = statistics.mean(warm[-max(1, len(warm) // 3):])
    print_table("swipe: first frame after a swipe (390x844, Chromium)",
                ["measure", "preload on (5 ahead)", "preload off", "ratio off/on", "goal"],
                [["first frame p50", f"{p50_on:.0f} ms", f"{p50_off:.0f} ms", f"{p50_off / max(p50_on, 0.1):.1f}x",
                  f"<= {GOAL_FIRST_FRAME_MS} ms with preload"],
                 ["first frame p95", f"{p95_on:.0f} ms", f"{p95_off:.0f} ms", f"{p95_off / max(p95_on, 0.1):.1f}x", ""],
                 ["swipes measured", len(on), len(off), "", ""],
                 ["bytes fetched per video", f"{results[True]['bytes_per_video'] / 1e3:.0f} kB",
                  f"{results[False]['bytes_per_video'] / 1e3:.0f} kB", "", "reported"]])
    print_table(f"swipe: memory while swiping for {minutes:g} min ({swipes} swipes, {dwell:g} s per video)",
                ["t (s)", "JS heap MB", "media MB (est.)", "total MB", "<video> elements", "DOM nodes",
                 "Chromium PSS MB (all renderers; page's)"],
                [[f"{t:.0f}", f"{m['heap'] / 1e6:.1f}", f"{m['media'] / 1e6:.1f}", f"{total:.1f}", m["videos"],
                  int(m["nodes"]), f"{m['chromium']['total'] / 1e6:.0f} ({m['chromium'].get('renderer', 0) / 1e6:.0f}; "
                  f"{m['chromium'].get('page_renderer', 0) / 1e6:.0f})"]
                 for t, total, m in _thinned(totals, 12)])

    def at(seconds: float):
        """The sample closest to `seconds` into the soak."""
        return min(totals, key=lambda row: abs(row[0] - seconds))

    def renderer(m: dict) -> float:
        return m["chromium"].get("page_renderer", m["chromium"].get("renderer", 0)) / 1e6

    soak_s = minutes * 60
    warm_s = min(60.0, soak_s / 3)  # "after the first minute" (shorter soaks: the first third)
    milestones = [("start", at(0)), (f"after {warm_s / 60:g} min", at(warm_s)), ("end", totals[-1])]
    base_m = milestones[1][1][2]
    renderer_growth = renderer(totals[-1][2]) - renderer(base_m)
    # Flat, per sample: the renderer's level over the last third against its level over the
    # middle third (after the allocator's warm-up), so one noisy sample does not decide it.
    tail = [renderer(m) for t, _, m in totals if t >= warm_s]
    third = max(1, len(tail) // 3)
    late_growth = statistics.mean(tail[-third:]) - statistics.mean(tail[:third]) if tail else 0.0
    print_table(f"swipe: memory at start / after {warm_s / 60:g} min / end of the soak",
                ["when", "t (s)", "JS heap MB", "media MB (est.)", "total MB", "renderer PSS MB",
                 f"renderer vs {warm_s / 60:g} min", "all Chromium PSS MB", "goal"],
                [[name, f"{t:.0f}", f"{m['heap'] / 1e6:.1f}", f"{m['media'] / 1e6:.1f}", f"{total:.1f}",
                  f"{renderer(m):.0f}", f"{renderer(m) - renderer(base_m):+.0f} MB",
                  f"{m['chromium']['total'] / 1e6:.0f}",
                  {"start": "", "end": f"renderer growth <= +{GOAL_RENDERER_GROWTH_MB} MB"}.get(name, "")]
                 for name, (t, total, m) in milestones])
    print_table("swipe: summary", ["measure", "result", "goal", "met"],
                [["first frame p50 / p95 (preload)", f"{p50_on:.0f} / {p95_on:.0f} ms", f"<= {GOAL_FIRST_FRAME_MS} ms",
                  "yes" if max(p50_on, p95_on) <= GOAL_FIRST_FRAME_MS else "no"],
                 ["soak first-frame p50 / p95", f"{percentile(soak_frames, .5):.0f} / {percentile(soak_frames, .95):.0f} ms",
                  "", ""],
                 ["peak JS heap + media", f"{peak:.1f} MB", f"<= {GOAL_MEMORY_MB} MB", "yes" if peak <= GOAL_MEMORY_MB else "no"],
                 ["JS heap + media growth after warm-up (last third vs first third)", f"{last_level - first_level:+.1f} MB",
                  "flat (<= +5 MB)", "yes" if last_level - first_level <= 5 else "no"],
                 [f"renderer PSS start / {warm_s / 60:g} min / end",
                  f"{renderer(totals[0][2]):.0f} / {renderer(base_m):.0f} / {renderer(totals[-1][2]):.0f} MB", "", ""],
                 [f"renderer PSS growth after {warm_s / 60:g} min", f"{renderer_growth:+.0f} MB",
                  f"<= +{GOAL_RENDERER_GROWTH_MB} MB", "yes" if renderer_growth <= GOAL_RENDERER_GROWTH_MB else "no"],
                 ["renderer PSS, last third vs first third after warm-up", f"{late_growth:+.0f} MB",
                  f"flat (<= +{GOAL_RENDERER_LATE_MB} MB)", "yes" if late_growth <= GOAL_RENDERER_LATE_MB else "no"],
                 ["by process type at the end (MB)", ", ".join(f"{k} {v / 1e6:.0f}" for k, v in
                                                          totals[-1][2]["chromium"].items() if k not in ("total", "page_renderer")), "", ""],
                 ["max <video> elements", max(m["videos"] for _, _, m in totals), "<= 3",
                  "yes" if max(m["videos"] for _, _, m in totals) <= 3 else "no"]])
    if control:
        def control_at(seconds: float):
            return min(control, key=lambda row: abs(row[0] - seconds))

        rows = []
        for name, seconds in (("start", 0), (f"after {warm_s / 60:g} min", warm_s), ("end", control[-1][0])):
            t, m = control_at(seconds)
            rows.append([name, f"{t:.0f}", m["clips"], f"{renderer(m):.0f}",
                         f"{renderer(m) - renderer(control_at(warm_s)[1]):+.0f} MB"])
        app_rows = [renderer(m) for _, m in samples]
        rows.append(["growth start -> end, bare page / clipfeed", "", "",
                     f"{renderer(control[-1][1]) - renderer(control[0][1]):+.0f} / "
                     f"{app_rows[-1] - app_rows[0]:+.0f} MB", ""])
        print_table("swipe: control, a bare page with nothing of ours (one <video>, new hls.js per clip)",
                    ["when", "t (s)", "clips played", "renderer PSS MB", f"vs {warm_s / 60:g} min"], rows)


def load_report(path: Path, minutes: float, dwell: float) -> dict:
    data = json.loads(Path(path).read_text())
    return {"minutes": minutes, "dwell": dwell, "samples": data["samples"], "swipes": data["swipes"],
            "soak_frames": data["frames"]["soak"], "control": data.get("control"),
            "results": {True: data["frames"]["preload"], False: data["frames"]["no_preload"]}}


if __name__ == "__main__":
    main()
