"""RTMP publish -> LL-HLS over HTTP: playlists, parts that decode, blocking reload, recording -> replay."""

from __future__ import annotations

import io
import re
import threading
import time

import av
import httpx
import pytest

from tests.conftest import LiveServer, register, wait_for
from tests.live.ingest_support import publish, rtmp_port, start_stream


@pytest.fixture
def ingest_server(settings_factory):
    settings = settings_factory(rtmp_enabled=True, rtmp_port=0)
    server = LiveServer(settings).start()
    yield server
    server.stop()


@pytest.fixture
def http(ingest_server):
    with httpx.Client(base_url=ingest_server.url, timeout=30) as client:
        yield client


def _decode_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data), format="mp4") as container:
        return sum(1 for _ in container.decode(video=0))


def test_publish_plays_as_ll_hls_and_becomes_a_replay(ingest_server, http, tmp_path):
    stream = start_stream(http)
    stream_id = stream["stream_id"]
    publisher = publish(rtmp_port(ingest_server), stream["stream_key"], seconds=7, log=tmp_path / "pub.log")
    try:
        base = f"/media/live/{stream_id}"
        master = wait_for(lambda: (r := http.get(f"{base}/master.m3u8")).status_code == 200 and r, timeout=30,
                          message="master playlist")
        assert "max-age" in master.headers["cache-control"]
        rungs = re.findall(r"^(\w+)/index\.m3u8$", master.text, re.M)
        assert rungs[0] == "src" and "low" in rungs, master.text
        assert 'CODECS="avc1.' in master.text and "RESOLUTION=854x480" in master.text and "RESOLUTION=640x360" in master.text

        playlist = http.get(f"{base}/src/index.m3u8")
        text = playlist.text
        assert playlist.headers["cache-control"] == "public, max-age=1"
        assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=" in text
        assert "#EXT-X-PART-INF:PART-TARGET=" in text and "#EXT-X-PART:" in text
        assert "#EXT-X-PRELOAD-HINT:TYPE=PART" in text

        # A part that starts on a keyframe decodes with the init segment.
        init = http.get(f"{base}/src/init.mp4")
        assert init.headers["cache-control"] == "public, max-age=86400, immutable"
        first = re.search(r'#EXT-X-PART:DURATION=[\d.]+,URI="([^"]+)",INDEPENDENT=YES', text).group(1)
        part = http.get(f"{base}/src/{first}")
        assert part.status_code == 200 and part.headers["cache-control"].endswith("immutable")
        assert _decode_frames(init.content + part.content) >= 1

        # Blocking reload: ask for the part after the newest one; the answer holds it.
        msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1)) + len(re.findall(r"^s\d+\.m4s$", text, re.M))
        index = len(re.split(r"^s\d+\.m4s$", text, flags=re.M)[-1].split("#EXT-X-PART:")) - 1
        hinted = re.search(r'PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', text).group(1)
        started = time.monotonic()
        blocked = http.get(f"{base}/src/index.m3u8", params={"_HLS_msn": msn, "_HLS_part": index})
        assert blocked.status_code == 200
        assert f'URI="{hinted}"' in blocked.text  # the part that did not exist yet is listed now
        assert time.monotonic() - started < 3

        # The preload-hinted part itself is held until it exists.
        next_hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', blocked.text).group(1)
        assert next_hint != hinted
        assert http.get(f"{base}/src/{next_hint}").status_code == 200
        far_ahead = int(next_hint[4:-4]) + 50
        started = time.monotonic()
        assert http.get(f"{base}/src/part{far_ahead}.m4s").status_code == 404
        assert time.monotonic() - started < 1  # not held

        # The low rung decodes too (a complete segment).
        low = wait_for(lambda: (t := http.get(f"{base}/low/index.m3u8").text) and re.search(r"^s\d+\.m4s$", t, re.M),
                       timeout=20, message="a low-rung segment").group(0)
        low_init = http.get(f"{base}/low/init.mp4").content
        assert _decode_frames(low_init + http.get(f"{base}/low/{low}").content) >= 10

        # Unknown streams and names that could leave the folder are 404s.
        assert http.get("/media/live/nosuchstream/master.m3u8").status_code == 404
        assert http.get(f"{base}/src/../../secret_key").status_code == 404
        assert http.get(f"{base}/..%2f..%2fsecret_key").status_code == 404
        assert http.get(f"{base}/src/index.m3u8", params={"_HLS_msn": "x"}).status_code == 422

        assert publisher.wait(timeout=30) == 0
    finally:
        if publisher.poll() is None:
            publisher.kill()

    ingest = ingest_server.app.state.ingest
    wait_for(lambda: ingest.ended_log, timeout=30, message="publish_ended")
    ended_id, recording, _reason = ingest.ended_log[-1]
    assert ended_id == stream_id and recording is not None
    state = wait_for(lambda: (s := http.get(f"/api/v1/live/{stream_id}").json()) and s["status"] == "idle" and s,
                     timeout=10, message="stream idle")
    ended_playlist = http.get(f"{base}/src/index.m3u8").text
    assert ended_playlist.rstrip().endswith("#EXT-X-ENDLIST")
    # The recording became a replay video processed by the normal pipeline.
    replay_id = state.get("replay_video_id")
    assert replay_id, state
    owner_headers = stream["owner"]["headers"]
    video = wait_for(lambda: (v := http.get(f"/api/v1/videos/{replay_id}", headers=owner_headers).json())
                     and v.get("status") not in ("uploaded", "processing", "queued") and v,
                     timeout=120, message="replay processed")
    assert video["status"] == "ready", video
    assert 5000 <= video["duration_ms"] <= 8500


def test_a_private_stream_plays_only_for_its_owner(ingest_server, http, tmp_path):
    stream = start_stream(http, visibility="private")
    publisher = publish(rtmp_port(ingest_server), stream["stream_key"], seconds=4, log=tmp_path / "pub.log")
    try:
        base = f"/media/live/{stream['stream_id']}"
        owner = stream["owner"]["headers"]
        master = wait_for(lambda: (r := http.get(f"{base}/master.m3u8", headers=owner)).status_code == 200 and r,
                          timeout=30, message="master for the owner")
        assert master.headers["cache-control"].startswith("private")
        part = re.search(r'URI="(part\d+\.m4s)"', http.get(f"{base}/src/index.m3u8", headers=owner).text).group(1)
        assert http.get(f"{base}/src/{part}", headers=owner).headers["cache-control"].startswith("private")
        # The owner polled the playlist several times with one token: one viewer, keyed by user id.
        http.get(f"{base}/src/index.m3u8", headers=owner)
        http.get(f"{base}/low/index.m3u8", headers=owner)
        assert http.get(f"/api/v1/live/{stream['stream_id']}", headers=owner).json()["viewers"] == 1
        stranger = register(http)["headers"]
        for headers in ({}, stranger):
            for name in ("master.m3u8", "src/index.m3u8", f"src/{part}", "src/init.mp4"):
                assert http.get(f"{base}/{name}", headers=headers).status_code == 404
        assert publisher.wait(timeout=30) == 0
    finally:
        if publisher.poll() is None:
            publisher.kill()
