"""tus upload throughput over loopback (8 MB chunks) vs copying the same file on the same disk,
and the server's peak RSS growth during a large upload (goal: flat, i.e. constant memory)."""

from __future__ import annotations

import argparse
import shutil
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
    import os

    with open(path, "wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(1024 * 1024))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=30, help="ignored (shared CLI flag)")
    args = parser.parse_args()
    from tusclient import client as tus_client

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "upload.bin"
        make_file(source, args.mb)
        started = time.perf_counter()
        shutil.copyfile(source, tmp / "copy.bin")
        copy_s = time.perf_counter() - started
        (tmp / "copy.bin").unlink()

        server = ServerProcess(tmp / "data", workers=False,
                               extra_env={"CLIPFEED_MAX_UPLOAD_BYTES": str((args.mb + 1) * 1024 * 1024)})
        try:
            token = register(server.url, "benchuploader")
            proc = psutil.Process(server.proc.pid)
            baseline_rss = proc.memory_info().rss
            peak = [baseline_rss]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], proc.memory_info().rss)
                    done.wait(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            uploader = tus_client.TusClient(f"{server.url}/api/v1/uploads",
                                            headers={"Authorization": f"Bearer {token}"}).uploader(
                str(source), chunk_size=CHUNK, metadata={"filename": "bench.bin"})
            started = time.perf_counter()
            uploader.upload()
            tus_s = time.perf_counter() - started
            done.set()
            sampler.join()
        finally:
            server.stop()

    size_mb = args.mb
    copy_rate, tus_rate = size_mb / copy_s, size_mb / tus_s
    growth_mb = (peak[0] - baseline_rss) / 1024 / 1024
    print_table(f"upload: {size_mb} MB over loopback, 8 MB tus chunks", ["measure", "value", "goal"], [
        ["disk copy (baseline)", f"{copy_rate:.0f} MB/s", ""],
        ["tus upload", f"{tus_rate:.0f} MB/s", ""],
        ["ratio tus / copy", f"{tus_rate / copy_rate:.2f}", ">= 0.50"],
        ["server RSS before", f"{baseline_rss / 1024 / 1024:.0f} MB", ""],
        ["server RSS peak growth", f"{growth_mb:.1f} MB", "flat (<< file size)"],
    ])


if __name__ == "__main__":
    main()
