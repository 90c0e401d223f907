"""Replays have their own limits: a stream longer than the upload limit still becomes a video
(real ffmpeg publishing to the real ingest), and a replay over the replay limit is still refused."""

from __future__ import annotations

import httpx

from tests.conftest import LiveServer, register, wait_for
from tests.live.ingest_support import publish, rtmp_port, start_stream
from tests.live.test_live_api import _authorize, _run, _start
from tests.mediagen import make_clip

from clipfeed.live import service as live
from clipfeed.media import keys
from clipfeed.storage import build_store


async def _import_upload(session, owner_id: str, path):
    from clipfeed.accounts.models import User
    from clipfeed.media import imports

    return await imports.import_local_file(session, await session.get(User, owner_id), path, filename="clip.mp4")


def _settled(http: httpx.Client, video_id: str, headers: dict) -> dict:
    return wait_for(lambda: (v := http.get(f"/api/v1/videos/{video_id}", headers=headers).json())
                    and v.get("status") in ("ready", "rejected", "failed") and v,
                    timeout=120, message="the video to be processed")


def test_a_stream_longer_than_the_upload_limit_becomes_a_replay(settings_factory, tmp_path):
    # The VOD limits are set far below the stream's length (instead of streaming for minutes).
    settings = settings_factory(rtmp_enabled=True, rtmp_port=0, max_duration_s=2.0, max_upload_bytes=50_000)
    server = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            stream = start_stream(http)
            publisher = publish(rtmp_port(server), stream["stream_key"], seconds=4, size="320x240",
                                log=tmp_path / "pub.log")
            assert publisher.wait(timeout=60) == 0
            ingest = server.app.state.ingest
            wait_for(lambda: ingest.ended_log, timeout=30, message="publish_ended")
            _, recording, _ = ingest.ended_log[-1]
            assert recording is not None
            state = wait_for(lambda: (s := http.get(f"/api/v1/live/{stream['stream_id']}").json())
                             and s.get("replay_video_id") and s, timeout=10, message="the replay video")
            owner = stream["owner"]["headers"]
            source = build_store(settings).local_path(keys.source_key(state["replay_video_id"]))
            assert source.stat().st_size > settings.max_upload_bytes  # over the upload size limit too
            video = _settled(http, state["replay_video_id"], owner)
            assert video["status"] == "ready", video
            assert video["duration_ms"] > 2000 + 1000  # over the upload limit, accepted as a replay
            assert video["renditions"], video

            # The same kind of file uploaded by a creator is still held to the upload limits.
            clip = make_clip(tmp_path / "upload.mp4", width=320, height=240, seconds=3.5)
            upload = _run(settings, lambda session: _import_upload(session, stream["owner"]["user"]["id"], clip))
            refused = _settled(http, upload.id, owner)
            assert refused["status"] == "rejected" and refused["rejection_code"] in ("too_large", "too_long"), refused
    finally:
        server.stop()


def test_a_replay_over_the_replay_limit_is_rejected(settings_factory, tmp_path):
    settings = settings_factory(live_replay_max_s=2.0)
    server = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            owner = register(http)
            started = _start(http, owner)
            _authorize(settings, started["stream_key"])
            recording = make_clip(tmp_path / "recording.mp4", width=320, height=240, seconds=3.5)
            video = _run(settings, lambda session: live.publish_ended(session, started["stream_id"], recording))
            body = _settled(http, video.id, owner["headers"])
            assert body["status"] == "rejected" and body["rejection_code"] == "too_long", body
    finally:
        server.stop()
