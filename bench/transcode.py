"""3-rung ladder transcode: clipfeed's ``transcode_ladder`` against a hand-written one-process command.

Generates a 1080x1920 30 fps clip with audio (default 30 s), then in the same run times

* baseline: one hand-written ffmpeg command that decodes once and ``split``s into the same three
  HLS rungs (same encoder settings: libx264 veryfast, CRF 23 + maxrate/bufsize, 2 s keyframes,
  AAC, CMAF fMP4 segments of 2 s);
* clipfeed: ``transcode_ladder`` (the whole job: rungs, poster, preview, storyboard, sound,
  loudness) and the time until ``on_rung_ready`` announces the lowest rung. The clip's audio is
  AAC-LC 128 kb/s, which clipfeed copies into the rungs instead of re-encoding it;
* with ``--variants``: pass 2 after pass 1 instead of alongside it, no artwork, audio re-encoded.

Wall time is what the budget is about; the CPU column (children's user+sys) is steadier when other
work shares the machine.

Goals (ARCHITECTURE.md): whole ladder <= 1.10 x baseline; lowest rung ready <= 0.35 x clip duration.
Run: ``python bench/transcode.py [--seconds 30] [--repeat 1]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from clipfeed.media.ffmpeg import (  # noqa: E402
    ffmpeg_executable,
    generate_demo_clip,
    plan_ladder,
    transcode_ladder,
)
from clipfeed.media.probe import probe_media  # noqa: E402


def handwritten_ladder(src: Path, out: Path) -> list[str]:
    """What an engineer would type: one decode, split=3, three HLS outputs."""
    for name in ("1080p", "720p", "480p"):
        (out / name).mkdir(parents=True, exist_ok=True)
    common = ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p", "-crf", "23",
              "-force_key_frames", "expr:gte(t,n_forced*2)", "-sc_threshold", "0",
              "-c:a", "aac", "-b:a", "128k",
              "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
              "-hls_fmp4_init_filename", "init.mp4"]
    return [
        ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
        "-filter_complex",
        "[0:v]split=3[a][b][c];[a]scale=1080:1920,setsar=1[v0];[b]scale=720:1280,setsar=1[v1];"
        "[c]scale=480:854,setsar=1[v2]",
        "-map", "[v0]", "-map", "0:a", *common, "-maxrate", "6000k", "-bufsize", "12000k",
        "-hls_segment_filename", "1080p/seg_%05d.m4s", "1080p/playlist.m3u8",
        "-map", "[v1]", "-map", "0:a", *common, "-maxrate", "3500k", "-bufsize", "7000k",
        "-hls_segment_filename", "720p/seg_%05d.m4s", "720p/playlist.m3u8",
        "-map", "[v2]", "-map", "0:a", *common, "-maxrate", "1500k", "-bufsize", "3000k",
        "-hls_segment_filename", "480p/seg_%05d.m4s", "480p/playlist.m3u8",
    ]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_baseline(src: Path, out: Path) -> tuple[float, None, float]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = handwritten_ladder(src, out)
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(cmd, cwd=out, check=True)
    return time.perf_counter() - t0, None, _children_cpu() - cpu0


def run_clipfeed(src: Path, out: Path, probe, **kwargs) -> tuple[float, float, float]:
    shutil.rmtree(out, ignore_errors=True)
    rungs = plan_ladder(probe.display_width, probe.display_height)
    ready: dict[str, float] = {}
    cpu0, t0 = _children_cpu(), time.perf_counter()
    transcode_ladder(src, out, rungs, has_audio=probe.has_audio, duration_s=probe.duration_s, timeout_s=3600,
                     max_output_bytes=8 * 2**30, on_rung_ready=lambda r: ready.setdefault(r.name, time.perf_counter()),
                     **kwargs)
    total = time.perf_counter() - t0
    return total, ready[rungs[0].name] - t0, _children_cpu() - cpu0


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        return
    table = Table(title=title)
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    Console(width=170).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant (median reported)")
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--variants", action="store_true",
                        help="also time design alternatives (sequential passes, no artwork, audio re-encoded)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="clipfeed-bench-") as tmp:
        tmp = Path(tmp)
        src = tmp / "clip.mp4"
        t0 = time.perf_counter()
        generate_demo_clip(src, width=1080, height=1920, seconds=args.seconds, fps=30, pattern="testsrc2",
                           hue=0, tone_hz=440, text="bench")
        print(f"generated {args.seconds:g} s 1080x1920 clip ({src.stat().st_size / 1e6:.1f} MB) "
              f"in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPUs")
        probe = probe_media(src, max_bytes=2**31, min_duration_s=0.5, max_duration_s=3600, max_dimension=4096,
                            max_fps=240)
        duration = probe.duration_s
        variants: dict[str, list[tuple[float, float | None, float]]] = {"handwritten": []}
        plans: dict[str, dict] = {"clipfeed": dict(preset=args.preset)}
        if args.variants:
            plans["clipfeed, pass 2 after pass 1"] = dict(preset=args.preset, concurrent=False)
            plans["clipfeed, no artwork"] = dict(preset=args.preset, artwork=False)
            plans["clipfeed, audio re-encoded (no passthrough)"] = dict(preset=args.preset, audio_passthrough=False)
        for name in plans:
            variants[name] = []
        for _ in range(args.repeat):  # interleaved so drift and neighbours hit every variant alike
            variants["handwritten"].append(run_baseline(src, tmp / "baseline"))
            for name, kwargs in plans.items():
                variants[name].append(run_clipfeed(src, tmp / "clipfeed", probe, **kwargs))

    base = statistics.median(t for t, _, _ in variants["handwritten"])
    base_cpu = statistics.median(c for _, _, c in variants["handwritten"])
    rows = []
    for name, runs in variants.items():
        total = statistics.median(t for t, _, _ in runs)
        cpu = statistics.median(c for _, _, c in runs)
        firsts = [f for _, f, _ in runs if f is not None]
        first = statistics.median(firsts) if firsts else total  # the baseline's rungs all land at the end
        rows.append([
            name, f"{total:.2f}", f"{duration / total:.2f}x", f"{total / base:.3f}",
            f"{first:.2f} s = {first / duration:.3f}", f"{cpu:.1f} ({cpu / base_cpu:.3f})",
            " ".join(f"{t:.1f}" for t, _, _ in runs),
        ])
    print_table(f"3-rung ladder, {duration:g} s 1080x1920 30 fps, median of {args.repeat} (interleaved runs)",
                ["variant", "wall s", "realtime", "/ handwritten (goal <= 1.10)",
                 "lowest rung ready, x clip (goal <= 0.35)", "CPU s (ratio)", "runs wall s"], rows)


if __name__ == "__main__":
    main()
