"""Content features: what they cost the processing job, and whether alike clips end up near.

Cost: a 1080x1920 30 fps clip with audio (default 30 s) goes through `transcode_ladder` (the
job's ladder, the baseline measured in the same run), then the pipeline's extra step: the lowest
rung joined into one file (`pipeline.join_rung`) and `extract_content_features` on it. Reported:
both wall and CPU times and the step's share of the ladder's.

Retrieval: clips of 7 visual patterns x 3 tones (`generate_demo_clip`), two variants of each
(another hue shift, a tone 6 % apart, another caption overlay), 270x480, `--clip-seconds` long;
their vectors standardised over the set as the content index does (`served_index` with no text),
and for every clip its `--k` nearest others by cosine: the share that show the same pattern,
carry the same tone, both; beside it the share a random pick gets (the baseline, from the set's
own make-up) and the ratio.

Run: ``python bench/content_features.py [--seconds 30] [--clip-seconds 4] [--k 5]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from clipfeed.feed.recsys.content import served_index  # noqa: E402
from clipfeed.media.content_features import FEATURE_NAMES, extract_content_features  # noqa: E402
from clipfeed.media.ffmpeg import generate_demo_clip, plan_ladder, transcode_ladder  # noqa: E402
from clipfeed.media.ffmpeg_demo import DEMO_PATTERNS  # noqa: E402
from clipfeed.media.pipeline import join_rung  # noqa: E402
from clipfeed.media.probe import probe_media  # noqa: E402

TONES = (220.0, 880.0, 3520.0)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn):
    wall, cpu = time.perf_counter(), children_cpu() + time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, children_cpu() + time.process_time() - cpu


def cost(work: Path, seconds: float) -> dict:
    src = generate_demo_clip(work / "src.mp4", width=1080, height=1920, seconds=seconds, pattern="testsrc2",
                             text="bench")
    probe = probe_media(src, max_bytes=1 << 31, min_duration_s=0.5, max_duration_s=600, max_dimension=4096,
                        max_fps=120)
    rungs = plan_ladder(probe.display_width, probe.display_height)
    out = work / "ladder"
    _, ladder_wall, ladder_cpu = timed(lambda: transcode_ladder(
        src, out, rungs, has_audio=probe.has_audio, duration_s=probe.duration_s, timeout_s=1800,
        max_output_bytes=1 << 31))

    def step():
        clip = join_rung(out / rungs[0].name, out / "content_input.mp4")
        return extract_content_features(clip, out, duration_s=probe.duration_s, has_audio=probe.has_audio,
                                        timeout_s=600)

    _, step_wall, step_cpu = timed(step)
    return {"seconds": seconds, "rung": rungs[0].name, "ladder": (ladder_wall, ladder_cpu), "step": (step_wall, step_cpu)}


def retrieval(work: Path, clip_seconds: float, k: int) -> dict:
    labels, vectors, wall = [], [], 0.0
    for p, pattern in enumerate(DEMO_PATTERNS):
        for t, tone in enumerate(TONES):
            for variant in range(2):
                path = generate_demo_clip(work / f"{pattern}-{t}-{variant}.mp4", width=270, height=480,
                                          seconds=clip_seconds, pattern=pattern, hue=25 * variant,
                                          tone_hz=tone * (1.06 if variant else 1.0), text=f"clip {p}{t}{variant}")
                started = time.perf_counter()
                features = extract_content_features(path, work, duration_s=clip_seconds, has_audio=True,
                                                    timeout_s=120)
                wall += time.perf_counter() - started
                labels.append((pattern, t))
                vectors.append(features.vector())
                path.unlink()
    ids = [str(i) for i in range(len(labels))]
    index = served_index(ids, [""] * len(ids), [()] * len(ids), np.array(vectors, dtype=np.float32))
    unit = index.vectors
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    hits = {"pattern": [], "tone": [], "both": []}
    chance = {"pattern": [], "tone": [], "both": []}
    for i, (pattern, tone) in enumerate(labels):
        nearest = np.argsort(-similarity[i])[:k]
        others = [labels[j] for j in range(len(labels)) if j != i]
        for name, same in (("pattern", lambda lab: lab[0] == pattern), ("tone", lambda lab: lab[1] == tone),
                           ("both", lambda lab: lab == (pattern, tone))):
            hits[name].append(np.mean([same(labels[j]) for j in nearest]))
            chance[name].append(np.mean([same(lab) for lab in others]))
    return {"clips": len(labels), "seconds_per_clip": wall / len(labels), "clip_seconds": clip_seconds,
            "precision": {n: float(np.mean(v)) for n, v in hits.items()},
            "chance": {n: float(np.mean(v)) for n, v in chance.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the 1080x1920 clip for the cost part")
    parser.add_argument("--clip-seconds", type=float, default=4.0, help="length of each retrieval clip")
    parser.add_argument("--k", type=int, default=5, help="neighbours per clip")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clipfeed-bench-content-") as tmp:
        work = Path(tmp)
        spent = cost(work, args.seconds)
        found = retrieval(work, args.clip_seconds, args.k)

    table = Table(title=f"content features ({len(FEATURE_NAMES)} per video)")
    for column in ("measure", "result", "baseline (same run)", "ratio"):
        table.add_column(column)
    (lw, lc), (sw, sc) = spent["ladder"], spent["step"]
    table.add_row(f"features step on the {spent['rung']} rung of a {spent['seconds']:.0f} s 1080x1920 clip, wall",
                  f"{sw:.2f} s ({spent['seconds'] / sw:.1f}x realtime)", f"ladder {lw:.2f} s", f"{sw / lw:.3f}")
    table.add_row("… CPU", f"{sc:.2f} s", f"ladder {lc:.2f} s", f"{sc / lc:.3f}")
    table.add_row(f"extraction per {found['clip_seconds']:.0f} s 270x480 clip, wall", f"{found['seconds_per_clip']:.3f} s",
                  "", "")
    for name, what in (("pattern", "same visual pattern"), ("tone", "same tone"), ("both", "same pattern and tone")):
        p, c = found["precision"][name], found["chance"][name]
        table.add_row(f"{args.k} nearest of {found['clips']} clips: {what}", f"{p:.3f}", f"random {c:.3f}", f"{p / c:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
