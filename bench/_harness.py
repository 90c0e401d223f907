"""Shared bench plumbing: a clipfeed server in a subprocess and a table printer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, data_dir: Path, *, workers: bool, extra_env: dict | None = None,
                 profile_to: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "CLIPFEED_DATA_DIR": str(data_dir), "CLIPFEED_PORT": str(self.port),
               "CLIPFEED_HOST": "127.0.0.1",
               "CLIPFEED_RTMP_PORT": "0",  # serve starts the RTMP ingest too: never clash on 1935
               **(extra_env or {})}
        # profile_to: run the server under cProfile (stats written there when it stops).
        entry = [str(ROOT / "bench" / "_profiled.py"), profile_to] if profile_to else ["-m", "clipfeed.cli"]
        args = [sys.executable, *entry, "serve"] + ([] if workers else ["--no-workers"])
        self.log = open(data_dir.parent / f"server-{self.port}.log", "wb")
        self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"server did not start; see {self.log.name}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def register(url: str, handle: str) -> str:
    response = httpx.post(f"{url}/api/v1/auth/register", json={"handle": handle, "password": "bench-password-1"})
    response.raise_for_status()
    return response.json()["token"]


def print_table(title: str, headers: list[str], rows: list[list]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*[str(cell) for cell in row])
        Console().print(table)
    except ImportError:  # pragma: no cover
        print(title)
        print(" | ".join(headers))
        for row in rows:
            print(" | ".join(str(cell) for cell in row))
