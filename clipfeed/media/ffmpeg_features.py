"""The content-feature sampling command (``clipfeed.media.content_features``): one decode of the
source written as small raw streams for numpy and OpenCV to describe. A pure argument builder;
the command runs through ``clipfeed.media.ffmpeg.run_ffmpeg`` like every other ffmpeg process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipfeed.media.ffmpeg import _file_input

# Deblocking is invisible at these sizes and skipping it saves ~17 % of an H.264 decode.
_FAST_DECODE = ("-skip_loop_filter", "all")


@dataclass(frozen=True)
class Sampling:
    """What to write: ``frame_rate`` RGB frames a second squashed to ``frame_size`` square;
    ``face_rate`` greyscale frames a second whose shorter side is ``face_short_side`` (aspect
    kept: face detectors need faces in their true proportions; the longer side at most four
    times that, whatever the source's shape), one PGM file each; mono 16-bit PCM at
    ``audio_rate`` when the source has audio."""

    frame_rate: float
    frame_size: int
    face_rate: float
    face_short_side: int
    audio_rate: int


def sampling_args(src: Path, sampling: Sampling, *, span_s: float, threads: int, frames_out: Path,
                  faces_pattern: Path, audio_out: Path | None) -> list[str]:
    """ffmpeg arguments decoding the first ``span_s`` seconds of ``src`` once into ``frames_out``
    (raw rgb24), ``faces_pattern`` (a ``%04d`` file pattern of PGM images) and, when given,
    ``audio_out`` (raw s16le). Rotation metadata is ignored: the pipeline measures its own,
    already upright rung, and the colour/motion features do not depend on orientation."""
    s = sampling
    # Frames are sampled before scaling so the scalers only see the few frames a second they keep.
    colour_filter = f"fps={s.frame_rate:g}:eof_action=pass,scale={s.frame_size}:{s.frame_size}:flags=area"
    short, long = s.face_short_side, 4 * s.face_short_side
    face_filter = (f"fps={s.face_rate:.6g}:eof_action=pass,scale=w='if(lte(iw,ih),{short},{long})'"
                   f":h='if(lte(iw,ih),{long},{short})':force_original_aspect_ratio=decrease:flags=area,format=gray")
    args = ["-threads", str(max(1, threads)), *_FAST_DECODE, "-noautorotate", "-t", f"{span_s:.3f}",
            "-i", _file_input(src), "-filter_threads", "1",
            "-map", "0:v:0", "-filter:v", colour_filter, "-pix_fmt", "rgb24", "-f", "rawvideo", _file_input(frames_out),
            "-map", "0:v:0", "-filter:v", face_filter, "-c:v", "pgm", "-f", "image2", _file_input(faces_pattern)]
    if audio_out is not None:
        args += ["-map", "0:a:0", "-ac", "1", "-ar", str(s.audio_rate), "-c:a", "pcm_s16le", "-f", "s16le",
                 _file_input(audio_out)]
    return args
