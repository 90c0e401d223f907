"""Replay: when a publish ends, its recording becomes a normal video of the streamer, processed
by the spine's pipeline (real ffmpeg on a generated recording)."""

from __future__ import annotations

from tests.conftest import register, wait_for
from tests.live.test_live_api import _authorize, _run, _start
from tests.mediagen import make_clip

from clipfeed.live import service as live


def test_recording_becomes_a_ready_video_of_the_streamer(client, settings, tmp_path):
    owner, other = register(client), register(client)
    started = _start(client, owner, title="Friday jam #live", visibility="public")
    stream_id = started["stream_id"]
    _authorize(settings, started["stream_key"])
    recording = make_clip(tmp_path / "recording.mp4", width=640, height=360, seconds=3, faststart=False)

    video = _run(settings, lambda session: live.publish_ended(session, stream_id, recording))
    assert video is not None and video.owner_id == owner["user"]["id"]
    assert not recording.exists()  # moved into the blob store, not copied

    state = client.get(f"/api/v1/live/{stream_id}").json()
    assert state["status"] == "idle" and state["replay_video_id"] == video.id

    def ready():
        body = client.get(f"/api/v1/videos/{video.id}", headers=owner["headers"]).json()
        assert body["status"] not in ("rejected", "failed"), body
        return body if body["status"] == "ready" else None

    body = wait_for(ready, timeout=120, message="the replay to be processed")
    assert body["caption"] == "Friday jam #live"
    assert body["duration_ms"] and 2500 <= body["duration_ms"] <= 3500
    # A normal video: others see it, the creator may delete it.
    assert client.get(f"/api/v1/videos/{video.id}", headers=other["headers"]).status_code == 200
    assert client.delete(f"/api/v1/videos/{video.id}", headers=other["headers"]).status_code in (403, 404)
    assert client.delete(f"/api/v1/videos/{video.id}", headers=owner["headers"]).status_code in (200, 204)
    assert client.get(f"/api/v1/videos/{video.id}", headers=owner["headers"]).status_code == 404
    assert client.get(f"/api/v1/live/{stream_id}").json()["replay_video_id"] is None


def test_no_recording_no_replay_and_empty_file_ignored(client, settings, tmp_path):
    owner = register(client)
    started = _start(client, owner)
    _authorize(settings, started["stream_key"])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert _run(settings, lambda session: live.publish_ended(session, started["stream_id"], empty)) is None
    assert client.get(f"/api/v1/live/{started['stream_id']}").json()["replay_video_id"] is None
