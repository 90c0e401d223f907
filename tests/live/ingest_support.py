"""Helpers for the live ingest tests: a publisher (real ffmpeg) and small HTTP/playlist helpers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from tests.conftest import register
from tests.mediagen import FFMPEG


def start_stream(client: httpx.Client, owner: dict | None = None, visibility: str = "public") -> dict:
    owner = owner or register(client)
    response = client.post("/api/v1/live/start", json={"title": "test stream", "visibility": visibility},
                           headers=owner["headers"])
    assert response.status_code == 201, response.text
    return {**response.json(), "owner": owner}


def publish(port: int, key: str, *, seconds: float = 6.0, size: str = "854x480", fps: int = 30,
            gop: int | None = None, log: Path | None = None, app: str = "live") -> subprocess.Popen:
    """ffmpeg publishing a generated stream (testsrc2 + sine, H.264 + AAC, 1 s GOP) in real time."""
    gop = gop or fps
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
           "-f", "lavfi", "-i", f"testsrc2=s={size}:r={fps}", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", f"{seconds}", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
           "-g", str(gop), "-keyint_min", str(gop), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
           "-f", "flv", f"rtmp://127.0.0.1:{port}/{app}/{key}"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb") if log else subprocess.PIPE)


def rtmp_port(live_server) -> int:
    return live_server.app.state.ingest.port
