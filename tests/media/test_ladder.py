"""transcode_ladder on real generated clips, outputs checked with PyAV."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import av
import psutil
import pytest

from clipfeed.media.ffmpeg import (
    FFmpegOutputTooLarge,
    FFmpegTimeout,
    Rung,
    plan_ladder,
    run_ffmpeg,
    transcode_ladder,
    write_master_playlist,
)
from clipfeed.media.probe import probe_media
from tests import mediagen
from tests.media.conftest import LIMITS

BIG = 10**9


# ------------------------------------------------------------------------------- helpers

def playlist_segments(rung_dir: Path) -> tuple[list[float], list[str]]:
    durations, names = [], []
    for line in (rung_dir / "playlist.m3u8").read_text().splitlines():
        if line.startswith("#EXTINF:"):
            durations.append(float(line[8:].split(",")[0]))
        elif line and not line.startswith("#"):
            names.append(line)
    return durations, names


def open_rung(rung_dir: Path, segments: list[str] | None = None):
    _, names = playlist_segments(rung_dir)
    data = (rung_dir / "init.mp4").read_bytes() + b"".join((rung_dir / n).read_bytes() for n in (segments or names))
    return av.open(io.BytesIO(data), format="mp4")


def luma_mean(frame, region: str = "all") -> float:
    gray = frame.reformat(format="gray")
    plane, width, height = gray.planes[0], gray.width, gray.height
    data, stride = bytes(plane), plane.line_size
    rows = {"all": range(height), "top": range(height // 2), "bottom": range(height // 2, height)}[region]
    total = sum(sum(data[y * stride: y * stride + width]) for y in rows)
    return total / (len(rows) * width)


def first_frame(path: Path):
    with av.open(str(path)) as container:
        return next(container.decode(video=0))


def run_ladder(src: Path, out: Path, **kwargs):
    probe = probe_media(src, **LIMITS)
    rungs = plan_ladder(probe.display_width, probe.display_height)
    events: list[tuple] = []
    progress: list[float] = []

    def on_rung_ready(rung: Rung) -> None:
        others = {r.name: (out / r.name / "playlist.m3u8") for r in rungs if r != rung}
        unfinished = [n for n, p in others.items() if not p.exists() or "#EXT-X-ENDLIST" not in p.read_text()]
        events.append((rung.name, time.monotonic(), unfinished))

    result = transcode_ladder(src, out, rungs, has_audio=probe.has_audio, duration_s=probe.duration_s,
                              timeout_s=120, max_output_bytes=BIG, on_progress=progress.append,
                              on_rung_ready=on_rung_ready, **kwargs)
    return probe, rungs, result, events, progress


@pytest.fixture(scope="module")
def full_ladder(portrait_1080, tmp_path_factory):
    out = tmp_path_factory.mktemp("ladder1080")
    return (out, *run_ladder(portrait_1080, out))


@pytest.fixture(scope="module")
def two_rungs(portrait_720, tmp_path_factory):
    out = tmp_path_factory.mktemp("ladder720")
    return (out, *run_ladder(portrait_720, out))


# ------------------------------------------------------------------------------- planning

def test_plan_ladder_shapes():
    assert [(r.name, r.width, r.height) for r in plan_ladder(1080, 1920)] == [
        ("480p", 480, 854), ("720p", 720, 1280), ("1080p", 1080, 1920)]
    assert [(r.width, r.height) for r in plan_ladder(1920, 1080)] == [(854, 480), (1280, 720), (1920, 1080)]
    assert [(r.name, r.width, r.height) for r in plan_ladder(640, 360)] == [("360p", 640, 360)]
    assert [(r.width, r.height) for r in plan_ladder(2160, 3840)][-1] == (1080, 1920)
    for w, h in [(1080, 1920), (1000, 1000), (1280, 720), (333, 777), (1442, 2562)]:
        for rung in plan_ladder(w, h):
            assert rung.width % 2 == 0 and rung.height % 2 == 0
            assert rung.width <= w and rung.height <= h  # never upscale
            assert abs(rung.width / rung.height - w / h) < 0.01
            assert (rung.height >= rung.width) == (h >= w)


# ------------------------------------------------------------------------------- the full ladder

def test_every_rung_decodes_at_its_size(full_ladder):
    out, probe, rungs, result, events, progress = full_ladder
    assert [r.name for r in rungs] == ["480p", "720p", "1080p"]
    for rung in rungs:
        with open_rung(out / rung.name) as container:
            video = container.streams.video[0]
            assert container.streams.audio, f"{rung.name} lost its audio"
            frames = list(container.decode(video))
        assert len(frames) == pytest.approx(probe.duration_s * 30, abs=2)
        assert {(f.width, f.height) for f in frames} == {(rung.width, rung.height)}
        assert frames[0].height > frames[0].width  # portrait stays portrait


def test_lowest_rung_is_announced_first_while_the_others_are_still_running(full_ladder):
    out, probe, rungs, result, events, progress = full_ladder
    assert [name for name, _, _ in events] == ["480p", "720p", "1080p"]
    name, at, unfinished = events[0]
    assert sorted(unfinished) == ["1080p", "720p"]  # lowest complete, higher ones still being written
    assert at < events[1][1]
    assert 0 < result.first_rung_ready_s < result.elapsed_s


def test_progress_is_monotonic_and_reaches_one(full_ladder):
    progress = full_ladder[-1]
    assert progress == sorted(progress) and len(progress) >= 3
    assert progress[-1] == 1.0 and all(0.0 <= p <= 1.0 for p in progress)


def test_master_playlist(full_ladder):
    out, probe, rungs, result, events, progress = full_ladder
    text = (out / "master.m3u8").read_text()
    lines = text.splitlines()
    assert lines[:3] == ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    infs = [line for line in lines if line.startswith("#EXT-X-STREAM-INF:")]
    uris = [line for line in lines if line and not line.startswith("#")]
    assert uris == [f"{r.name}/playlist.m3u8" for r in rungs]
    for inf, rung in zip(infs, rungs):
        attrs = dict(re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', inf.split(":", 1)[1]))
        assert attrs["RESOLUTION"] == f"{rung.width}x{rung.height}"
        assert re.fullmatch(r'"avc1\.64[0-9a-f]{4},mp4a\.40\.2"', attrs["CODECS"])
        assert int(attrs["BANDWIDTH"]) >= int(attrs["AVERAGE-BANDWIDTH"]) > 10_000
        assert float(attrs["FRAME-RATE"]) == pytest.approx(30.0)
    bandwidths = [int(re.search(r"BANDWIDTH=(\d+)", inf).group(1)) for inf in infs]
    assert bandwidths == sorted(bandwidths)
    # the level in the codec string is the real one: 1080x1920 needs level 4.0 (0x28), 480p far less
    assert '"avc1.640028' in infs[-1] and '"avc1.640028' not in infs[0]


def test_master_playlist_of_a_partial_ladder(full_ladder, tmp_path):
    out, probe, rungs, *_ = full_ladder
    text = write_master_playlist(rungs[:1], out / "partial.m3u8", has_audio=True)
    assert text.count("#EXT-X-STREAM-INF") == 1 and "480p/playlist.m3u8" in text


def test_poster_is_a_real_frame(full_ladder):
    out = full_ladder[0]
    frame = first_frame(out / "poster.jpg")
    assert (frame.width, frame.height) == (720, 1280)
    assert luma_mean(frame) > 40


def test_preview_is_an_animated_webp(full_ladder):
    data = (full_ladder[0] / "preview.webp").read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] == b"VP8X"
    assert data[20] & 0x02, "animation flag not set"
    frames = data.count(b"ANMF")
    assert 12 <= frames <= 2 * 12 + 1  # 2 s clip: up to ~2 s at 12 fps
    width = 1 + int.from_bytes(data[24:27], "little")
    height = 1 + int.from_bytes(data[27:30], "little")
    assert (width, height) == (320, 568)
    assert len(data) < 400_000


def test_storyboard_sprite_and_vtt(full_ladder):
    out = full_ladder[0]
    sprite = first_frame(out / "storyboard.jpg")
    vtt = (out / "storyboard.vtt").read_text()
    assert vtt.startswith("WEBVTT")
    cues = re.findall(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)", vtt)
    assert len(cues) == 2  # one per second of a 2 s clip
    for start, end, image, x, y, w, h in cues:
        assert image == "storyboard.jpg"
        assert int(x) + int(w) <= sprite.width and int(y) + int(h) <= sprite.height
        assert start < end
    assert (int(cues[0][5]), int(cues[0][6])) == (90, 160)  # portrait thumbnails


def test_sound_and_loudness(full_ladder):
    out, probe, rungs, result, *_ = full_ladder
    assert result.sound == "sound.m4a" and result.audio_copied  # AAC-LC 96 kb/s source: copied
    with av.open(str(out / "sound.m4a")) as container:
        assert not container.streams.video and container.streams.audio[0].codec_context.name == "aac"
    assert result.loudness_lufs is not None and -40 < result.loudness_lufs < -5
    assert result.features["loudness_lufs"] == result.loudness_lufs
    assert {"poster.jpg", "preview.webp", "storyboard.jpg", "storyboard.vtt", "sound.m4a",
            "master.m3u8"} <= set(result.files)


# ------------------------------------------------------------------------------- segments

def test_segments_are_two_seconds_and_start_on_keyframes(two_rungs):
    out, probe, rungs, *_ = two_rungs
    assert [r.name for r in rungs] == ["480p", "720p"]
    for rung in rungs:
        durations, names = playlist_segments(out / rung.name)
        assert len(names) == 3 and names[0] == "seg_00000.m4s"
        assert durations[:-1] == [pytest.approx(2.0, abs=0.05)] * (len(durations) - 1)
        assert sum(durations) == pytest.approx(probe.duration_s, abs=0.1)
        assert "#EXT-X-ENDLIST" in (out / rung.name / "playlist.m3u8").read_text()
        for name in names:  # each segment decodes on its own, starting with a keyframe
            with open_rung(out / rung.name, [name]) as container:
                packet = next(p for p in container.demux(video=0) if p.size)
                assert packet.is_keyframe, f"{rung.name}/{name} does not start on a keyframe"
            with open_rung(out / rung.name, [name]) as container:
                frames = list(container.decode(video=0))
            assert frames[0].key_frame
            assert len(frames) == pytest.approx(durations[names.index(name)] * 30, abs=1)
            assert sum(f.key_frame for f in frames) == 1  # exactly one keyframe per segment


def test_no_upscaling_for_a_small_source(landscape_small, tmp_path):
    probe, rungs, result, events, progress = run_ladder(landscape_small, tmp_path)
    assert [(r.name, r.width, r.height) for r in rungs] == [("360p", 640, 360)]
    assert [name for name, _, _ in events] == ["360p"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["360p"]
    with open_rung(tmp_path / "360p") as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (640, 360)
    assert result.poster and result.preview and result.storyboard and result.sound
    assert progress[-1] == 1.0


def test_audio_is_reencoded_when_it_cannot_be_copied(media_dir, tmp_path):
    src = media_dir / "opus.mkv"
    if not src.exists():
        mediagen.ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x180:r=30", "-f", "lavfi", "-i", "sine=f=300:r=48000",
                        "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "libopus", str(src))
    probe, rungs, result, events, progress = run_ladder(src, tmp_path)
    assert probe.audio_codec == "opus" and not result.audio_copied
    for name in ("sound.m4a", f"{rungs[0].name}/init.mp4"):
        data = (tmp_path / name).read_bytes()
        assert b"mp4a" in data and b"Opus" not in data
    assert 'CODECS="avc1.' in (tmp_path / "master.m3u8").read_text()
    assert ',mp4a.40.2"' in (tmp_path / "master.m3u8").read_text()


def test_rotated_source_comes_out_upright(rotated_clip, tmp_path):
    probe, rungs, result, events, progress = run_ladder(rotated_clip, tmp_path)
    assert [(r.width, r.height) for r in rungs] == [(480, 854), (720, 1280)]
    for rung in rungs:
        with open_rung(tmp_path / rung.name) as container:
            assert not container.streams.audio  # the source has none: video-only rungs
            frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (rung.width, rung.height)
        assert frame.rotation == 0  # pixels rotated, no rotation flag left for players to apply
        # Coded: left half white. Rotated 90 degrees counter-clockwise for display: the white half
        # is at the bottom.
        assert luma_mean(frame, "bottom") > 180 and luma_mean(frame, "top") < 60
    text = (tmp_path / "master.m3u8").read_text()
    assert "mp4a" not in text and "RESOLUTION=720x1280" in text
    assert result.sound is None and result.loudness_lufs is None and not (tmp_path / "sound.m4a").exists()


# ------------------------------------------------------------------------------- limits

def _ffmpeg_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "ffmpeg" in p.name()]


def test_timeout_kills_ffmpeg_and_raises(portrait_720, tmp_path):
    started = time.monotonic()
    with pytest.raises(FFmpegTimeout):
        transcode_ladder(portrait_720, tmp_path, plan_ladder(720, 1280), has_audio=True, duration_s=5,
                         timeout_s=0.3, max_output_bytes=BIG)
    assert time.monotonic() - started < 5
    assert _ffmpeg_children() == []


def test_output_cap_kills_ffmpeg_and_raises(portrait_720, tmp_path):
    with pytest.raises(FFmpegOutputTooLarge):
        transcode_ladder(portrait_720, tmp_path, plan_ladder(720, 1280), has_audio=True, duration_s=5,
                         timeout_s=60, max_output_bytes=20_000)
    assert _ffmpeg_children() == []


def test_run_ffmpeg_progress_and_errors(landscape_small, tmp_path):
    seen: list[float] = []
    run_ffmpeg(["-i", str(landscape_small), "-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast",
                str(tmp_path / "copy.mp4")], timeout_s=60, duration_s=4.0, on_progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    with pytest.raises(Exception) as info:
        run_ffmpeg(["-i", str(tmp_path / "missing.mp4"), "-f", "null", "-"], timeout_s=10)
    assert "missing.mp4" in info.value.stderr_tail
