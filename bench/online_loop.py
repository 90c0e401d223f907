"""Online loop benchmark: does the whole system — events, feature store, sources, ranker and the
training job — raise what simulated viewers watch, and does a trained model help or hurt?

    python bench/online_loop.py [--viewers 24] [--organic 300] [--videos 1500] [--rounds 6]
                                [--train-after 2 4] [--seed 11] [--arms trending heuristic trained trained_future]
                                                                     (clipfeed bench online_loop)

A platform from the simulator (`clipfeed/feed/recsys/online.py`: creators, videos with topics,
hashtags and sounds, the organic history of `--organic` other users) is written into a fresh
embedded deployment, served by a real `clipfeed serve` over HTTP, once per arm:

- `trending`: the viewers watch the Trending feed and report nothing (the baseline, measured in
  the same run with the same viewers and random numbers);
- `heuristic`: For You as a new deployment serves it: no trained model (the heuristic ranker, no
  collaborative source), learning from the viewers' events through the feature store;
- `trained`: the same, and after the rounds named by `--train-after` the real `clipfeed train`
  runs on the deployment's event log (ALS + LightGBM ranker, each promoted only if it passes the
  registry's gate); the next round starts once the server serves what was promoted
  (`?explain=1` names the served versions);
- `trained_future` (not run unless named in `--arms`): the same with the ranker's old default
  labels, `CLIPFEED_FEED_RANKER_LABELS=future` (README, "What the ranker learns").

Each round is one session per viewer (2 pages of 10); every view, like and follow is reported
through the API as a client would, and the behaviour model (`simulator.respond`) decides them.
The table gives, by round and arm, the mean simulated watch time per session and (after the
slash) what the served items were worth on average (`simulator.expected_watch_ms`: the same
feeds without the noise of the viewers' dice), each arm's expected watch against Trending's;
below it, what each training run published.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import ROOT, ServerProcess, print_table  # noqa: E402
from clipfeed.config import Settings  # noqa: E402
from clipfeed.db import Database  # noqa: E402
from clipfeed.db.migrate import upgrade  # noqa: E402
from clipfeed.feed import trending  # noqa: E402
from clipfeed.feed.recsys.online import SeededPlatform, seed_platform, watch_session  # noqa: E402
from clipfeed.feed.recsys.simulator import SimConfig, simulate_platform  # noqa: E402

ARMS = ("trending", "heuristic", "trained", "trained_future")
# What each training arm's `clipfeed train` is told about the ranker's labels (the default: outcome).
TRAINING_ENV = {"trained": {}, "trained_future": {"CLIPFEED_FEED_RANKER_LABELS": "future"}}
# The viewers act faster than people: rate limits that would stop a person's client stop them.
ENV = {"CLIPFEED_LIKES_PER_MINUTE": "100000", "CLIPFEED_FOLLOWS_PER_MINUTE": "100000",
       "CLIPFEED_SECRET_KEY": "bench-online-loop"}


def deployment(data_dir: Path) -> Settings:
    os.environ.update(ENV)
    return Settings(data_dir=data_dir)


def seed(settings: Settings, platform, viewers: int, organic: int) -> SeededPlatform:
    async def work():
        db = Database(settings, pooled=False)
        try:
            async with db.transaction() as session:
                return await seed_platform(session, settings, platform, live_users=viewers, organic_users=organic,
                                           organic_accounts=True)
        finally:
            await db.dispose()

    return asyncio.run(work())


def train(data_dir: Path, extra_env: dict[str, str]) -> tuple[str, float]:
    """`clipfeed train` on the deployment, as an operator (or the periodic job) runs it."""
    started = time.perf_counter()
    env = {**os.environ, **ENV, "CLIPFEED_DATA_DIR": str(data_dir), "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "250",
           **extra_env}
    done = subprocess.run([sys.executable, "-m", "clipfeed.cli", "train"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise RuntimeError(f"clipfeed train failed ({done.returncode}):\n{output}")
    return output, time.perf_counter() - started


def served_versions(client: httpx.Client, seeded: SeededPlatform) -> dict:
    response = client.get("/api/v1/feed/for-you", params={"limit": 1, "explain": 1},
                          headers={"Authorization": f"Bearer {seeded.tokens[0]}"})
    response.raise_for_status()
    return response.json()["models"]


def wait_for_versions(client: httpx.Client, seeded: SeededPlatform, data_dir: Path, timeout_s: float = 60) -> dict:
    """Until the server serves the registry's current versions (it re-reads the index every 10 s)."""
    settings = deployment(data_dir)
    from clipfeed.feed.recsys.registry import ModelRegistry
    from clipfeed.storage import build_store

    registry = ModelRegistry(build_store(settings), prefix=settings.feed_model_prefix, refresh_s=0)
    wanted = {kind: asyncio.run(registry.current_version(kind)) for kind in ("ranker", "collab")}
    deadline = time.monotonic() + timeout_s
    while (served := served_versions(client, seeded)) != wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server serves {served}, the registry holds {wanted}")
        time.sleep(0.5)
    return served


def run_arm(arm: str, args, platform) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"online-{arm}-"))
    data_dir = tmp / "data"
    settings = deployment(data_dir)
    upgrade(settings)
    seeded = seed(settings, platform, args.viewers, args.organic)
    trending.recompute(settings)
    index = seeded.index
    server = ServerProcess(data_dir, workers=False, extra_env=ENV)
    per_round = np.zeros((args.rounds, args.viewers))
    expected = np.zeros((args.rounds, args.viewers))
    trainings, modes = [], {}
    rngs = [np.random.default_rng(args.seed * 1000 + u) for u in range(args.viewers)]
    started = time.perf_counter()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for round_no in range(args.rounds):
                for u in range(args.viewers):
                    session = watch_session(client, platform, seeded, u, rngs[u],
                                            trending_only=arm == "trending", index=index)
                    per_round[round_no, u], expected[round_no, u] = session.watched_s, session.expected_s
                    for mode in session.modes:
                        modes[mode] = modes.get(mode, 0) + 1
                if arm in TRAINING_ENV and round_no + 1 in args.train_after:
                    output, seconds = train(data_dir, TRAINING_ENV[arm])
                    versions = wait_for_versions(client, seeded, data_dir)
                    trainings.append({"after_round": round_no + 1, "seconds": seconds, "output": output,
                                      "served": versions})
                    print(f"[trained after round {round_no + 1} in {seconds:.1f} s]\n{output}\nserved: {versions}",
                          flush=True)
    finally:
        server.stop()
    means, expected_means = per_round.mean(axis=1), expected.mean(axis=1)
    print(f"{arm}: watch time per session by round {np.round(means, 1).tolist()}, expected "
          f"{np.round(expected_means, 1).tolist()} ({time.perf_counter() - started:.0f} s; modes {modes})", flush=True)
    return {"means": means, "expected": expected_means, "trainings": trainings, "modes": modes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=24)
    parser.add_argument("--organic", type=int, default=300, help="simulated users whose history is the log")
    parser.add_argument("--videos", type=int, default=1500)
    parser.add_argument("--creators", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--train-after", type=int, nargs="*", default=[2, 4], help="rounds after which to train")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--arms", nargs="*", default=["trending", "heuristic", "trained"], choices=ARMS,
                        help="trained_future: trained with CLIPFEED_FEED_RANKER_LABELS=future (the old default)")
    parser.add_argument("--seconds", type=int, default=0, help="ignored (shared CLI flag)")
    args = parser.parse_args()

    platform = simulate_platform(SimConfig(seed=args.seed, users=args.viewers + args.organic, videos=args.videos,
                                           creators=args.creators, topics=12, sounds=60))
    results = {arm: run_arm(arm, args, platform) for arm in args.arms}

    base = results.get("trending")

    def cell(arm: str, rows: slice | int) -> str:
        watched, worth = (float(np.mean(results[arm][key][rows])) for key in ("means", "expected"))
        ratio = ""
        if base is not None and arm != "trending":
            ratio = f" ({worth / float(np.mean(base['expected'][rows])):.2f}x trending)"
        return f"{watched:.1f} / {worth:.1f}{ratio}"

    headers = ["round"] + [f"{arm}: watched / expected s" for arm in results]
    rows = []
    for round_no in range(args.rounds):
        trained_now = round_no + 1 in args.train_after and any(arm in TRAINING_ENV for arm in results)
        rows.append([f"{round_no + 1}" + (" (then trained)" if trained_now else "")]
                    + [cell(arm, round_no) for arm in results])
    late = slice(args.rounds // 2, None)
    rows.append(["later half, mean"] + [cell(arm, late) for arm in results])
    print_table(f"bench/online_loop: {args.viewers} viewers, {args.organic} organic users, {args.videos} videos, "
                f"seed {args.seed} (embedded deployment, real HTTP)", headers, rows)
    for arm, training in ((arm, t) for arm in TRAINING_ENV for t in results.get(arm, {}).get("trainings", [])):
        print(f"{arm}: training after round {training['after_round']}: {training['seconds']:.1f} s; "
              f"served {training['served']}")
        for line in training["output"].splitlines():
            if line.startswith(("collab ", "ranker ")):
                print("  " + line)


if __name__ == "__main__":
    main()
