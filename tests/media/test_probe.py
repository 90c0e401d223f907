"""probe_media: every hostile input gets its stable code; valid clips probe correctly; nothing a
file names (URL, other path) is ever opened, by the probe or by the ladder's ffmpeg."""

from __future__ import annotations

import select
import socket
import subprocess
from pathlib import Path

import pytest

from clipfeed.media.ffmpeg import FFmpegError, generate_demo_clip, plan_ladder, run_ffmpeg, transcode_ladder
from clipfeed.media.probe import ALLOWED_DEMUXERS, MediaRejected, probe_media, sniff
from tests import mediagen
from tests.media.conftest import LIMITS


def rejected(path: Path, **overrides) -> MediaRejected:
    with pytest.raises(MediaRejected) as info:
        probe_media(path, **{**LIMITS, **overrides})
    assert info.value.message and info.value.code in str(info.value)
    return info.value


def connection_attempted(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


# ----------------------------------------------------------------------------- valid inputs

def test_landscape_clip(landscape_small):
    probe = probe_media(landscape_small, **LIMITS)
    assert (probe.width, probe.height, probe.rotation) == (640, 360, 0)
    assert (probe.display_width, probe.display_height) == (640, 360)
    assert probe.container.startswith("mov") and probe.video_codec == "h264" and probe.pix_fmt == "yuv420p"
    assert probe.duration_s == pytest.approx(4.0, abs=0.1) and probe.fps == pytest.approx(30.0)
    assert probe.has_audio and probe.audio_codec == "aac" and probe.sample_rate == 48000 and probe.channels == 2
    assert probe.size_bytes == landscape_small.stat().st_size and probe.bitrate > 0


def test_portrait_clip(portrait_720):
    probe = probe_media(portrait_720, **LIMITS)
    assert (probe.display_width, probe.display_height) == (720, 1280)


def test_rotated_clip_reports_display_size(rotated_clip):
    probe = probe_media(rotated_clip, **LIMITS)
    assert (probe.width, probe.height) == (1280, 720)
    assert probe.rotation in (90, 270)
    assert (probe.display_width, probe.display_height) == (720, 1280)
    assert not probe.has_audio and probe.audio_codec is None


@pytest.mark.parametrize("suffix,codec", [(".mkv", "libx264"), (".webm", "libvpx"), (".ts", "libx264"),
                                          (".avi", "mpeg4")])
def test_other_single_file_containers(media_dir, suffix, codec):
    path = mediagen.make_clip(media_dir / f"other{suffix}", width=160, height=90, seconds=1.5, codec=codec,
                              audio=False)
    probe = probe_media(path, **LIMITS)
    assert (probe.width, probe.height) == (160, 90)
    assert probe.container.split(",")[0] in ALLOWED_DEMUXERS


@pytest.mark.parametrize("pattern", ["mandelbrot", "smptehdbars"])
def test_generated_demo_clip(tmp_path, pattern):
    clip = generate_demo_clip(tmp_path / "demo.mp4", width=180, height=320, seconds=2, fps=30, pattern=pattern,
                              hue=120, tone_hz=330, text="demo: it's 100% 'quoted'")
    probe = probe_media(clip, **LIMITS)
    assert (probe.display_width, probe.display_height) == (180, 320)
    assert probe.duration_s == pytest.approx(2.0, abs=0.1) and probe.has_audio


# ----------------------------------------------------------------------------- rejections

def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    assert rejected(path).code == "empty_file"


def test_too_large(landscape_small):
    assert rejected(landscape_small, max_bytes=1000).code == "too_large"


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("hello, this is not a video\n" * 20)
    assert rejected(path).code == "not_media"


def test_random_bytes(tmp_path):
    assert rejected(mediagen.random_bytes(tmp_path / "noise.mp4")).code == "not_media"


@pytest.mark.parametrize("name,body", [
    ("list.m3u8", "#EXTM3U\n#EXTINF:2,\nhttp://example.invalid/a.ts\n"),
    ("dash.mp4", '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>\n'),
    ("mpd.mp4", '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"><BaseURL>http://x/</BaseURL></MPD>\n'),
    ("session.mp4", "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nm=video 5004 RTP/AVP 96\n"),
    ("concat.mp4", "ffconcat version 1.0\nfile 'http://example.invalid/a.mp4'\n"),
    ("bom.mp4", "\ufeff#EXTM3U\n#EXTINF:2,\nseg.ts\n"),
    ("urls.mp4", "see https://example.invalid/video.mp4 for the real thing\n"),
])
def test_playlists_and_references(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(body)
    assert rejected(path).code == "playlist_or_reference"


@pytest.mark.parametrize("suffix,label", [(".png", "PNG"), (".jpg", "JPEG"), (".gif", "GIF"), (".webp", "WebP")])
def test_still_images(tmp_path, suffix, label):
    image = mediagen.make_image(tmp_path / f"still{suffix}")
    disguised = tmp_path / f"still{suffix}.mp4"
    disguised.write_bytes(image.read_bytes())
    error = rejected(disguised)
    assert error.code == "image_not_video" and label in error.message


def test_audio_only_mp4_reaches_the_demuxer(tmp_path):
    path = mediagen.make_audio_only(tmp_path / "voice.mp4", seconds=2)
    assert sniff(path.read_bytes()[:8192]).kind == "video_container"  # the PyAV layer decides
    assert rejected(path).code == "no_video_stream"


def test_audio_only_mp3(tmp_path):
    assert rejected(mediagen.make_audio_only(tmp_path / "song.mp3", seconds=2)).code == "no_video_stream"


def test_truncated_mp4_without_index(media_dir, tmp_path):
    whole = mediagen.make_clip(media_dir / "moov_at_end.mp4", width=320, height=180, seconds=3, faststart=False)
    assert rejected(mediagen.truncate(whole, tmp_path / "cut.mp4", 0.6)).code == "corrupt"


def test_truncated_mp4_with_index_up_front(portrait_720, tmp_path):
    # moov first: the header promises 5 s, the data stops at 60 %; the start still decodes.
    error = rejected(mediagen.truncate(portrait_720, tmp_path / "cut.mp4", 0.6))
    assert error.code == "corrupt" and "truncated" in error.message


def test_too_short(media_dir):
    clip = mediagen.make_clip(media_dir / "short.mp4", width=160, height=90, seconds=0.5, audio=False)
    assert rejected(clip).code == "too_short"


def test_too_long(media_dir):
    clip = mediagen.make_clip(media_dir / "long.mp4", width=64, height=64, seconds=70, fps=5, audio=False,
                              pattern="black")
    error = rejected(clip)
    assert error.code == "too_long" and "60" in error.message


def test_dimensions_too_large(tmp_path):
    error = rejected(mediagen.make_huge_frame(tmp_path / "huge.mp4"))
    assert error.code == "dimensions_too_large" and "8000x8000" in error.message


def test_fps_too_high(media_dir):
    clip = mediagen.make_clip(media_dir / "fast.mp4", width=160, height=90, seconds=1.5, fps=240, audio=False)
    assert rejected(clip).code == "fps_too_high"


# ------------------------------------------------------------------- no network, no other files

def _hostile_files(tmp_path: Path, port: int) -> list[Path]:
    url = f"http://127.0.0.1:{port}/x.ts"
    hls = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{}\n#EXTINF:2,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    files = {
        "evil.m3u8": hls.format(url),
        "evil.mp4": hls.format(url),
        "evil_concat.mp4": f"ffconcat version 1.0\nfile '{url}'\nfile '/etc/passwd'\n",
        "evil.ffconcat": f"ffconcat version 1.0\nfile '{url}'\n",
    }
    paths = []
    for name, body in files.items():
        (tmp_path / name).write_text(body)
        paths.append(tmp_path / name)
    return paths


def test_hostile_references_never_connect(tmp_path, listener):
    port = listener.getsockname()[1]
    for path in _hostile_files(tmp_path, port):
        assert rejected(path).code == "playlist_or_reference"
        assert not connection_attempted(listener), f"probing {path.name} connected"
        # The ladder's ffmpeg refuses the same file even without the probe in front of it.
        with pytest.raises(FFmpegError):
            run_ffmpeg(["-i", str(path), "-f", "null", "-"], timeout_s=20)
        with pytest.raises(FFmpegError):
            transcode_ladder(path, tmp_path / f"out_{path.stem}", plan_ladder(640, 360), has_audio=True,
                             duration_s=4, timeout_s=20, max_output_bytes=10**7)
        assert not connection_attempted(listener), f"ffmpeg on {path.name} connected"


def test_listener_would_see_an_unhardened_ffmpeg(tmp_path, listener):
    """Control: an ffmpeg allowed to use http does connect, so the check above means something."""
    playlist = tmp_path / "control.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n"
                        f"http://127.0.0.1:{listener.getsockname()[1]}/x.ts\n#EXT-X-ENDLIST\n")
    proc = subprocess.Popen([mediagen.FFMPEG, "-nostdin", "-loglevel", "quiet", "-rw_timeout", "5000000",
                             "-protocol_whitelist", "file,http,tcp", "-i", str(playlist), "-f", "null", "-"],
                            stdin=subprocess.DEVNULL)
    try:
        readable, _, _ = select.select([listener], [], [], 20)
        assert readable and connection_attempted(listener)
    finally:
        proc.kill()
        proc.wait()
