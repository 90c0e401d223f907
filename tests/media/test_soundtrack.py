"""Sound reuse: a named sound becomes the clip's soundtrack inside the ladder's ffmpeg graph.

The clips carry a 440 Hz tone; the reused sound is a 1000 Hz tone shorter than the clip, so it
must be looped. Every rung's audio is decoded with PyAV and checked with an FFT.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from clipfeed.media.ffmpeg import Soundtrack, plan_ladder, transcode_ladder
from clipfeed.media.models import Video
from tests import mediagen
from tests.conftest import register
from tests.media.audio import band_energy, decode_audio, dominant_hz, rms, rung_bytes
from tests.media.test_pipeline import tus_upload, wait_settled
from tests.social import factories as f

CLIP_S = 4.0
SOUND_S = 1.5
SOURCE_HZ, SOUND_HZ = 440, 1000


def make_sound_file(path: Path, *, seconds: float = SOUND_S, hz: int = SOUND_HZ) -> Path:
    mediagen.ffmpeg("-f", "lavfi", "-i", f"sine=frequency={hz}:sample_rate=44100", "-t", str(seconds),
                    "-c:a", "aac", "-b:a", "96k", "-f", "mp4", str(path))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("soundtrack")
    return {
        # 720x1280: two rungs, so both ffmpeg passes carry the soundtrack.
        "with_audio": mediagen.make_clip(folder / "tone440.mp4", width=720, height=1280, seconds=CLIP_S,
                                         tone_hz=SOURCE_HZ),
        "silent": mediagen.make_clip(folder / "noaudio.mp4", width=360, height=640, seconds=CLIP_S, audio=False),
        "sound": make_sound_file(folder / "sound1000.m4a"),
        # A short clip whose own audio becomes a reusable sound through the server.
        "sound_clip": mediagen.make_clip(folder / "tone1000.mp4", width=360, height=640, seconds=SOUND_S,
                                         tone_hz=SOUND_HZ),
    }


def transcode(src: Path, out: Path, *, has_audio: bool, soundtrack: Soundtrack | None, width: int, height: int):
    return transcode_ladder(src, out, plan_ladder(width, height), has_audio=has_audio, duration_s=CLIP_S,
                            timeout_s=300, max_output_bytes=500 * 1024 * 1024, soundtrack=soundtrack)


def rung_audio(out: Path, rung_name: str, tmp_path: Path):
    joined = tmp_path / f"{rung_name}.mp4"
    joined.write_bytes(rung_bytes(out / rung_name))
    return decode_audio(joined)


def test_a_sound_replaces_the_audio_looped_to_the_clip(clips, tmp_path):
    out = tmp_path / "out"
    result = transcode(clips["with_audio"], out, has_audio=True, soundtrack=Soundtrack(clips["sound"]),
                       width=720, height=1280)
    assert len(result.rungs) == 2
    assert 'mp4a.40.2' in (out / "master.m3u8").read_text()
    for rung in result.rungs:
        samples, rate = rung_audio(out, rung.name, tmp_path)
        assert abs(len(samples) / rate - CLIP_S) <= 0.2, (rung.name, len(samples) / rate)
        assert rms(samples) > 0.05, "not silent"
        assert abs(dominant_hz(samples, rate) - SOUND_HZ) < 15
        assert band_energy(samples, rate, SOURCE_HZ) < 0.01, "the original audio was replaced"
        # Looped, not padded: the last second still carries the sound.
        assert rms(samples[-rate:]) > 0.05
    # The clip has nothing of its own to offer as a sound; the loudness is the soundtrack's.
    assert result.sound is None
    assert result.loudness_lufs is not None and not result.audio_copied


def test_a_sound_is_mixed_under_the_original_audio(clips, tmp_path):
    out = tmp_path / "out"
    result = transcode(clips["with_audio"], out, has_audio=True,
                       soundtrack=Soundtrack(clips["sound"], original_level=1.0), width=720, height=1280)
    for rung in result.rungs:
        samples, rate = rung_audio(out, rung.name, tmp_path)
        assert abs(len(samples) / rate - CLIP_S) <= 0.2
        assert band_energy(samples, rate, SOUND_HZ) > 0.2 and band_energy(samples, rate, SOURCE_HZ) > 0.2
    # The mix contains the creator's own audio: it is the clip's own reusable sound.
    assert result.sound == "sound.m4a"
    samples, rate = decode_audio(out / "sound.m4a")
    assert band_energy(samples, rate, SOUND_HZ) > 0.2 and band_energy(samples, rate, SOURCE_HZ) > 0.2


def test_a_clip_without_audio_gets_the_sound(clips, tmp_path):
    out = tmp_path / "out"
    result = transcode(clips["silent"], out, has_audio=False,
                       soundtrack=Soundtrack(clips["sound"], original_level=0.5), width=360, height=640)
    assert 'mp4a.40.2' in (out / "master.m3u8").read_text()
    samples, rate = rung_audio(out, result.rungs[0].name, tmp_path)
    assert abs(len(samples) / rate - CLIP_S) <= 0.2
    assert rms(samples) > 0.05 and abs(dominant_hz(samples, rate) - SOUND_HZ) < 15
    assert result.sound is None


# --- through the server ----------------------------------------------------------------------

def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _create(client, headers: dict, **metadata) -> object:
    return client.post("/api/v1/uploads", headers={
        **headers, "Tus-Resumable": "1.0.0", "Upload-Length": "1000",
        "Upload-Metadata": ",".join(f"{k} {_b64(v)}" for k, v in metadata.items())})


def test_an_upload_naming_a_sound_is_transcoded_with_it(client, live_server, user, clips, tmp_path):
    # The sound: the extracted audio of another creator's clip, through the real pipeline.
    creator = register(client)
    source_id = tus_upload(str(client.base_url), creator["headers"], clips["sound_clip"])
    source = wait_settled(client, source_id, creator["headers"])
    assert source["status"] == "ready", source
    sound_id = source["original_sound_id"]
    assert sound_id

    video_id = tus_upload(str(client.base_url), user["headers"], clips["with_audio"], sound_id=sound_id)
    video = wait_settled(client, video_id, user["headers"])
    assert video["status"] == "ready", video
    assert video["sound_id"] == sound_id and video["original_sound_id"] is None

    # The blob store only: the worker may still be removing its scratch folders beside it.
    store_root = live_server.settings.blob_root
    rendition_dirs = [p for p in store_root.rglob("playlist.m3u8") if f"/{video_id}/" in p.as_posix()]
    assert rendition_dirs, "the rung playlists are in the store"
    for playlist in rendition_dirs:
        joined = tmp_path / f"{playlist.parent.name}.mp4"
        joined.write_bytes(rung_bytes(playlist.parent))
        samples, rate = decode_audio(joined)
        assert abs(len(samples) / rate - CLIP_S) <= 0.2
        assert rms(samples) > 0.05 and abs(dominant_hz(samples, rate) - SOUND_HZ) < 15

    sound = client.get(f"/api/v1/sounds/{sound_id}").json()
    assert sound["use_count"] == 1
    page = client.get(f"/api/v1/sounds/{sound_id}/videos").json()
    assert [item["id"] for item in page["items"]] == [video_id, source_id]


def test_a_sound_that_cannot_be_used_is_refused_before_any_byte(client, live_server, user):
    settings = live_server.settings
    creator = register(client)
    creator_id = creator["user"]["id"]
    hidden = f.make_video(settings, creator_id, visibility="private")
    private_sound = f.make_sound(settings, creator_id, hidden)
    pending_sound = f.make_sound(settings, creator_id, f.make_video(settings, creator_id), ready=False)
    blocked_sound = f.make_sound(settings, creator_id, f.make_video(settings, creator_id))
    f.block(settings, creator_id, user["user"]["id"])
    good_sound = f.make_sound(settings, user["user"]["id"], f.make_video(settings, user["user"]["id"]))

    for sound_id in ("nosuchsound00000", private_sound, pending_sound, blocked_sound):
        response = _create(client, user["headers"], sound_id=sound_id)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == "sound_id"
    for volume, field in (("loud", "sound_volume"), ("1.5", "sound_volume"), ("nan", "sound_volume")):
        response = _create(client, user["headers"], sound_id=good_sound, sound_volume=volume)
        assert response.status_code == 422 and response.json()["error"]["field"] == field, response.text
    response = _create(client, user["headers"], sound_volume="0.5")  # a level without a sound to mix
    assert response.status_code == 422 and response.json()["error"]["field"] == "sound_volume"
    # Nothing was created by the refusals; a usable sound with a level is accepted and counted.
    assert f.count(settings, Video, owner_id=user["user"]["id"]) == 1
    accepted = _create(client, user["headers"], sound_id=good_sound, sound_volume="0.25")
    assert accepted.status_code == 201, accepted.text
    assert client.get(f"/api/v1/sounds/{good_sound}").json()["use_count"] == 1
    # Anonymous: 401 before anything else.
    assert _create(client, {}, sound_id=good_sound).status_code == 401
