"""Ladder planning and the HLS master playlist (no ffmpeg command lines here: see ffmpeg.py).

A rung is named after its short edge ("720p") and keeps the source's aspect ratio, so a portrait
clip gets portrait rungs. Rungs never upscale: a source smaller than the lowest standard rung gets
a single rung at its own size.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

# short edge -> (video_kbps nominal, maxrate_kbps, bufsize_kbps, audio_kbps)
STANDARD_RUNGS: dict[int, tuple[int, int, int, int]] = {
    1080: (4500, 6000, 12000, 128),
    720: (2500, 3500, 7000, 128),
    480: (1000, 1500, 3000, 128),
}
# For a source below 480 on its short edge: bitrates scale with the pixel count from the 480p rung.
_SMALL_BASE = 480

RUNG_PLAYLIST = "playlist.m3u8"
RUNG_INIT = "init.mp4"
RUNG_SEGMENT_PATTERN = "seg_%05d.m4s"
SEGMENT_SECONDS = 2


@dataclass(frozen=True)
class Rung:
    name: str
    width: int
    height: int
    video_kbps: int
    maxrate_kbps: int
    bufsize_kbps: int
    audio_kbps: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def playlist(self) -> str:
        return f"{self.name}/{RUNG_PLAYLIST}"


def _even(value: float) -> int:
    return max(2, 2 * int(round(value / 2)))


def _even_down(value: int) -> int:
    return max(2, value - value % 2)


def plan_ladder(display_width: int, display_height: int) -> list[Rung]:
    """Rungs (lowest first) for a source whose *displayed* (post-rotation) size is given."""
    if display_width <= 0 or display_height <= 0:
        raise ValueError(f"invalid source size {display_width}x{display_height}")
    short, long_ = min(display_width, display_height), max(display_width, display_height)
    rungs: list[Rung] = []
    for target, (kbps, maxrate, bufsize, audio) in STANDARD_RUNGS.items():
        if target > short:
            continue
        if target == short:
            s, l = _even_down(short), _even_down(long_)
        else:
            s, l = target, _even(long_ * target / short)
        w, h = (s, l) if display_width <= display_height else (l, s)
        rungs.append(Rung(f"{target}p", w, h, kbps, maxrate, bufsize, audio))
    if not rungs:
        w, h = _even_down(display_width), _even_down(display_height)
        base_kbps, base_max, base_buf, audio = STANDARD_RUNGS[_SMALL_BASE]
        base_pixels = _SMALL_BASE * _even(_SMALL_BASE * 16 / 9)
        factor = max(0.25, (w * h) / base_pixels)
        rungs.append(Rung(f"{min(w, h)}p", w, h, max(200, int(base_kbps * factor)),
                          max(300, int(base_max * factor)), max(600, int(base_buf * factor)), audio))
    return sorted(rungs, key=lambda r: r.pixels)


# ---------------------------------------------------------------------------- artwork sizes

STORYBOARD_LONG_EDGE = 160
STORYBOARD_MAX_TILES = 30


def short_edge_size(width: int, height: int, short: int) -> tuple[int, int]:
    if min(width, height) <= short:
        return width - width % 2, height - height % 2
    scale = short / min(width, height)
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


def long_edge_size(width: int, height: int, long_: int) -> tuple[int, int]:
    scale = min(1.0, long_ / max(width, height))
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


@dataclass(frozen=True)
class StoryboardPlan:
    interval_s: float
    count: int
    columns: int
    rows: int
    tile_width: int
    tile_height: int


def plan_storyboard(display_width: int, display_height: int, duration_s: float) -> StoryboardPlan:
    interval = float(max(1, math.ceil(duration_s / STORYBOARD_MAX_TILES)))
    count = max(1, math.ceil(max(duration_s, 0.001) / interval - 1e-6))
    tw, th = long_edge_size(display_width, display_height, STORYBOARD_LONG_EDGE)
    columns = min(count, 6 if th >= tw else 5)
    rows = math.ceil(count / columns)
    return StoryboardPlan(interval, count, columns, rows, tw, th)


def storyboard_vtt(plan: StoryboardPlan, duration_s: float, image: str = "storyboard.jpg") -> str:
    def ts(seconds: float) -> str:
        ms = int(round(seconds * 1000))
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"

    lines = ["WEBVTT", ""]
    for i in range(plan.count):
        start = i * plan.interval_s
        end = min(duration_s, start + plan.interval_s) if i == plan.count - 1 else start + plan.interval_s
        if end <= start:
            end = start + 0.001
        x, y = (i % plan.columns) * plan.tile_width, (i // plan.columns) * plan.tile_height
        lines += [f"{ts(start)} --> {ts(end)}", f"{image}#xywh={x},{y},{plan.tile_width},{plan.tile_height}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- master playlist

@dataclass(frozen=True)
class RungStats:
    bandwidth: int  # peak segment bitrate, bits/s
    average_bandwidth: int
    codecs: str
    frame_rate: float | None
    segments: int
    duration_s: float


_EXTINF = re.compile(r"^#EXTINF:([0-9.]+)")
_MAP = re.compile(r'^#EXT-X-MAP:URI="([^"]+)"')


def _avc_codec(init: bytes) -> str:
    at = init.find(b"avcC")
    if at < 0 or len(init) < at + 8:
        return "avc1.640028"
    profile, compat, level = init[at + 5], init[at + 6], init[at + 7]
    return f"avc1.{profile:02x}{compat:02x}{level:02x}"


def _aac_codec(init: bytes) -> str | None:
    if b"mp4a" not in init:
        return None
    at = init.find(b"esds")
    # esds: DecoderConfigDescriptor (tag 4) -> objectTypeIndication; DecoderSpecificInfo (tag 5) ->
    # the first 5 bits are the audio object type (2 = AAC-LC, 5 = HE-AAC).
    if at >= 0:
        blob = init[at + 8: at + 80]
        tag5 = blob.find(b"\x05")
        while tag5 >= 0:
            j = tag5 + 1
            while j < len(blob) and blob[j] & 0x80:
                j += 1
            j += 1
            if j < len(blob):
                aot = blob[j] >> 3
                if 1 <= aot <= 31:
                    return f"mp4a.40.{aot}"
            tag5 = blob.find(b"\x05", tag5 + 1)
    return "mp4a.40.2"


def _frame_rate(init: bytes, first_segment: bytes) -> float | None:
    try:
        import av

        with av.open(io.BytesIO(init + first_segment), format="mp4") as container:
            if not container.streams.video:
                return None
            rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
            return float(rate) if rate else None
    except Exception:  # noqa: BLE001 - FRAME-RATE is optional in the master playlist
        return None


def rung_stats(rung_dir: Path) -> RungStats:
    """Measure a finished rung: peak/average segment bitrate, codec string, frame rate."""
    lines = (rung_dir / RUNG_PLAYLIST).read_text().splitlines()
    init_name = RUNG_INIT
    durations: list[float] = []
    sizes: list[int] = []
    pending: float | None = None
    for line in lines:
        line = line.strip()
        if match := _MAP.match(line):
            init_name = match.group(1)
        elif match := _EXTINF.match(line):
            pending = float(match.group(1))
        elif line and not line.startswith("#") and pending is not None:
            durations.append(pending)
            sizes.append(os.path.getsize(rung_dir / line))
            pending = None
    init = (rung_dir / init_name).read_bytes()
    first = (rung_dir / _first_segment(lines)).read_bytes() if durations else b""
    total_s = sum(durations)
    average = int(math.ceil(sum(sizes) * 8 / total_s)) if total_s > 0 else 0
    # Peak over full-length segments: a short last segment (a keyframe plus a few frames) would
    # otherwise report a misleading peak.
    full = [(s, d) for s, d in zip(sizes, durations) if d >= SEGMENT_SECONDS * 0.5] or list(zip(sizes, durations))
    peak = max((int(math.ceil(s * 8 / d)) for s, d in full if d > 0), default=average)
    codecs = [_avc_codec(init)]
    audio = _aac_codec(init)
    if audio:
        codecs.append(audio)
    return RungStats(bandwidth=max(peak, average), average_bandwidth=average, codecs=",".join(codecs),
                     frame_rate=_frame_rate(init, first), segments=len(sizes), duration_s=total_s)


def _first_segment(lines: list[str]) -> str:
    return next(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def master_playlist_text(rungs_ready: list[Rung], base_dir: Path, *, has_audio: bool) -> str:
    out = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rung in rungs_ready:
        try:
            stats: RungStats | None = rung_stats(base_dir / rung.name)
        except (OSError, ValueError, StopIteration):
            stats = None
        if stats is not None:
            bandwidth, average, codecs, fps = stats.bandwidth, stats.average_bandwidth, stats.codecs, stats.frame_rate
        else:  # not measurable (files elsewhere): nominal figures
            audio_kbps = rung.audio_kbps if has_audio else 0
            bandwidth = (rung.maxrate_kbps + audio_kbps) * 1000
            average = (rung.video_kbps + audio_kbps) * 1000
            codecs = "avc1.640028" + (",mp4a.40.2" if has_audio else "")
            fps = None
        attrs = [f"BANDWIDTH={bandwidth}", f"AVERAGE-BANDWIDTH={average}",
                 f"RESOLUTION={rung.width}x{rung.height}", f'CODECS="{codecs}"']
        if fps:
            attrs.append(f"FRAME-RATE={fps:.3f}")
        out.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        out.append(rung.playlist)
    return "\n".join(out) + "\n"


def write_master_playlist(rungs_ready: list[Rung], out_path: Path, *, has_audio: bool) -> str:
    """Write the master playlist atomically next to the rung folders; returns its text."""
    out_path = Path(out_path)
    text = master_playlist_text(rungs_ready, out_path.parent, has_audio=has_audio)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out_path)
    return text
