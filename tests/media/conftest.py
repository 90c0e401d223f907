"""Media fixtures: small clips generated once per session with lavfi sources."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests import mediagen

LIMITS = dict(max_bytes=50 * 1024 * 1024, min_duration_s=1.0, max_duration_s=60.0, max_dimension=4096,
              max_fps=120.0)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


def _cached(media_dir: Path, name: str, make) -> Path:
    path = media_dir / name
    if not path.exists():
        make(path)
    return path


@pytest.fixture(scope="session")
def landscape_small(media_dir) -> Path:
    """640x360, 4 s, with audio: smaller than the lowest standard rung."""
    return _cached(media_dir, "landscape_640x360.mp4",
                   lambda p: mediagen.make_clip(p, width=640, height=360, seconds=4))


@pytest.fixture(scope="session")
def portrait_720(media_dir) -> Path:
    """720x1280, 5 s, with audio: two rungs, three segments."""
    return _cached(media_dir, "portrait_720x1280.mp4",
                   lambda p: mediagen.make_clip(p, width=720, height=1280, seconds=5))


@pytest.fixture(scope="session")
def portrait_1080(media_dir) -> Path:
    """1080x1920, 2 s, with audio: the full three-rung ladder."""
    return _cached(media_dir, "portrait_1080x1920.mp4",
                   lambda p: mediagen.make_clip(p, width=1080, height=1920, seconds=2, tone_hz=523))


@pytest.fixture(scope="session")
def rotated_clip(media_dir) -> Path:
    """Coded 1280x720 (left half white), display rotation 90: shown as 720x1280. No audio."""
    return _cached(media_dir, "rotated_1280x720_r90.mp4",
                   lambda p: mediagen.make_clip(p, width=1280, height=720, seconds=3, audio=False, rotate=90,
                                                pattern="split"))


@pytest.fixture()
def listener():
    """A TCP listener on 127.0.0.1 that records whether anything connected to it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()

