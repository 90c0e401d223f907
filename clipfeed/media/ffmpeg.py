"""The one place that builds ffmpeg command lines and runs ffmpeg.

Pure functions over local paths: no database, no settings object. Every ffmpeg process started
here runs through ``run_ffmpeg``/``_Proc``, which

* prepends ``-nostdin -hide_banner -nostats -loglevel error -y``,
* puts ``-protocol_whitelist file,pipe -format_whitelist <single-file demuxers>`` before every
  ``-i``, so no input can make ffmpeg follow a URL or open a playlist/concat list,
* runs ffmpeg in its own process group and kills the group on timeout, on an output-size overrun
  or when the caller goes away,
* parses ``-progress pipe:1`` into a 0..1 fraction.

The ladder (see ``transcode_ladder``) publishes its lowest rung first. Pass 1 makes the lowest
rung and the poster; pass 2 decodes once more and ``split``s into the remaining rungs plus the
preview, storyboard, extracted sound and loudness. Both start together, pass 2 at the lowest CPU
priority, so pass 1 runs at nearly full speed and pass 2 uses whatever CPU pass 1 leaves idle.
Source audio that is already AAC-LC (what phones record) is copied into the rungs, not re-encoded.
An upload that reuses a sound gets it as a second input of both passes (looped and trimmed to
the clip, optionally mixed with the clip's own audio; see ``ffmpeg_audio.Soundtrack``); clips
without a sound run exactly the same command lines as before.

Measured on 2 cores, 30 s 1080x1920 clip (bench/transcode.py, quiet machine): lowest rung ready
after 0.17 x the clip's duration; whole job (artwork included) 1.08-1.10 x the hand-written
one-process ladder, CPU 1.09 x. The second decode of the source costs ~11 % CPU; re-encoding the
audio as the hand-written command does would make it ~1.14 x. One process would be ~1.0 x but
finish its lowest rung only at 0.59 x the clip's duration.
"""

from __future__ import annotations

import math
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clipfeed.media.ffmpeg_audio import Soundtrack, audio_codec_args, soundtrack_graph
from clipfeed.media.ladder import (
    RUNG_INIT,
    RUNG_PLAYLIST,
    RUNG_SEGMENT_PATTERN,
    SEGMENT_SECONDS,
    Rung,
    RungStats,
    StoryboardPlan,
    master_playlist_text,
    plan_ladder,
    plan_storyboard,
    rung_stats,
    short_edge_size,
    storyboard_vtt,
    write_master_playlist,
)
from clipfeed.media.probe import ALLOWED_DEMUXERS

__all__ = [
    "FFmpegError", "FFmpegTimeout", "FFmpegOutputTooLarge", "Rung", "RungStats", "TranscodeResult",
    "MediaArtifacts", "Soundtrack", "ffmpeg_executable", "run_ffmpeg", "harden_args", "escape_filter_value",
    "plan_ladder", "transcode_ladder", "single_pass_ladder_args", "audio_passthrough_ok",
    "write_master_playlist", "master_playlist_text", "rung_stats", "generate_demo_clip",
    "POSTER", "PREVIEW", "STORYBOARD", "STORYBOARD_VTT", "SOUND", "MASTER",
]

POSTER = "poster.jpg"
PREVIEW = "preview.webp"
STORYBOARD = "storyboard.jpg"
STORYBOARD_VTT = "storyboard.vtt"
SOUND = "sound.m4a"
MASTER = "master.m3u8"
_LOUDNESS_LOG = ".loudness.txt"

BASE_ARGS = ("-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y")
INPUT_PROTOCOLS = "file,pipe"
CRF = 23
PREVIEW_SECONDS = 3.0
PREVIEW_FPS = 12
PREVIEW_SHORT_EDGE = 320
POSTER_SHORT_EDGE = 720
POSTER_CANDIDATES = 20
POSTER_MIN_LUMA = 28  # mean luma (limited range: black = 16) a poster candidate must exceed


# ------------------------------------------------------------------------------------- errors

class FFmpegError(RuntimeError):
    def __init__(self, message: str, stderr_tail: str = ""):
        self.message = message
        self.stderr_tail = stderr_tail
        tail = stderr_tail.strip().splitlines()[-3:] if stderr_tail else []
        super().__init__(message + (": " + " | ".join(tail) if tail else ""))


class FFmpegTimeout(FFmpegError):
    pass


class FFmpegOutputTooLarge(FFmpegError):
    pass


# ------------------------------------------------------------------------------------- running

def ffmpeg_executable(override: str | None = None) -> str:
    if override:
        return str(override)
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def harden_args(args: Sequence[str], *, extra_demuxers: Sequence[str] = ()) -> list[str]:
    """Insert the protocol and format whitelists before every ``-i``."""
    formats = ",".join((*ALLOWED_DEMUXERS, *extra_demuxers))
    out: list[str] = []
    for arg in args:
        if arg == "-i":
            out += ["-protocol_whitelist", INPUT_PROTOCOLS, "-format_whitelist", formats]
        out.append(str(arg))
    return out


def _file_input(path: Path) -> str:
    # "file:" + absolute path: a name with a ':' can never be taken for another protocol.
    return "file:" + str(Path(path).resolve())


def _dir_size(path: Path) -> int:
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _parse_progress_us(line: str) -> int | None:
    """Microseconds of output written, from a ``-progress`` line (``out_time_us=...``) or from a
    ``-stats_mux_pre`` line (a bare timestamp in seconds); None for anything else."""
    key, sep, value = line.partition("=")
    if not sep:
        try:
            seconds = float(line)
        except ValueError:
            return None
        return int(seconds * 1e6) if math.isfinite(seconds) else None
    if key in ("out_time_us", "out_time_ms"):  # out_time_ms is in microseconds too (historic name)
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _lower_priority(increment: int) -> Callable[[], None]:
    """A pre-exec hook lowering the child's CPU priority. The child leads a new session, and with
    Linux's scheduler autogroups (one group per session) a plain nice value would only rank it
    against itself, so the autogroup's nice value is raised too."""
    value = str(increment).encode()

    def preexec() -> None:  # runs in the child between fork and exec: system calls only
        try:
            fd = os.open("/proc/self/autogroup", os.O_WRONLY)
            try:
                os.write(fd, value)
            finally:
                os.close(fd)
        except OSError:
            pass
        try:
            os.nice(increment)
        except OSError:
            pass

    return preexec


class _Proc:
    """One ffmpeg process in its own process group, with progress read on a helper thread."""

    def __init__(self, cmd: list[str], *, cwd: Path | None, duration_s: float | None, tag: int,
                 events: queue.Queue, nice: int = 0):
        self.cmd = cmd
        self.cwd = cwd
        self.duration_s = duration_s
        self.tag = tag
        self.events = events
        self.nice = nice
        self.popen: subprocess.Popen | None = None
        self._stderr = tempfile.TemporaryFile()
        self.fraction = 0.0
        self.killed_for: str | None = None

    def start(self) -> None:
        preexec = None
        if self.nice:
            preexec = _lower_priority(self.nice)
        self.popen = subprocess.Popen(
            self.cmd, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            start_new_session=True, preexec_fn=preexec, close_fds=True)
        threading.Thread(target=self._read_progress, name="ffmpeg-progress", daemon=True).start()

    def _read_progress(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for raw in self.popen.stdout:
            us = _parse_progress_us(raw.decode("ascii", "replace").strip())
            if us is not None and us >= 0 and self.duration_s:
                self.events.put((self.tag, min(1.0, us / 1e6 / self.duration_s)))
        self.popen.stdout.close()
        self.events.put((self.tag, None))

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def poll(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def kill(self, reason: str) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.killed_for = self.killed_for or reason
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()

    def stderr_tail(self, limit: int = 4000) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - limit))
            return self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        self._stderr.close()


class _Supervisor:
    """Runs ffmpeg processes under one deadline and one output-size cap.

    A monitor thread enforces both (so they hold even while the caller's thread is busy in a
    callback) by killing every process group; ``wait`` pumps progress into the calling thread
    (callbacks never run on helper threads) and raises the recorded failure."""

    POLL_S = 0.2
    MONITOR_S = 0.25
    SIZE_EVERY_S = 0.5

    def __init__(self, *, ffmpeg: str | None, timeout_s: float, output_dir: Path | None,
                 max_output_bytes: int | None, on_fraction: Callable[[int, float], None] | None = None):
        self.exe = ffmpeg_executable(ffmpeg)
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.max_output_bytes = max_output_bytes
        self.on_fraction = on_fraction
        self.events: queue.Queue = queue.Queue()
        self.procs: list[_Proc] = []
        self.failure: FFmpegError | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._monitor: threading.Thread | None = None

    def start(self, args: Sequence[str], *, cwd: Path | None = None, duration_s: float | None = None,
              extra_demuxers: Sequence[str] = (), nice: int = 0, progress_flag: bool = True) -> _Proc:
        """``progress_flag``: add ``-progress pipe:1``. Commands with outputs that only get their
        first frame at the end (a tile sheet, a thumbnail) get no ``-progress`` report before
        every output has started, so those pass False and write ``-stats_mux_pre`` lines instead."""
        if self.failure is not None:
            raise self.failure
        if time.monotonic() >= self.deadline:
            raise FFmpegTimeout(f"ffmpeg time limit of {self.timeout_s:g} s reached before starting")
        cmd = [self.exe, *BASE_ARGS]
        if duration_s and progress_flag:
            cmd += ["-progress", "pipe:1"]
        cmd += harden_args(args, extra_demuxers=extra_demuxers)
        proc = _Proc(cmd, cwd=cwd, duration_s=duration_s, tag=len(self.procs), events=self.events, nice=nice)
        with self._lock:
            self.procs.append(proc)
            try:
                proc.start()
            except OSError as exc:
                raise FFmpegError(f"could not start ffmpeg ({exc})") from exc
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name="ffmpeg-limits", daemon=True)
            self._monitor.start()
        return proc

    def wait(self, proc: _Proc) -> None:
        """Block until ``proc`` exits; raise if it failed or a limit killed the job."""
        try:
            while True:
                self._pump(self.POLL_S)
                if self.failure is not None:
                    raise self.failure
                code = proc.poll()
                if code is not None:
                    self._drain()
                    if self.failure is not None:
                        raise self.failure
                    if code != 0:
                        raise FFmpegError(f"ffmpeg failed with exit code {code}", proc.stderr_tail())
                    return
        except BaseException:
            self.kill_all("aborted")
            raise

    def _watch(self) -> None:
        next_size_check = 0.0
        while not self._closed.wait(self.MONITOR_S):
            with self._lock:
                running = [p for p in self.procs if p.poll() is None]
            if not running:
                continue
            now = time.monotonic()
            if now >= self.deadline:
                self._fail(running, FFmpegTimeout(
                    f"ffmpeg exceeded its time limit of {self.timeout_s:g} s and was killed",
                    running[0].stderr_tail()), "timeout")
                return
            if self.max_output_bytes and self.output_dir is not None and now >= next_size_check:
                next_size_check = now + self.SIZE_EVERY_S
                size = _dir_size(self.output_dir)
                if size > self.max_output_bytes:
                    self._fail(running, FFmpegOutputTooLarge(
                        f"ffmpeg output reached {size} bytes, over the limit of {self.max_output_bytes}; killed"),
                        "output_too_large")
                    return

    def _fail(self, running: list[_Proc], error: FFmpegError, reason: str) -> None:
        self.failure = error
        for p in running:
            p.kill(reason)

    def _pump(self, timeout: float) -> None:
        try:
            item = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        self._handle(item)
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(item)

    def _handle(self, item: tuple[int, float | None]) -> None:
        tag, fraction = item
        if fraction is None:
            return
        proc = self.procs[tag]
        if fraction > proc.fraction:
            proc.fraction = fraction
            if self.on_fraction is not None:
                self.on_fraction(tag, fraction)

    def kill_all(self, reason: str) -> None:
        with self._lock:
            procs = list(self.procs)
        for p in procs:
            p.kill(reason)

    def close(self) -> None:
        self._closed.set()
        self.kill_all("closed")
        if self._monitor is not None:
            self._monitor.join()
        for p in self.procs:
            p.close()


def run_ffmpeg(args: list[str], *, timeout_s: float, output_dir: Path | None = None,
               max_output_bytes: int | None = None, duration_s: float | None = None,
               on_progress: Callable[[float], None] | None = None, ffmpeg: str | None = None,
               cwd: Path | None = None, extra_demuxers: Sequence[str] = ()) -> None:
    """Run one hardened ffmpeg command (``args`` excludes the executable) to completion.

    Raises ``FFmpegTimeout`` / ``FFmpegOutputTooLarge`` (process group killed) or ``FFmpegError``.
    ``extra_demuxers`` widens the input format whitelist (e.g. ``("lavfi",)`` for generated media).
    """
    last = [-1.0]

    def on_fraction(_tag: int, fraction: float) -> None:
        if on_progress is not None and (fraction - last[0] >= 0.01 or (fraction >= 1.0 > last[0])):
            last[0] = fraction
            on_progress(fraction)

    sup = _Supervisor(ffmpeg=ffmpeg, timeout_s=timeout_s, output_dir=output_dir,
                      max_output_bytes=max_output_bytes, on_fraction=on_fraction)
    try:
        proc = sup.start(args, cwd=cwd, duration_s=duration_s if on_progress else None,
                         extra_demuxers=extra_demuxers)
        sup.wait(proc)
    finally:
        sup.close()
    if on_progress is not None and last[0] < 1.0 and duration_s:
        on_progress(1.0)


# ------------------------------------------------------------------------ filter-graph pieces

def escape_filter_value(value: str) -> str:
    """Escape a filter option value for use inside a ``-filter_complex`` description."""
    level1 = "".join("\\" + ch if ch in "\\':" else ch for ch in value)
    return "".join("\\" + ch if ch in "\\'[],;" else ch for ch in level1)


def _x264_args(rung: Rung, preset: str, threads: int = 0) -> list[str]:
    return [
        "-c:v", "libx264", "-preset", preset, "-profile:v", "high", "-pix_fmt", "yuv420p",
        *(["-threads", str(threads)] if threads else []),
        "-crf", str(CRF), "-maxrate", f"{rung.maxrate_kbps}k", "-bufsize", f"{rung.bufsize_kbps}k",
        # An IDR every 2 s exactly, nothing in between: every segment starts on a keyframe and the
        # rungs' segments line up for switching.
        "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_SECONDS})", "-sc_threshold", "0",
        "-flags", "+cgop",
    ]


def audio_passthrough_ok(src: Path) -> bool:
    """Whether the source's first audio track can go into the rungs as it is: AAC-LC, mono or
    stereo, 44.1/48 kHz, at most 192 kb/s (what phones record). Copying it costs no CPU and no
    generation loss; anything else is re-encoded."""
    import av

    from clipfeed.media.probe import SAFE_DEMUXER_OPTIONS

    try:
        with av.open(_file_input(src), options=dict(SAFE_DEMUXER_OPTIONS)) as container:
            if not container.streams.audio:
                return False
            ctx = container.streams.audio[0].codec_context
            return (ctx.name == "aac" and (ctx.profile or "") == "LC" and ctx.sample_rate in (44100, 48000)
                    and ctx.channels in (1, 2) and 0 < (ctx.bit_rate or 0) <= 192_000)
    except Exception:  # noqa: BLE001 - any doubt: re-encode
        return False


def _hls_args(rung: Rung) -> list[str]:
    return [
        "-f", "hls", "-hls_time", str(SEGMENT_SECONDS), "-hls_playlist_type", "vod",
        "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", RUNG_INIT,
        "-hls_segment_filename", f"{rung.name}/{RUNG_SEGMENT_PATTERN}",
        "-hls_flags", "independent_segments",
        f"{rung.name}/{RUNG_PLAYLIST}",
    ]


def _rung_chain(rung: Rung) -> str:
    return f"scale={rung.width}:{rung.height}:flags=bicubic,setsar=1,format=yuv420p"


def _every(seconds: float) -> str:
    return f"select='isnan(prev_selected_t)+gte(t-prev_selected_t,{seconds:.3f})'"


@dataclass
class _Extras:
    poster: bool = False
    preview: bool = False
    storyboard: bool = False
    sound: bool = False
    loudness: bool = False


def _build_pass(src: Path, rungs: list[Rung], *, display: tuple[int, int], duration_s: float, has_audio: bool,
                preset: str, extras: _Extras, storyboard: StoryboardPlan | None, progress: bool = True,
                threads: int = 0, audio_copy: bool = False, soundtrack: Soundtrack | None = None) -> list[str]:
    """One ffmpeg command: decode ``src`` once, ``split`` into the given rungs and extra outputs.
    With a ``soundtrack`` the outputs' audio comes from the filter graph (see ``Soundtrack``)."""
    width, height = display
    branches: list[tuple[str, str]] = [(f"r{i}", _rung_chain(r)) for i, r in enumerate(rungs)]
    if extras.poster:
        pw, ph = short_edge_size(width, height, POSTER_SHORT_EDGE)
        step = max(0.25, duration_s / POSTER_CANDIDATES)
        branches.append(("poster", ",".join([
            _every(step), f"scale={pw}:{ph}:flags=bicubic", "setsar=1", "signalstats",
            f"metadata=mode=select:key=lavfi.signalstats.YAVG:value={POSTER_MIN_LUMA}:function=greater",
            f"thumbnail=n={POSTER_CANDIDATES + 5}"])))
    if extras.preview:
        vw, vh = short_edge_size(width, height, PREVIEW_SHORT_EDGE)
        start = 1.0 if duration_s >= PREVIEW_SECONDS + 2 else 0.0
        branches.append(("preview", ",".join([
            f"trim=start={start:g}:duration={PREVIEW_SECONDS:g}", "setpts=PTS-STARTPTS",
            f"fps={PREVIEW_FPS}", f"scale={vw}:{vh}:flags=bicubic", "setsar=1"])))
    if extras.storyboard and storyboard is not None:
        sb = storyboard
        branches.append(("story", ",".join([
            _every(sb.interval_s), f"scale={sb.tile_width}:{sb.tile_height}:flags=bicubic", "setsar=1",
            f"tile={sb.columns}x{sb.rows}"])))
    graph: list[str] = []
    if len(branches) == 1:
        graph.append(f"[0:v]{branches[0][1]}[{branches[0][0]}]")
    else:
        graph.append("[0:v]split=" + str(len(branches)) + "".join(f"[{n}_in]" for n, _ in branches))
        graph += [f"[{n}_in]{chain}[{n}]" for n, chain in branches]
    audio_in = "[0:a:0]" if has_audio else None
    audio_maps: list[str] = []  # what each audio output maps: rungs first, then sound, then loudness
    if soundtrack is not None:
        consumers = len(rungs) + int(extras.sound) + int(extras.loudness)
        graph += soundtrack_graph(soundtrack, has_audio=has_audio, duration_s=duration_s, outputs=consumers)
        audio_maps = [f"[st{i}]" for i in range(consumers)]
        audio_in = audio_maps.pop() if extras.loudness else None
    elif has_audio:
        audio_maps = ["0:a:0"] * (len(rungs) + int(extras.sound))
    if extras.loudness and audio_in is not None:
        graph.append(f"{audio_in}ebur128=metadata=1,ametadata=mode=print:key=lavfi.r128.I:"
                     f"file={escape_filter_value(_LOUDNESS_LOG)},anullsink")
    args = ["-i", _file_input(src)]
    if soundtrack is not None:
        args += ["-stream_loop", "-1", "-i", _file_input(soundtrack.path)]
    args += ["-filter_complex", ";".join(graph)]
    for i, rung in enumerate(rungs):
        args += ["-map", f"[r{i}]"]
        if audio_maps:
            args += ["-map", audio_maps.pop(0), *audio_codec_args(rung.audio_kbps, audio_copy, soundtrack)]
        if i == 0 and progress:
            # Progress: one line per muxed video packet (its time in seconds) on stdout.
            args += ["-stats_mux_pre:v", "pipe:1", "-stats_mux_pre_fmt:v", "{t}"]
        args += [*_x264_args(rung, preset, threads), *_hls_args(rung)]
    if extras.poster:
        args += ["-map", "[poster]", "-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p",
                 "-frames:v", "1", "-update", "1", "-f", "image2", POSTER]
    if extras.preview:
        args += ["-map", "[preview]", "-c:v", "libwebp_anim", "-lossless", "0", "-q:v", "50",
                 "-compression_level", "1", "-loop", "0", "-f", "webp", PREVIEW]
    if extras.storyboard and storyboard is not None:
        args += ["-map", "[story]", "-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p",
                 "-frames:v", "1", "-update", "1", "-f", "image2", STORYBOARD]
    if extras.sound and audio_maps:
        args += ["-map", audio_maps.pop(0), "-vn", *audio_codec_args(128, audio_copy, soundtrack),
                 "-movflags", "+faststart", "-f", "mp4", SOUND]
    return args


# ---------------------------------------------------------------------------------- transcode

@dataclass
class TranscodeResult:
    """What ``transcode_ladder`` wrote into ``out_dir`` (names relative to it) and measured."""

    rungs: list[Rung]
    master: str = MASTER
    poster: str | None = None
    preview: str | None = None
    storyboard: str | None = None
    storyboard_vtt: str | None = None
    sound: str | None = None
    loudness_lufs: float | None = None
    audio_copied: bool = False  # the source's AAC went into the rungs as it was
    renditions: list[dict] = field(default_factory=list)
    first_rung_ready_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def files(self) -> list[str]:
        names = [self.master, self.poster, self.preview, self.storyboard, self.storyboard_vtt, self.sound]
        return [n for n in names if n]

    @property
    def features(self) -> dict:
        return {"loudness_lufs": self.loudness_lufs, "audio_copied": self.audio_copied,
                "renditions": self.renditions}


MediaArtifacts = TranscodeResult


def _weight(display: tuple[int, int], rungs: list[Rung]) -> float:
    # Relative CPU cost of one pass: decoding the source (about half an encode per pixel at
    # veryfast) plus encoding each rung.
    return 0.5 * display[0] * display[1] + sum(r.pixels for r in rungs)


def _read_loudness(out_dir: Path) -> float | None:
    path = out_dir / _LOUDNESS_LOG
    try:
        value = None
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("lavfi.r128.I="):
                value = float(line.split("=", 1)[1])
        return round(value, 2) if value is not None and value > -69.9 else None
    except (OSError, ValueError):
        return None
    finally:
        path.unlink(missing_ok=True)


def _display_of(rungs: list[Rung]) -> tuple[int, int]:
    top = max(rungs, key=lambda r: r.pixels)
    return top.width, top.height


def transcode_ladder(src: Path, out_dir: Path, rungs: list[Rung], *, has_audio: bool, duration_s: float,
                     preset: str = "veryfast", timeout_s: float, max_output_bytes: int,
                     on_progress: Callable[[float], None] | None = None,
                     on_rung_ready: Callable[[Rung], None] | None = None, ffmpeg: str | None = None,
                     artwork: bool = True, concurrent: bool = True, threads: int = 0,
                     audio_passthrough: bool | None = None, soundtrack: Soundtrack | None = None) -> TranscodeResult:
    """Make the HLS ladder and the artwork into ``out_dir``; the lowest rung is complete (and
    announced through ``on_rung_ready``, master playlist already listing it) long before the others.

    Pass 1 decodes, scales to the lowest rung and encodes it, and picks the poster. Pass 2 decodes
    again and ``split``s into the remaining rungs plus preview, storyboard, sound and loudness.
    With ``concurrent`` (the default) pass 2 starts together with pass 1 at the lowest CPU priority:
    pass 1 runs at nearly full speed while pass 2 soaks up the CPU that pass 1 leaves idle, so the
    lowest rung is ready early and the whole ladder costs little more than one process.
    ``threads``: x264 threads per encoder (0, the default: x264's own choice, 1.5 per CPU).
    ``audio_passthrough``: copy the source's audio into the rungs and ``sound.m4a`` instead of
    re-encoding it (None, the default: when ``audio_passthrough_ok``).
    ``soundtrack``: a reused sound as the audio of every output (see ``Soundtrack``); the rungs
    then always carry audio. ``sound.m4a`` (the clip's own reusable sound) is only made when the
    result contains the clip's own audio: a clip that just replaces its audio with a sound has
    nothing of its own to offer for reuse.
    ``timeout_s`` and ``max_output_bytes`` cover the whole job. Returns what was written.
    """
    started = time.monotonic()
    src, out_dir = Path(src), Path(out_dir)
    if soundtrack is not None:
        audio_passthrough = False
    elif audio_passthrough is None:
        audio_passthrough = has_audio and audio_passthrough_ok(src)
    out_audio = has_audio or soundtrack is not None
    own_sound = has_audio and (soundtrack is None or soundtrack.mixes)
    out_dir.mkdir(parents=True, exist_ok=True)
    rungs = sorted(rungs, key=lambda r: r.pixels)
    if not rungs:
        raise ValueError("no rungs to make")
    _clear_outputs(out_dir, rungs)  # a retried job must not publish a previous attempt's files
    display = _display_of(rungs)
    story = plan_storyboard(*display, duration_s) if artwork else None
    everything = _Extras(poster=artwork, preview=artwork, storyboard=artwork, sound=own_sound, loudness=out_audio)
    if len(rungs) == 1:
        passes = [(rungs, everything)]
    else:
        passes = [(rungs[:1], _Extras(poster=artwork)),
                  (rungs[1:], _Extras(preview=artwork, storyboard=artwork, sound=own_sound, loudness=out_audio))]
    weights = [_weight(display, p[0]) for p in passes]
    total_weight = sum(weights)
    fractions = [0.0] * len(passes)
    reported = [-1.0]

    def report(value: float) -> None:
        if on_progress is not None and value > reported[0] and (value - reported[0] >= 0.01 or value >= 1.0):
            reported[0] = value
            on_progress(min(1.0, value))

    def on_fraction(tag: int, fraction: float) -> None:
        fractions[tag] = fraction
        report(sum(w * f for w, f in zip(weights, fractions)) / total_weight * 0.99)

    result = TranscodeResult(rungs=rungs, audio_copied=bool(has_audio and audio_passthrough))
    ready: list[Rung] = []

    def publish(done: list[Rung]) -> None:
        ready.extend(done)
        write_master_playlist(ready, out_dir / MASTER, has_audio=out_audio)
        if not result.first_rung_ready_s:
            result.first_rung_ready_s = time.monotonic() - started
        if on_rung_ready is not None:
            for rung in done:
                on_rung_ready(rung)

    sup = _Supervisor(ffmpeg=ffmpeg, timeout_s=timeout_s, output_dir=out_dir, max_output_bytes=max_output_bytes,
                      on_fraction=on_fraction)
    try:
        args = [_build_pass(src, r, display=display, duration_s=duration_s, has_audio=has_audio, preset=preset,
                            extras=e, storyboard=story, threads=threads, audio_copy=audio_passthrough,
                            soundtrack=soundtrack)
                for r, e in passes]
        first = sup.start(args[0], cwd=out_dir, duration_s=duration_s, progress_flag=False)
        second = None
        if len(passes) > 1 and concurrent:
            second = sup.start(args[1], cwd=out_dir, duration_s=duration_s, nice=19, progress_flag=False)
        sup.wait(first)
        fractions[0] = 1.0
        if len(passes) > 1 and second is None:
            second = sup.start(args[1], cwd=out_dir, duration_s=duration_s, progress_flag=False)
        if artwork and not (out_dir / POSTER).exists():
            _fallback_poster(sup, src, out_dir, display, duration_s)
        if second is None and story is not None:
            _write_vtt(out_dir, story, duration_s)
        publish(passes[0][0])
        if second is not None:
            sup.wait(second)
            fractions[1] = 1.0
            if story is not None:
                _write_vtt(out_dir, story, duration_s)
            publish(passes[1][0])
    finally:
        sup.close()
    result.loudness_lufs = _read_loudness(out_dir) if out_audio else None
    result.poster = POSTER if (out_dir / POSTER).exists() else None
    result.preview = PREVIEW if (out_dir / PREVIEW).exists() else None
    result.storyboard = STORYBOARD if (out_dir / STORYBOARD).exists() else None
    result.storyboard_vtt = STORYBOARD_VTT if result.storyboard else None
    result.sound = SOUND if (out_dir / SOUND).exists() else None
    for rung in rungs:
        try:
            stats = rung_stats(out_dir / rung.name)
            result.renditions.append({"name": rung.name, "width": rung.width, "height": rung.height,
                                      "bandwidth": stats.bandwidth, "average_bandwidth": stats.average_bandwidth,
                                      "codecs": stats.codecs, "segments": stats.segments})
        except (OSError, ValueError, StopIteration):
            continue
    result.elapsed_s = time.monotonic() - started
    report(1.0)
    return result


def _write_vtt(out_dir: Path, story: StoryboardPlan, duration_s: float) -> None:
    if (out_dir / STORYBOARD).exists():
        (out_dir / STORYBOARD_VTT).write_text(storyboard_vtt(story, duration_s, STORYBOARD))


def _clear_outputs(out_dir: Path, rungs: list[Rung]) -> None:
    for name in (POSTER, PREVIEW, STORYBOARD, STORYBOARD_VTT, SOUND, MASTER, _LOUDNESS_LOG):
        (out_dir / name).unlink(missing_ok=True)
    for rung in rungs:
        rung_dir = out_dir / rung.name
        rung_dir.mkdir(exist_ok=True)
        for path in rung_dir.iterdir():
            if path.is_file() and (path.suffix in (".m4s", ".m3u8", ".tmp") or path.name == RUNG_INIT):
                path.unlink()


def _fallback_poster(sup: _Supervisor, src: Path, out_dir: Path, display: tuple[int, int],
                     duration_s: float) -> None:
    """Every sampled frame was (near) black: take the middle frame rather than no poster."""
    pw, ph = short_edge_size(*display, POSTER_SHORT_EDGE)
    args = ["-ss", f"{max(0.0, duration_s / 2):.3f}", "-i", _file_input(src), "-map", "0:v:0",
            "-vf", f"scale={pw}:{ph},setsar=1", "-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p",
            "-frames:v", "1", "-update", "1", "-f", "image2", POSTER]
    sup.wait(sup.start(args, cwd=out_dir))


# --------------------------------------------------------------------------- reference commands

def single_pass_ladder_args(src: Path, rungs: list[Rung], *, has_audio: bool, preset: str = "veryfast",
                            threads: int = 0) -> list[str]:
    """The plain one-process ladder (decode once, split into every rung, no artwork): for
    comparisons. Run it with ``run_ffmpeg(..., cwd=out_dir)`` after creating the rung folders."""
    rungs = sorted(rungs, key=lambda r: r.pixels)
    return _build_pass(src, rungs, display=_display_of(rungs), duration_s=0.0, has_audio=has_audio,
                       preset=preset, extras=_Extras(), storyboard=None, progress=False, threads=threads)


# The demo-clip generator lives in its own module; re-exported here for existing callers.
from clipfeed.media.ffmpeg_demo import DEMO_PATTERNS, generate_demo_clip  # noqa: E402
