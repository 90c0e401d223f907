"""Glass-to-glass latency of a live stream: RTMP publish -> clipfeed ingest -> LL-HLS -> a player.

The publisher is a clock: every frame it generates carries its capture time (wall clock, ms)
as a 48-block barcode burned into the picture; ffmpeg encodes it (x264 ultrafast, zerolatency,
1 s GOP, + AAC tone) and publishes it over RTMP to `clipfeed serve`'s ingest. The player is
PyAV behind an LL-HLS client that behaves like one: it follows the `EXT-X-PRELOAD-HINT` of the
top rung's playlist (the server holds the request until that part exists), appends each part
to the segment it belongs to and decodes it; for each part the newest frame's barcode is read
and compared with the clock at that moment.

Baseline in the same run: a plain (non-LL) HLS player on the same stream, fetching whole
segments as soon as the playlist lists them (`_HLS_msn` blocking reload) — the latency you get
from segments alone. Reported: median and p95 of the newest frame's age per part / per segment,
and the ratio LL / segments. Goal: LL median <= 2 s.

    python bench/live.py --seconds 30
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import ServerProcess, free_port, print_table, register  # noqa: E402
from clipfeed.live.packager import iter_boxes, parse_fragment, parse_init  # noqa: E402

WIDTH, HEIGHT, FPS = 854, 480, 30
BITS = 48
BLOCK = 16
ROWS_Y = (8, 8 + BLOCK + 8)  # two rows of 24 blocks
GOAL_S = 2.0
HOLD_BACK_S = 3 * 0.334  # the playlist's PART-HOLD-BACK with the default part target


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# --- the clock: frames carrying their capture time --------------------------------------------

def encode_time(ms: int) -> list[int]:
    value = ms & ((1 << 44) - 1)
    bits = [(value >> i) & 1 for i in range(44)]
    checksum = sum(bits) & 0xF
    return bits + [(checksum >> i) & 1 for i in range(4)]


def decode_time(gray: np.ndarray) -> int | None:
    bits = []
    for i in range(BITS):
        row, col = divmod(i, 24)
        y = ROWS_Y[row] + BLOCK // 2
        x = 8 + col * (BLOCK + 8) + BLOCK // 2
        bits.append(1 if gray[y - 3:y + 3, x - 3:x + 3].mean() > 128 else 0)
    value = sum(b << i for i, b in enumerate(bits[:44]))
    checksum = sum(b << i for i, b in enumerate(bits[44:]))
    if sum(bits[:44]) & 0xF != checksum:
        return None
    now = int(time.time() * 1000)
    return value | (now & ~((1 << 44) - 1))


def draw(frame: np.ndarray, ms: int) -> None:
    for i, bit in enumerate(encode_time(ms)):
        row, col = divmod(i, 24)
        y, x = ROWS_Y[row], 8 + col * (BLOCK + 8)
        frame[y:y + BLOCK, x:x + BLOCK] = 235 if bit else 16


def run_publisher(url: str, seconds: float, stop: threading.Event) -> subprocess.Popen:
    cmd = [_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{WIDTH}x{HEIGHT}", "-framerate", str(FPS), "-i", "pipe:0",
           "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
           "-g", str(FPS), "-keyint_min", str(FPS), "-pix_fmt", "yuv420p", "-b:v", "1500k",
           "-c:a", "aac", "-b:a", "64k", "-shortest", "-f", "flv", url]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def feed() -> None:
        base = (np.add.outer(np.arange(HEIGHT), np.arange(WIDTH)) % 256).astype(np.uint8)
        start = time.monotonic()
        try:
            for n in range(int(seconds * FPS)):
                if stop.is_set():
                    break
                delay = start + n / FPS - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # the source clock: one frame every 1/FPS s
                frame = np.roll(base, n * 4, axis=1)
                draw(frame, int(time.time() * 1000))
                proc.stdin.write(frame.tobytes())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    threading.Thread(target=feed, daemon=True).start()
    return proc


# --- players --------------------------------------------------------------------------------

def newest_capture_ms(data: bytes) -> int | None:
    import av

    newest = None
    with av.open(io.BytesIO(data), format="mp4") as container:
        for frame in container.decode(video=0):
            newest = frame
    if newest is None:
        return None
    return decode_time(newest.to_ndarray(format="gray"))


def starts_on_keyframe(init_info, data: bytes) -> bool:
    """Whether a part's first video sample is a keyframe (read from its moof, as a player does)."""
    for kind, start, end in iter_boxes(data):
        if kind == "moof":
            info = parse_fragment(data, (start, end), init_info)
            if info.video_duration > 0:
                return info.independent
    return False


class _Player(threading.Thread):
    """A player thread that records, for each piece of media it gets, how old its newest frame
    is (the capture time burnt into the picture against this machine's clock)."""

    def __init__(self, base: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.base, self.stop = base, stop
        self.latencies: list[float] = []

    def record(self, media: bytes) -> None:
        captured = newest_capture_ms(media)
        if captured is not None:
            self.latencies.append(time.time() - captured / 1000)


class LowLatencyPlayer(_Player):
    """Follows the preload hint part by part (what hls.js does in low-latency mode)."""

    def run(self) -> None:
        with httpx.Client(timeout=15) as http:
            init = http.get(f"{self.base}/init.mp4").content
            init_info = parse_init(init)
            text = http.get(f"{self.base}/index.m3u8").text
            hint = int(re.search(r'PRELOAD-HINT:TYPE=PART,URI="part(\d+)\.m4s"', text).group(1))
            segment = b""
            while not self.stop.is_set():
                # The server holds this request until the part exists (parts are numbered across
                # segments, so the hint is always the next one).
                response = http.get(f"{self.base}/part{hint}.m4s")
                if response.status_code != 200:
                    if "#EXT-X-ENDLIST" in http.get(f"{self.base}/index.m3u8").text:
                        return
                    continue
                if starts_on_keyframe(init_info, response.content):
                    segment = b""  # decoding restarts at every keyframe, as a decoder would
                segment += response.content
                self.record(init + segment)
                hint += 1


class SegmentPlayer(_Player):
    """The baseline: whole segments, fetched as soon as the playlist lists them."""

    def run(self) -> None:
        with httpx.Client(timeout=15) as http:
            init = http.get(f"{self.base}/init.mp4").content
            text = http.get(f"{self.base}/index.m3u8").text
            done = re.findall(r"^s(\d+)\.m4s$", text, re.M)
            msn = int(done[-1]) + 1 if done else int(re.search(r"MEDIA-SEQUENCE:(\d+)", text).group(1))
            while not self.stop.is_set():
                text = http.get(f"{self.base}/index.m3u8", params={"_HLS_msn": msn}).text
                if f"\ns{msn}.m4s" not in text:
                    if "#EXT-X-ENDLIST" in text:
                        return
                    continue
                self.record(init + http.get(f"{self.base}/s{msn}.m4s").content)
                msn += 1


BROWSER_PAGE = """<!doctype html><html><body>
<video id="v" muted playsinline autoplay></video><canvas id="c" width="%(w)d" height="%(h)d"></canvas>
<script src="/static/vendor/hls.min.js"></script>
<script>
  const W = %(w)d, H = %(h)d, ROWS = [%(r0)d, %(r1)d], BLOCK = %(block)d;
  window.latencies = []; window.errors = [];
  const video = document.getElementById('v');
  const ctx = document.getElementById('c').getContext('2d', {willReadFrequently: true});
  const hls = new Hls({lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5, backBufferLength: 10});
  hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) window.errors.push(d.details); });
  hls.loadSource(new URLSearchParams(location.search).get('src'));
  hls.attachMedia(video);
  function capture() {
    ctx.drawImage(video, 0, 0, W, H);
    const img = ctx.getImageData(0, 0, W, BLOCK * 3).data;
    const bits = [];
    for (let i = 0; i < 48; i++) {
      const row = Math.floor(i / 24), col = i %% 24;
      const y = ROWS[row] + BLOCK / 2, x = 8 + col * (BLOCK + 8) + BLOCK / 2;
      let sum = 0;
      for (let dy = -3; dy < 3; dy++) for (let dx = -3; dx < 3; dx++) sum += img[((y + dy) * W + (x + dx)) * 4];
      bits.push(sum / 36 > 128 ? 1 : 0);
    }
    let value = 0, ones = 0, check = 0;
    for (let i = 0; i < 44; i++) { value += bits[i] * 2 ** i; ones += bits[i]; }
    for (let i = 0; i < 4; i++) check += bits[44 + i] * 2 ** i;
    if ((ones & 15) !== check) return;
    const now = Date.now();
    const captured = Math.floor(now / 2 ** 44) * 2 ** 44 + value;
    window.latencies.push((now - captured) / 1000);
  }
  function onFrame() { if (video.videoWidth) capture(); video.requestVideoFrameCallback(onFrame); }
  video.requestVideoFrameCallback(onFrame);
</script></body></html>""" % {"w": WIDTH, "h": HEIGHT, "r0": ROWS_Y[0], "r1": ROWS_Y[1], "block": BLOCK}


def browser_latencies(server_url: str, master: str, seconds: float, warmup: float) -> list[float] | None:
    """Chromium + hls.js (low-latency mode): the age of every frame the video element presents.
    None when Chromium or Playwright is not available."""
    import os

    if not os.access("/usr/bin/chromium", os.X_OK):
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page()
            page.route(f"{server_url}/bench-live.html**",
                       lambda route: route.fulfill(status=200, content_type="text/html", body=BROWSER_PAGE))
            page.goto(f"{server_url}/bench-live.html?src={master}")
            page.wait_for_timeout(warmup * 1000)  # the player settles on its target latency
            page.evaluate("window.latencies = []")
            page.wait_for_timeout(seconds * 1000)
            result = page.evaluate("({latencies: window.latencies, errors: window.errors})")
        finally:
            browser.close()
    if result["errors"]:
        print("hls.js errors:", result["errors"])
    return result["latencies"]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30, help="how long to publish")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds ignored at the start")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="clipfeed-bench-live-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        rtmp_port = free_port()
        server = ServerProcess(data_dir, workers=False, extra_env={"CLIPFEED_RTMP_PORT": str(rtmp_port)})
        stop = threading.Event()
        publisher = None
        try:
            token = register(server.url, "benchlive")
            started = httpx.post(f"{server.url}/api/v1/live/start", json={"title": "bench"},
                                 headers={"Authorization": f"Bearer {token}"}).json()
            publisher = run_publisher(f"rtmp://127.0.0.1:{rtmp_port}/live/{started['stream_key']}",
                                      args.seconds + args.warmup, stop)
            base = f"{server.url}/media/live/{started['stream_id']}/src"
            deadline = time.monotonic() + 30
            while httpx.get(f"{base}/index.m3u8").status_code != 200 or \
                    "PRELOAD-HINT" not in httpx.get(f"{base}/index.m3u8").text:
                if time.monotonic() > deadline:
                    raise RuntimeError("the live playlist never appeared")
                time.sleep(0.1)
            time.sleep(args.warmup)
            ll, seg = LowLatencyPlayer(base, stop), SegmentPlayer(base, stop)
            ll.start()
            seg.start()
            browser = browser_latencies(server.url, f"/media/live/{started['stream_id']}/master.m3u8",
                                        max(5.0, args.seconds - 2 * args.warmup - 2), 2 * args.warmup)
            publisher.wait(timeout=args.seconds + args.warmup + 60)
            ll.join(timeout=15)
            seg.join(timeout=15)
        finally:
            stop.set()
            if publisher is not None and publisher.poll() is None:
                publisher.kill()
            server.stop()

    if len(ll.latencies) < 10 or len(seg.latencies) < 3:
        print(f"too few samples: {len(ll.latencies)} parts, {len(seg.latencies)} segments")
        return 1
    ll_med, seg_med = statistics.median(ll.latencies), statistics.median(seg.latencies)
    rows = [
        ["LL-HLS parts (preload hint + blocking reload)", len(ll.latencies), f"{ll_med:.3f}",
         f"{_pct(ll.latencies, 0.95):.3f}", f"<= {GOAL_S:.1f} s median", "PASS" if ll_med <= GOAL_S else "FAIL"],
        [f"LL-HLS + PART-HOLD-BACK ({HOLD_BACK_S:.3f} s, what hls.js keeps behind the edge)", len(ll.latencies),
         f"{ll_med + HOLD_BACK_S:.3f}", f"{_pct(ll.latencies, 0.95) + HOLD_BACK_S:.3f}", f"<= {GOAL_S:.1f} s median",
         "PASS" if ll_med + HOLD_BACK_S <= GOAL_S else "FAIL"],
        ["Chromium + hls.js low-latency mode (every presented frame)", len(browser or []),
         f"{statistics.median(browser):.3f}" if browser else "n/a",
         f"{_pct(browser, 0.95):.3f}" if browser else "n/a", f"<= {GOAL_S:.1f} s median",
         ("PASS" if statistics.median(browser) <= GOAL_S else "FAIL") if browser else ""],
        ["baseline: whole 1 s segments", len(seg.latencies), f"{seg_med:.3f}", f"{_pct(seg.latencies, 0.95):.3f}",
         "", ""],
        ["ratio LL / segments", "", f"{ll_med / seg_med:.2f}x", "", "", ""],
    ]
    print_table(f"live glass-to-glass, {WIDTH}x{HEIGHT}@{FPS} x264 zerolatency 1 s GOP, {args.seconds} s "
                "(newest frame's age when its part/segment is decoded)",
                ["player", "samples", "median s", "p95 s", "goal", ""], rows)
    return 0 if ll_med + HOLD_BACK_S <= GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
