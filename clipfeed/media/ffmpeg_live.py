"""The live ffmpeg command lines and their (asyncio) process runner.

Each live rung is one ffmpeg process: FLV in on stdin (the ingest remuxes the publisher's RTMP
messages into FLV tags), fragmented MP4 out on stdout, read by ``clipfeed.live.packager``. The
top rung copies the publisher's H.264 when it is within limits; other rungs are encoded with
x264 ``zerolatency`` and take their keyframes where the source has them (``-force_key_frames
source``), so every rung's segments start at the same instants.

Fragments: ``frag_keyframe`` cuts one at every keyframe (segment starts), ``frag_duration`` one
every ``part_s`` in between (the LL-HLS parts); ``empty_moov`` puts the init segment (ftyp+moov)
first and ``flush_packets`` pushes each fragment down the pipe as soon as it is complete.
Timestamps are copied from the publisher (``-copyts``), so a rung started later (the scaling
rule) lines up with the ones running since the start.

Hardening as in ``media/ffmpeg.py``: the same base flags, input protocol whitelist (``pipe``
only here) and a format whitelist of just ``flv``; the process runs in its own process group and
is killed with it at the time limit or when the stream stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass

from clipfeed.media.ffmpeg import BASE_ARGS, ffmpeg_executable

LIVE_INPUT_PROTOCOLS = "pipe"
LIVE_INPUT_FORMAT = "flv"
STDERR_TAIL = 4000


@dataclass(frozen=True)
class LiveRungPlan:
    """One output rendition: ``copy`` (publisher's H.264 as it is) or an encode at ``short_edge``."""

    name: str
    copy_video: bool
    width: int = 0   # 0: unknown (copy) — the packager reads it from the init segment
    height: int = 0
    video_kbps: int = 0
    audio: str = "copy"  # "copy" (publisher's AAC), "aac" (re-encode) or "none"
    audio_kbps: int = 96


def even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def scaled_size(width: int, height: int, short_edge: int) -> tuple[int, int]:
    """Portrait-aware: the short edge becomes ``short_edge`` (never upscaled), even dimensions."""
    if min(width, height) <= short_edge:
        return even(width), even(height)
    factor = short_edge / min(width, height)
    return even(width * factor), even(height * factor)


def live_rung_args(plan: LiveRungPlan, *, part_s: float, preset: str = "veryfast",
                   gop_s: float = 1.0) -> list[str]:
    """Arguments (without the executable and base flags) for one rung: FLV on stdin -> fMP4 on stdout."""
    args = [
        # Start at once: FLV carries the codec configuration in its first tags, so no probing is needed.
        "-fflags", "+genpts", "-flags", "low_delay", "-probesize", "65536", "-analyzeduration", "0",
        "-copyts", "-protocol_whitelist", LIVE_INPUT_PROTOCOLS, "-format_whitelist", LIVE_INPUT_FORMAT,
        "-f", "flv", "-i", "pipe:0",
        "-map", "0:v:0",
    ]
    if plan.audio != "none":
        args += ["-map", "0:a:0?"]
    if plan.copy_video:
        args += ["-c:v", "copy"]
    else:
        kbps = plan.video_kbps
        args += [
            "-vf", f"scale={plan.width}:{plan.height}:flags=bilinear,setsar=1,format=yuv420p",
            "-c:v", "libx264", "-preset", preset, "-tune", "zerolatency", "-profile:v", "main",
            "-b:v", f"{kbps}k", "-maxrate", f"{int(kbps * 1.2)}k", "-bufsize", f"{kbps}k",
            # Keyframes where the publisher has them (segments line up across rungs), and at the
            # latest every 2 GOPs should the publisher's keyframes be sparse.
            "-force_key_frames", "source", "-g", str(max(1, int(60 * gop_s))), "-sc_threshold", "0",
        ]
    if plan.audio == "copy":
        args += ["-c:a", "copy"]
    elif plan.audio == "aac":
        args += ["-c:a", "aac", "-b:a", f"{plan.audio_kbps}k", "-ac", "2", "-ar", "48000"]
    args += [
        "-f", "mp4", "-movflags", "+empty_moov+default_base_moof+frag_keyframe+skip_trailer",
        "-frag_duration", str(int(part_s * 1_000_000)), "-flush_packets", "1", "-muxdelay", "0",
        "pipe:1",
    ]
    return args


class LiveFFmpeg:
    """One long-running ffmpeg with stdin/stdout pipes, in its own process group, killed at
    ``time_limit_s`` or by ``stop``. ``stderr_tail`` keeps the last error lines for the log."""

    def __init__(self, args: list[str], *, time_limit_s: float, ffmpeg: str | None = None):
        self.cmd = [ffmpeg_executable(ffmpeg), *BASE_ARGS, *args]
        self.time_limit_s = time_limit_s
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_tail = b""
        self._watch: asyncio.Task | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=1 << 20)
        self._watch = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        try:
            async with asyncio.timeout(self.time_limit_s):
                while True:
                    line = await self.proc.stderr.read(1024)
                    if not line:
                        break
                    self.stderr_tail = (self.stderr_tail + line)[-STDERR_TAIL:]
                await self.proc.wait()
        except TimeoutError:
            self.kill()

    @property
    def stdin(self) -> asyncio.StreamWriter:
        assert self.proc is not None and self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> asyncio.StreamReader:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def close_input(self) -> None:
        if self.proc is not None and self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.proc.stdin.wait_closed()

    async def wait(self, timeout_s: float) -> int | None:
        """Wait for exit (after ``close_input``); killed when it takes longer than ``timeout_s``."""
        if self.proc is None:
            return None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        except asyncio.TimeoutError:
            self.kill()
            code = await self.proc.wait()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        return code
