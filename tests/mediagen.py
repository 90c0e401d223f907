"""Generate test media with ffmpeg's lavfi sources (never commit media files).

Plain subprocess on purpose: fixtures must not depend on the code under test. Every helper writes
to the path it is given and returns it. Encodes use ``ultrafast`` so fixtures stay cheap.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str, timeout: float = 120) -> None:
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{done.stderr.decode(errors='replace')}")


def _video_source(pattern: str, width: int, height: int, fps: float) -> str:
    if pattern == "split":  # left half white, right half black: shows orientation after rotation
        return (f"color=c=black:s={width}x{height}:r={fps},"
                f"drawbox=x=0:y=0:w={width // 2}:h={height}:color=white:t=fill")
    if pattern == "black":
        return f"color=c=black:s={width}x{height}:r={fps}"
    return f"{pattern}=s={width}x{height}:r={fps}"


def make_clip(path: Path, *, width: int, height: int, seconds: float, fps: float = 30, audio: bool = True,
              rotate: int | None = None, pattern: str = "testsrc2", faststart: bool = True,
              codec: str = "libx264", tone_hz: int = 440) -> Path:
    """An H.264 (+AAC) clip. ``rotate`` stores display-rotation metadata (degrees counter-clockwise)
    without touching the coded pictures, as a phone does."""
    path = Path(path)
    target = path.with_name(path.stem + ".coded" + path.suffix) if rotate else path
    args = ["-f", "lavfi", "-i", _video_source(pattern, width, height, fps)]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate=48000"]
    args += ["-t", f"{seconds}", "-map", "0:v"]
    if audio:
        args += ["-map", "1:a", "-c:a", "aac", "-b:a", "96k", "-ac", "2"]
    args += ["-c:v", codec, "-pix_fmt", "yuv420p"]
    if codec == "libx264":
        args += ["-preset", "ultrafast", "-g", str(int(fps))]
    if faststart and path.suffix in (".mp4", ".mov", ".m4v"):
        args += ["-movflags", "+faststart"]
    args.append(str(target))
    ffmpeg(*args)
    if rotate:
        ffmpeg("-display_rotation", str(rotate), "-i", str(target), "-c", "copy", str(path))
        target.unlink()
    return path


def make_audio_only(path: Path, *, seconds: float = 2.0) -> Path:
    fmt = {".mp3": "mp3", ".m4a": "ipod", ".wav": "wav"}.get(Path(path).suffix, "mp4")
    codec = {"mp3": "libmp3lame", "wav": "pcm_s16le"}.get(fmt, "aac")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:sample_rate=44100", "-t", str(seconds), "-c:a", codec,
           "-f", fmt, str(path))
    return Path(path)


def make_image(path: Path, *, width: int = 64, height: int = 48) -> Path:
    """A still image; the format follows the suffix (.png, .jpg, .gif, .webp)."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s={width}x{height}", "-frames:v", "1", "-update", "1", str(path))
    return Path(path)


def make_huge_frame(path: Path, *, width: int = 8000, height: int = 8000) -> Path:
    """One black frame of a very large picture size (MPEG-4 Part 2 in MP4: cheap to encode)."""
    ffmpeg("-f", "lavfi", "-i", f"color=c=black:s={width}x{height}:r=1", "-frames:v", "1", "-c:v", "mpeg4",
           "-q:v", "31", str(path))
    return Path(path)


def truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def random_bytes(path: Path, size: int = 65536, seed: int = 7) -> Path:
    Path(path).write_bytes(random.Random(seed).randbytes(size))
    return Path(path)
