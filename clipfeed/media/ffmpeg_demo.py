"""Demo content: visually and audibly distinct clips generated from lavfi sources (``make run``,
benchmarks). Runs through ``ffmpeg.run_ffmpeg`` like every other ffmpeg process."""

from __future__ import annotations

import os
from pathlib import Path

from clipfeed.media.ffmpeg import _file_input, escape_filter_value, run_ffmpeg
from clipfeed.media.ladder import short_edge_size

DEMO_PATTERNS = ("testsrc2", "mandelbrot", "life", "cellauto", "smptehdbars", "rgbtestsrc", "gradients")
_EXPENSIVE_PATTERNS = {"mandelbrot", "life", "cellauto"}  # rendered small, then scaled up
_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
)


def _font() -> str | None:
    return next((f for f in _FONT_CANDIDATES if os.path.exists(f)), None)


def generate_demo_clip(out: Path, *, width: int = 720, height: int = 1280, seconds: float = 10, fps: int = 30,
                       pattern: str = "testsrc2", hue: int = 0, tone_hz: float = 440.0, text: str | None = None,
                       audio: bool = True, preset: str = "veryfast", ffmpeg: str | None = None,
                       timeout_s: float = 600.0) -> Path:
    """Generate a visually and audibly distinct clip (H.264 + AAC MP4) from lavfi sources."""
    if pattern not in DEMO_PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of {', '.join(DEMO_PATTERNS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if pattern in _EXPENSIVE_PATTERNS:
        sw, sh = short_edge_size(width, height, 240)
    else:
        sw, sh = width, height
    source = f"{pattern}=s={sw}x{sh}:r={fps}"
    chain = [f"scale={width}:{height}:flags=bicubic", "format=yuv420p", f"hue=h={int(hue) % 360}"]
    font = _font()
    if text and font:
        size = max(16, min(width, height) // 12)
        chain.append(
            f"drawtext=fontfile={escape_filter_value(font)}:text={escape_filter_value(text)}:expansion=none"
            f":fontsize={size}:fontcolor=white:borderw={max(2, size // 12)}:bordercolor=black"
            f":x=(w-text_w)/2:y=h*0.75")
    args = ["-f", "lavfi", "-i", source]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency={float(tone_hz):g}:sample_rate=48000:beep_factor=2"]
    args += ["-filter_complex", f"[0:v]{','.join(chain)}[v]", "-map", "[v]"]
    if audio:
        args += ["-map", "1:a", "-c:a", "aac", "-b:a", "128k", "-ac", "2"]
    args += ["-t", f"{float(seconds):.3f}", "-c:v", "libx264", "-preset", preset, "-crf", "20",
             "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", _file_input(out)]
    run_ffmpeg(args, timeout_s=timeout_s, ffmpeg=ffmpeg, extra_demuxers=("lavfi",))
    return out
