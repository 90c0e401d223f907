"""Audio pieces of the ladder's ffmpeg command: encoder arguments and the soundtrack graph that
puts a reused sound under (or instead of) a clip's own audio. Pure string builders; the
command lines themselves are assembled and run by ``clipfeed.media.ffmpeg``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AUDIO_FILTER = "aformat=channel_layouts=stereo|mono"


def aac_args(kbps: int, passthrough: bool = False) -> list[str]:
    if passthrough:
        return ["-c:a", "copy"]
    return ["-c:a", "aac", "-b:a", f"{kbps}k", "-filter:a", AUDIO_FILTER]


@dataclass(frozen=True)
class Soundtrack:
    """A reused sound as the clip's audio (an upload naming ``sound_id``).

    The sound is looped (demuxer-level ``-stream_loop``, so memory stays constant whatever its
    length) and trimmed to the clip's duration. ``original_level`` is the level of the clip's own
    audio under it, 0..1: 0 replaces the original audio, 1 mixes both equally; a clip without an
    audio stream simply gets the sound. Both are mixed with normalized weights, so the sum never
    clips."""

    path: Path
    original_level: float = 0.0

    @property
    def mixes(self) -> bool:
        return self.original_level > 0


def soundtrack_graph(soundtrack: Soundtrack, *, has_audio: bool, duration_s: float, outputs: int) -> list[str]:
    """Filter-graph parts turning input 1 (the sound) and, when mixed, ``0:a:0`` into ``outputs``
    identical stereo 48 kHz streams labelled ``[st0]``, ``[st1]``, ..."""
    fmt = "aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo"
    parts = [f"[1:a:0]atrim=duration={duration_s:.3f},asetpts=PTS-STARTPTS,{fmt}[snd]"]
    level = max(0.0, min(1.0, soundtrack.original_level))
    mixed = "snd"
    if has_audio and level > 0:
        # duration=first: the (trimmed) sound decides the length, even when the original is shorter.
        parts.append(f"[0:a:0]{fmt}[orig]")
        parts.append(f"[snd][orig]amix=inputs=2:duration=first:dropout_transition=0:weights=1 {level:.3f}"
                     f":normalize=1[mix]")
        mixed = "mix"
    if outputs == 1:
        parts.append(f"[{mixed}]anull[st0]")
    else:
        parts.append(f"[{mixed}]asplit={outputs}" + "".join(f"[st{i}]" for i in range(outputs)))
    return parts


def audio_codec_args(kbps: int, audio_copy: bool, soundtrack: Soundtrack | None) -> list[str]:
    if soundtrack is not None:  # formatted inside the graph: no per-output filter allowed
        return ["-c:a", "aac", "-b:a", f"{kbps}k"]
    return aac_args(kbps, audio_copy)
