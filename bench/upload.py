"""tus upload throughput over loopback (8 MB chunks) vs copying the same file on the same disk,
and the server's peak RSS growth during a large upload (goal: flat, i.e. constant memory).

Two baselines: the plain copy the goal is written against (it may end in the page cache, never
on the disk), and the same copy made durable (fsync), which is what a tus server must do before
it acknowledges an offset. Each figure is the median of --repeat runs (the machine is shared)."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import ServerProcess, print_table, register  # noqa: E402

CHUNK = 8 * 1024 * 1024


def make_file(path: Path, megabytes: int) -> None:
    with open(path, "wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(1024 * 1024))


def timed_copy(source: Path, target: Path, *, durable: bool) -> float:
    started = time.perf_counter()
    shutil.copyfile(source, target)
    if durable:
        with open(target, "rb") as handle:
            os.fsync(handle.fileno())
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=30, help="ignored (shared CLI flag)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--profile", metavar="FILE", help="run the server under cProfile, stats to FILE")
    args = parser.parse_args()
    from tusclient import client as tus_client

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "upload.bin"
        make_file(source, args.mb)
        copy_times, durable_times, tus_times = [], [], []
        for _ in range(args.repeat):
            copy_times.append(timed_copy(source, tmp / "copy.bin", durable=False))
            durable_times.append(timed_copy(source, tmp / "copy.bin", durable=True))

        server = ServerProcess(tmp / "data", workers=False,
                               extra_env={"CLIPFEED_MAX_UPLOAD_BYTES": str((args.mb + 1) * 1024 * 1024)},
                               profile_to=args.profile)
        try:
            token = register(server.url, "benchuploader")
            proc = psutil.Process(server.proc.pid)
            baseline_rss = proc.memory_info().rss
            cpu_before = sum(proc.cpu_times()[:2])
            peak = [baseline_rss]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], proc.memory_info().rss)
                    done.wait(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            for _ in range(args.repeat):
                uploader = tus_client.TusClient(f"{server.url}/api/v1/uploads",
                                                headers={"Authorization": f"Bearer {token}"}).uploader(
                    str(source), chunk_size=CHUNK, metadata={"filename": "bench.bin"})
                started = time.perf_counter()
                uploader.upload()
                tus_times.append(time.perf_counter() - started)
            done.set()
            sampler.join()
            # CPU seconds the server spent per upload: what the machine's load cannot inflate.
            server_cpu_s = (sum(proc.cpu_times()[:2]) - cpu_before) / args.repeat
        finally:
            server.stop()

    copy_s, durable_s, tus_s = (statistics.median(x) for x in (copy_times, durable_times, tus_times))
    size_mb = args.mb
    copy_rate, durable_rate, tus_rate = size_mb / copy_s, size_mb / durable_s, size_mb / tus_s
    growth_mb = (peak[0] - baseline_rss) / 1024 / 1024
    print_table(f"upload: {size_mb} MB over loopback, 8 MB tus chunks", ["measure", "value", "goal"], [
        ["disk copy (baseline)", f"{copy_rate:.0f} MB/s", ""],
        ["durable disk copy (copy + fsync)", f"{durable_rate:.0f} MB/s", ""],
        ["tus upload (fsync before each offset is acknowledged)", f"{tus_rate:.0f} MB/s", ""],
        ["ratio tus / copy", f"{tus_rate / copy_rate:.2f}", ">= 0.50"],
        ["ratio tus / durable copy", f"{tus_rate / durable_rate:.2f}", ""],
        ["server CPU per upload (user + system)", f"{server_cpu_s:.2f} s ({size_mb / server_cpu_s:.0f} MB per CPU-s)", ""],
        ["server RSS before", f"{baseline_rss / 1024 / 1024:.0f} MB", ""],
        ["server RSS peak growth", f"{growth_mb:.1f} MB", "flat (<< file size)"],
    ])


if __name__ == "__main__":
    main()
