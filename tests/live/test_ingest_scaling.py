"""The scaling rule (viewers -> an extra rung), the creator ending a stream mid-publish, and the
scale-out shape: `clipfeed ingest` in its own process with the API serving its files."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import av
import httpx
import pytest

from tests.conftest import LiveServer, wait_for
from tests.live.ingest_support import publish, rtmp_port, start_stream


def _decodes(http: httpx.Client, rung_url: str) -> int:
    text = http.get(f"{rung_url}/index.m3u8").text
    segment = re.findall(r"^(s\d+\.m4s)$", text, re.M)[-1]
    data = http.get(f"{rung_url}/init.mp4").content + http.get(f"{rung_url}/{segment}").content
    with av.open(io.BytesIO(data), format="mp4") as container:
        return sum(1 for _ in container.decode(video=0))


def test_viewers_add_a_rung_and_ending_the_stream_stops_the_publisher(settings_factory, tmp_path):
    settings = settings_factory(rtmp_enabled=True, rtmp_port=0, live_scale_viewers=1, live_scale_short_edge=240,
                                live_scale_video_kbps=300, live_ingest_check_s=0.5)
    server = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            stream = start_stream(http)
            base = f"/media/live/{stream['stream_id']}"
            publisher = publish(rtmp_port(server), stream["stream_key"], seconds=40, log=tmp_path / "pub.log")
            try:
                master = wait_for(lambda: (r := http.get(f"{base}/master.m3u8")).status_code == 200 and r.text,
                                  timeout=30, message="master")
                assert "mid/index.m3u8" not in master
                # One viewer polls the playlist: above the threshold (1), the stream gains a rung.
                http.get(f"{base}/src/index.m3u8")
                master = wait_for(lambda: "mid/index.m3u8" in (t := http.get(f"{base}/master.m3u8").text) and t,
                                  timeout=30, message="the scaled rung in the master playlist")
                assert re.findall(r"^(\w+)/index\.m3u8$", master, re.M) == ["src", "low", "mid"]
                assert "RESOLUTION=428x240" in master
                wait_for(lambda: re.search(r"^s\d+\.m4s$", http.get(f"{base}/mid/index.m3u8").text, re.M),
                         timeout=30, message="a mid-rung segment")
                assert _decodes(http, f"{base}/mid") >= 10

                # The creator ends the stream: the ingest disconnects the publisher long before
                # its 40 s are over, and the stream stays ended.
                ended_at = time.monotonic()
                response = http.post(f"/api/v1/live/{stream['stream_id']}/end", headers=stream["owner"]["headers"])
                assert response.status_code == 200
                publisher.wait(timeout=20)
                assert time.monotonic() - ended_at < 15
            finally:
                if publisher.poll() is None:
                    publisher.kill()
            ingest = server.app.state.ingest
            wait_for(lambda: ingest.ended_log, timeout=30, message="publish_ended")
            assert http.get(f"/api/v1/live/{stream['stream_id']}").json()["status"] == "ended"
            assert http.get(f"{base}/src/index.m3u8").text.rstrip().endswith("#EXT-X-ENDLIST")
    finally:
        server.stop()


def test_separate_ingest_process_with_the_api_serving_its_files(settings_factory, tmp_path):
    settings = settings_factory()  # the API process: no ingest of its own
    server = LiveServer(settings).start()
    env = {**os.environ, "CLIPFEED_DATA_DIR": str(settings.data_dir), "CLIPFEED_QUEUE_NAME": settings.queue_name,
           "CLIPFEED_SECRET_KEY": settings.secret_key, "CLIPFEED_RTMP_PORT": "0"}
    for name in ("database_url", "database_schema", "redis_url"):
        value = getattr(settings, name)
        if value:
            env[f"CLIPFEED_{name.upper()}"] = value
    ingest = subprocess.Popen([sys.executable, "-m", "clipfeed.cli", "ingest"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        while port is None:
            line = ingest.stdout.readline()
            assert line, "clipfeed ingest exited"
            found = re.search(r"rtmp://[\d.]+:(\d+)/live", line)
            port = int(found.group(1)) if found else None
        with httpx.Client(base_url=server.url, timeout=30) as http:
            stream = start_stream(http)
            publisher = publish(port, stream["stream_key"], seconds=6, log=tmp_path / "pub.log")
            try:
                base = f"/media/live/{stream['stream_id']}/src"
                text = wait_for(lambda: (r := http.get(f"{base}/index.m3u8")).status_code == 200
                                and "PRELOAD-HINT" in r.text and r.text, timeout=30, message="playlist")
                assert http.get(f"/api/v1/live/{stream['stream_id']}").json()["status"] == "live"
                # Blocking reload works across processes (the API re-reads the playlist).
                msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1)) \
                    + len(re.findall(r"^s\d+\.m4s$", text, re.M))
                part = len(re.split(r"^s\d+\.m4s$", text, flags=re.M)[-1].split("#EXT-X-PART:")) - 1
                hinted = re.search(r'PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', text).group(1)
                started = time.monotonic()
                held = http.get(f"{base}/index.m3u8", params={"_HLS_msn": msn, "_HLS_part": part})
                assert f'URI="{hinted}"' in held.text
                # The hinted part itself is held until it exists, across processes too.
                next_hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', held.text).group(1)
                assert http.get(f"{base}/{next_hint}").status_code == 200
                assert time.monotonic() - started < 3
                far = http.get(f"{base}/index.m3u8", params={"_HLS_msn": msn + 50})
                assert far.status_code == 422 and far.json()["error"]["code"] == "msn_too_far"
                assert publisher.wait(timeout=30) == 0
            finally:
                if publisher.poll() is None:
                    publisher.kill()
            wait_for(lambda: http.get(f"/api/v1/live/{stream['stream_id']}").json()["status"] == "idle",
                     timeout=30, message="stream idle after the publisher left")
    finally:
        ingest.terminate()
        try:
            assert ingest.wait(timeout=20) == 0
        finally:
            if ingest.poll() is None:
                ingest.kill()
            print(ingest.stdout.read())
        server.stop()
