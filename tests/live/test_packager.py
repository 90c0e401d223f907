"""The LL-HLS packager on real ffmpeg fragmented-MP4 output: parts, segments, window, playlists."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import av
import pytest

from clipfeed.live.packager import (
    INIT, PLAYLIST, Packager, PackagerConfig, iter_boxes, package_file, playlist_position)
from clipfeed.media.ffmpeg_live import LiveFFmpeg, LiveRungPlan, live_rung_args
from tests.mediagen import ffmpeg

PART_S = 0.25


def _flv(path: Path, *, seconds: float, gop: int, fps: int = 30) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s=320x240:r={fps}", "-f", "lavfi", "-i", "sine=sample_rate=48000",
           "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
           "-g", str(gop), "-keyint_min", str(gop), "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(path))
    return path


def _fmp4(flv: Path, *, copy: bool = True) -> bytes:
    """What an ingest rung's ffmpeg writes for this FLV (the real command line, real process)."""

    async def run() -> bytes:
        plan = LiveRungPlan("src", copy_video=copy, width=160, height=120, video_kbps=200)
        proc = LiveFFmpeg(live_rung_args(plan, part_s=PART_S, preset="ultrafast"), time_limit_s=60)
        await proc.start()

        async def feed():
            proc.stdin.write(flv.read_bytes())
            await proc.stdin.drain()
            await proc.close_input()

        output, _ = await asyncio.gather(proc.stdout.read(), feed())
        assert await proc.wait(30) == 0, proc.stderr_tail
        return output

    return asyncio.run(run())


@pytest.fixture(scope="module")
def one_second_gop(tmp_path_factory) -> bytes:
    return _fmp4(_flv(tmp_path_factory.mktemp("flv") / "gop1.flv", seconds=7, gop=30))


def _parts(text: str) -> list[tuple[float, str, bool]]:
    return [(float(d), uri, bool(ind)) for d, uri, ind in
            re.findall(r'#EXT-X-PART:DURATION=([\d.]+),URI="([^"]+)"(,INDEPENDENT=YES)?', text)]


def _segments(text: str) -> list[tuple[float, str]]:
    return [(float(d), uri) for d, uri in re.findall(r"#EXTINF:([\d.]+),\n(s\d+\.m4s)", text)]


def test_parts_and_segments_of_a_one_second_gop(one_second_gop, tmp_path):
    config = PackagerConfig(part_target_s=0.334, segment_s=1.0, max_segment_s=2.0, window_segments=20)
    packager = package_file(one_second_gop, tmp_path, config)
    text = (tmp_path / PLAYLIST).read_text()
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n")
    assert "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002," in text
    assert "#EXT-X-PART-INF:PART-TARGET=0.334" in text and '#EXT-X-MAP:URI="init.mp4"' in text
    assert "#EXT-X-MEDIA-SEQUENCE:0" in text and text.rstrip().endswith("#EXT-X-ENDLIST")
    assert "PRELOAD-HINT" not in text  # an ended stream hints nothing

    segments = _segments(text)
    assert len(segments) == 7, text
    # Every segment is one GOP: ~1 s, starting on an independent part; parts are ~PART_S and
    # never longer than the declared target.
    for duration, _uri in segments[:-1]:
        assert duration == pytest.approx(1.0, abs=0.04)
    parts = _parts(text)
    assert parts and all(d <= 0.334 for d, _, _ in parts)
    assert all(0.15 <= d for d, _, _ in parts[:-1])
    # Parts are listed for the last 3 segments only (just before their EXTINF), each segment's
    # first part is independent, and parts are numbered across segments.
    blocks = {int(m.group(2)): _parts(m.group(1)) for m in re.finditer(r"((?:#EXT-X-PART:.*\n)+)#EXTINF:[\d.]+,\ns(\d+)\.m4s", text)}
    assert sorted(blocks) == [4, 5, 6]
    numbers = [int(uri[4:-4]) for _, uri, _ in parts]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    for msn in sorted(blocks):
        mine = blocks[msn]
        assert mine[0][2] and not any(ind for _, _, ind in mine[1:])
        assert sum(d for d, _, _ in mine) == pytest.approx(dict((u, d) for d, u in segments)[f"s{msn}.m4s"], abs=1e-3)
        # The segment file is its parts, byte for byte.
        joined = b"".join((tmp_path / uri).read_bytes() for _, uri, _ in mine)
        assert (tmp_path / f"s{msn}.m4s").read_bytes() == joined

    # The media decodes: init + a segment, and init + an independent part.
    init = (tmp_path / INIT).read_bytes()
    with av.open(io.BytesIO(init + (tmp_path / "s2.m4s").read_bytes()), format="mp4") as c:
        assert sum(1 for _ in c.decode(video=0)) == 30
    with av.open(io.BytesIO(init + (tmp_path / blocks[4][0][1]).read_bytes()), format="mp4") as c:
        assert sum(1 for _ in c.decode(video=0)) >= 7
    assert packager.init.codecs.startswith("avc1.") and packager.init.codecs.endswith(",mp4a.40.2")
    assert (packager.init.video.width, packager.init.video.height) == (320, 240)


def test_live_playlist_window_preload_hint_and_position(one_second_gop, tmp_path):
    config = PackagerConfig(part_target_s=0.334, segment_s=1.0, max_segment_s=2.0, window_segments=2)
    packager = Packager(tmp_path, config)
    pos = 0
    seen_positions = []
    for kind, _payload, end in iter_boxes(one_second_gop):
        packager.feed_box(kind, one_second_gop[pos:end])
        pos = end
        text = (tmp_path / PLAYLIST).read_text() if (tmp_path / PLAYLIST).exists() else ""
        if packager.segments:
            msn, parts = packager.position()
            seen_positions.append((msn, parts))
            # The playlist written so far tells another process the same position.
            parsed = playlist_position(text)
            assert parsed == (msn, parts, False, packager.next_part)
            hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part(\d+)\.m4s"', text)
            assert hint and int(hint.group(1)) == packager.next_part
            assert packager.has_part(packager.next_part - 1) and not packager.has_part(packager.next_part)
            assert packager.has(msn, parts - 1) and not packager.has(msn, parts) and not packager.has(msn + 1, 0)
    packager.close()
    text = (tmp_path / PLAYLIST).read_text()
    # Sliding window: two complete segments (plus the open one) listed; the media sequence moved.
    assert re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1) == "4"
    assert [u for _, u in _segments(text)] == ["s4.m4s", "s5.m4s"]
    # Files leave the disk one window after leaving the playlist.
    assert not (tmp_path / "s0.m4s").exists() and not (tmp_path / "part1.m4s").exists()
    assert (tmp_path / "s2.m4s").exists() and (tmp_path / "s3.m4s").exists()
    assert seen_positions[-1][0] == 6


def test_sparse_keyframes_are_cut_at_the_target_duration(tmp_path):
    data = _fmp4(_flv(tmp_path / "gop4.flv", seconds=8, gop=120))
    package_file(data, tmp_path / "out", PackagerConfig(max_segment_s=2.0, window_segments=20))
    text = (tmp_path / "out" / PLAYLIST).read_text()
    segments = _segments(text)
    assert all(d <= 2.0 + 1e-3 for d, _ in segments)
    parts = _parts(text)
    # Only parts starting a GOP (every 4 s) are independent; a force-cut segment starts without one.
    firsts = [_parts(m.group(1))[0] for m in re.finditer(r"((?:#EXT-X-PART:.*\n)+)#EXTINF", text)]
    assert any(ind for _, _, ind in firsts) and any(not ind for _, _, ind in firsts)
    assert sum(1 for _, _, ind in parts if ind) <= 2


def test_encoded_rung_takes_keyframes_from_the_source(tmp_path):
    data = _fmp4(_flv(tmp_path / "gop1.flv", seconds=4, gop=30), copy=False)
    packager = package_file(data, tmp_path / "enc", PackagerConfig(window_segments=20))
    assert (packager.init.video.width, packager.init.video.height) == (160, 120)
    durations = [d for d, _ in _segments((tmp_path / "enc" / PLAYLIST).read_text())]
    assert len(durations) == 4 and all(d == pytest.approx(1.0, abs=0.04) for d in durations[:-1])
