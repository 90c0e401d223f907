"""Upload -> probe -> ladder -> ready, through the real server, jobs and ffmpeg, on every backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tusclient import client as tus_client

from clipfeed.media.content_features import FEATURE_NAMES, NAMES_VERSION
from tests.conftest import LiveServer, register, wait_for
from tests.mediagen import make_clip


def tus_upload(base_url: str, headers: dict, path: Path, **metadata) -> str:
    """Upload a file with the tuspy client; returns the video id the server assigned."""
    uploader = tus_client.TusClient(f"{base_url}/api/v1/uploads", headers=headers).uploader(
        str(path), chunk_size=1024 * 1024, metadata={"filename": path.name, **metadata})
    uploader.upload()
    head = httpx.head(uploader.url, headers={**headers, "Tus-Resumable": "1.0.0"})
    assert int(head.headers["Upload-Offset"]) == path.stat().st_size
    video_id = uploader.url  # resolved below through the owner's listing
    me = httpx.get(f"{base_url}/api/v1/me", headers=headers).json()
    items = httpx.get(f"{base_url}/api/v1/users/{me['id']}/videos", headers=headers, params={"limit": 1}).json()["items"]
    assert items, video_id
    return items[0]["id"]


def get_video(client: httpx.Client, video_id: str, headers: dict) -> dict:
    response = client.get(f"/api/v1/videos/{video_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def wait_settled(client, video_id, headers, timeout=180) -> dict:
    """Wait until the video is rejected, failed, or ready with every rung published."""

    def settled():
        video = get_video(client, video_id, headers)
        done = video["status"] in ("rejected", "failed") or (video["status"] == "ready" and video["progress"] >= 100)
        return video if done else None

    return wait_for(settled, timeout=timeout, interval=0.2, message=f"video {video_id} to settle")


@pytest.fixture(scope="module")
def portrait_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "portrait.mp4"
    make_clip(path, width=540, height=960, seconds=4, fps=30, audio=True)
    return path


def test_upload_becomes_playable_with_ladder_artifacts_and_sound(client, user, portrait_clip):
    video_id = tus_upload(str(client.base_url), user["headers"], portrait_clip, caption="hello #first")
    video = wait_settled(client, video_id, user["headers"])
    assert video["status"] == "ready", video
    assert video["progress"] == 100
    assert video["caption"] == "hello #first"
    assert (video["width"], video["height"]) == (540, 960)
    assert 3.5 < video["duration_ms"] / 1000 < 4.5
    # 540x960 source: only the 480 rung fits under it without upscaling, plus the source-size one? never above.
    assert video["renditions"] and all(r["width"] <= 540 and r["height"] <= 960 for r in video["renditions"])
    assert all(r["height"] > r["width"] for r in video["renditions"]), "portrait stays portrait"
    urls = video["urls"]
    master = client.get(urls["hls"])
    assert master.status_code == 200 and master.text.startswith("#EXTM3U")
    assert master.text.count("#EXT-X-STREAM-INF") == len(video["renditions"])
    for name in ("poster", "preview", "storyboard", "storyboard_vtt"):
        assert urls[name], name
        assert client.get(urls[name]).status_code == 200, name
    assert urls["sound"] and client.get(urls["sound"]).status_code == 200
    assert video["original_sound_id"]
    assert "loudness_lufs" in str(video["features"]) or video["features"]
    # How it looks and sounds, measured on the published lowest rung (content-based recommendation).
    content = video["features"]["content"]
    assert content["names_version"] == NAMES_VERSION and list(content["values"]) == list(FEATURE_NAMES)
    assert content["values"]["has_audio"] == 1.0 and content["values"]["motion"] > 0  # mediagen: moving pattern, tone


def test_anonymous_and_others_see_public_ready_video_but_not_owner_fields(client, user, portrait_clip):
    video_id = tus_upload(str(client.base_url), user["headers"], portrait_clip)
    wait_settled(client, video_id, user["headers"])
    public = client.get(f"/api/v1/videos/{video_id}").json()
    assert public["status"] == "ready"
    assert "rejection_reason" not in public and "original_filename" not in public


@pytest.mark.parametrize("content, code", [
    (b"this is just text pretending to be a video\n" * 20, "not_media"),
    (b"#EXTM3U\n#EXTINF:2,\nhttp://127.0.0.1:9/x.ts\n", "playlist_or_reference"),
])
def test_hostile_uploads_are_rejected_with_a_reason(client, user, tmp_path, content, code):
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    video_id = tus_upload(str(client.base_url), user["headers"], path)
    video = wait_settled(client, video_id, user["headers"])
    assert video["status"] == "rejected"
    assert video["rejection_code"] == code
    assert video["rejection_reason"]
    # Not a video anyone else can see, and nothing playable.
    assert client.get(f"/api/v1/videos/{video_id}").status_code == 404
    assert video["urls"]["hls"] is None


def test_edit_and_delete_rules(client, user, portrait_clip):
    other = register(client)
    video_id = tus_upload(str(client.base_url), user["headers"], portrait_clip, caption="before")
    wait_settled(client, video_id, user["headers"])
    path = f"/api/v1/videos/{video_id}"
    assert client.patch(path, json={"caption": "x"}).status_code == 401
    assert client.patch(path, json={"caption": "x"}, headers=other["headers"]).status_code == 403
    bad = client.patch(path, json={"visibility": "everyone"}, headers=user["headers"])
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "visibility"
    too_long = client.patch(path, json={"caption": "a" * 2201}, headers=user["headers"])
    assert too_long.status_code == 422
    edited = client.patch(path, json={"caption": "<script>alert(1)</script> after", "visibility": "private"},
                          headers=user["headers"])
    assert edited.status_code == 200
    assert edited.json()["caption"] == "<script>alert(1)</script> after"
    # Private: gone for everyone else (404, no existence leak), still there for the owner.
    assert client.get(path).status_code == 404
    assert client.get(path, headers=other["headers"]).status_code == 404
    assert client.get(path, headers=user["headers"]).json()["visibility"] == "private"
    hls = client.get(path, headers=user["headers"]).json()["urls"]["hls"]
    assert "sig=" in hls and client.get(hls).status_code == 200  # the owner's signed URL plays anywhere
    assert client.delete(path, headers=other["headers"]).status_code == 404
    assert client.delete(path, headers=user["headers"]).status_code == 204
    assert client.get(path, headers=user["headers"]).status_code == 404
    assert client.get(hls).status_code in (403, 404)
    assert client.get("/api/v1/videos/doesnotexist00").status_code == 404


def test_user_videos_are_cursor_paginated(client, user):
    # Creating tus uploads is enough to have video records (status 'uploading', owner-visible).
    created = []
    for index in range(5):
        response = client.post("/api/v1/uploads", headers={**user["headers"], "Tus-Resumable": "1.0.0",
                                                           "Upload-Length": "10"})
        assert response.status_code == 201, response.text
        created.append(response.headers["Clipfeed-Video-Id"])
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/api/v1/users/{user['user']['id']}/videos", params=params, headers=user["headers"]).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(created))
    # Strangers see none of them (still uploading), and a bad cursor is a clear 422.
    assert client.get(f"/api/v1/users/{user['user']['id']}/videos").json()["items"] == []
    assert client.get(f"/api/v1/users/{user['user']['id']}/videos", params={"cursor": "!!"}).status_code == 422
    assert client.get("/api/v1/users/nobody0000000000/videos").status_code == 404


def _env(settings, **extra) -> dict:
    env = {**os.environ, "CLIPFEED_DATA_DIR": str(settings.data_dir), "CLIPFEED_QUEUE_NAME": settings.queue_name,
           "CLIPFEED_SECRET_KEY": settings.secret_key, "CLIPFEED_JOB_LEASE_SECONDS": "2"}
    for name in ("database_url", "database_schema", "redis_url"):
        value = getattr(settings, name)
        if value:
            env[f"CLIPFEED_{name.upper()}"] = value
    env.pop("CLIPFEED_PORT", None)
    return {**env, **extra}


def _start_worker(settings) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clipfeed.cli", "worker"], env=_env(settings),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes(settings_factory, tmp_path):
    settings = settings_factory(job_lease_seconds=2)
    clip = tmp_path / "long.mp4"
    make_clip(clip, width=720, height=1280, seconds=12, fps=30, audio=True)
    server = LiveServer(settings, run_workers=False).start()
    first = _start_worker(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            account = register(http)
            video_id = tus_upload(server.url, account["headers"], clip)
            # Kill the worker (and its ffmpeg) while it is transcoding.
            wait_for(lambda: get_video(http, video_id, account["headers"])["progress"] > 5, timeout=120,
                     interval=0.05, message="transcoding to start")
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            interrupted = get_video(http, video_id, account["headers"])
            assert interrupted["progress"] < 100
            second = _start_worker(settings)
            try:
                video = wait_settled(http, video_id, account["headers"], timeout=240)
            finally:
                os.killpg(second.pid, signal.SIGKILL)
                second.wait()
            assert video["status"] == "ready" and video["progress"] == 100
            master = http.get(video["urls"]["hls"]).text
            assert master.count("#EXT-X-STREAM-INF") == len(video["renditions"]) >= 2
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        server.stop()


def test_a_rung_is_joined_in_playlist_order_up_to_the_analysed_span(tmp_path):
    """The content features read the lowest rung as one fragmented MP4: the init segment, then
    the media segments in the playlist's order, only as many as cover the analysed span (a long
    live replay is not copied whole); a segment name leaving the rung's folder is refused."""
    from clipfeed.media.pipeline import join_rung

    rung = tmp_path / "480p"
    rung.mkdir()
    (rung / "init.mp4").write_bytes(b"I")
    names = [f"seg_{i:05d}.m4s" for i in range(5)]
    for i, name in enumerate(names):
        (rung / name).write_bytes(str(i).encode())
    lines = ["#EXTM3U", "#EXT-X-MAP:URI=\"init.mp4\""]
    for name in reversed(names):  # the playlist's order, not the names', decides
        lines += ["#EXTINF:2.000,", name]
    (rung / "playlist.m3u8").write_text("\n".join(lines + ["#EXT-X-ENDLIST"]) + "\n")
    assert join_rung(rung, tmp_path / "all.mp4").read_bytes() == b"I43210"
    assert join_rung(rung, tmp_path / "first.mp4", max_seconds=5).read_bytes() == b"I432"

    (rung / "playlist.m3u8").write_text("#EXTM3U\n#EXTINF:2.000,\n../escape.m4s\n")
    (tmp_path / "escape.m4s").write_bytes(b"x")
    with pytest.raises(ValueError):
        join_rung(rung, tmp_path / "bad.mp4")
