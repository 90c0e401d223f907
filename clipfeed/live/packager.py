"""Our LL-HLS packager: ffmpeg's fragmented MP4 in, CMAF parts + segments + playlists out.

ffmpeg's HLS muxer writes no partial segments, so each rung's ffmpeg writes one fragmented MP4
stream (``clipfeed.media.ffmpeg_live``: a fragment at every keyframe and every ~``part_s``) and
this module cuts it:

* ``ftyp`` + ``moov`` -> ``init.mp4`` (``EXT-X-MAP``); codecs and size are read from it;
* every ``moof``+``mdat`` pair -> one **part** ``part<n>.m4s`` (``EXT-X-PART``, ``INDEPENDENT=YES``
  when it starts on a keyframe), numbered across segments so the ``EXT-X-PRELOAD-HINT`` name is
  right whichever segment the next part lands in; a fragment without video (audio that ran
  ahead) is carried into the next part;
* a **segment** ``s<msn>.m4s`` (``EXTINF``) is the concatenation of its parts; a new one starts at
  the first keyframe once the open one holds ``segment_s``, or without a keyframe once it would
  exceed ``max_segment_s`` (= ``EXT-X-TARGETDURATION``).

The media playlist carries ``EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=...``,
``EXT-X-PART-INF``, ``EXT-X-PROGRAM-DATE-TIME`` per segment, parts for the last few segments,
and an ``EXT-X-PRELOAD-HINT`` naming the next part (playback holds a request for it until it
exists). It is a sliding window of ``window_segments``; files leave the disk a window later.
Every file is written to a temporary name and renamed, so a reader never sees half a file.

A packager lives in the ingest's event loop; ``active()`` finds it for blocking playlist reloads
(``wait_for``, an ``asyncio.Condition`` notified on every new part). Without one (the ingest runs
in another process) playback falls back to re-reading the playlist (``playlist_position``).
"""

from __future__ import annotations

import asyncio
import math
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

PLAYLIST = "index.m3u8"
INIT = "init.mp4"
MASTER = "master.m3u8"
PARTS_FOR_SEGMENTS = 3  # completed segments that keep their EXT-X-PART lines in the playlist
MAX_BOX = 64 * 1024 * 1024
SYNC_SAMPLE_MASK = 0x00010000  # sample_is_non_sync_sample


class Mp4Error(ValueError):
    pass


def iter_boxes(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[tuple[str, int, int]]:
    """(type, payload start, payload end) for each box in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise Mp4Error("truncated large box")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise Mp4Error("box overruns its parent")
        yield kind.decode("latin-1"), pos + header, pos + size
        pos += size


def _child(data, start: int, end: int, kind: str) -> tuple[int, int] | None:
    for k, s, e in iter_boxes(data, start, end):
        if k == kind:
            return s, e
    return None


@dataclass
class TrackInfo:
    track_id: int
    handler: str
    timescale: int
    default_duration: int = 0
    default_flags: int = 0
    codec: str = ""
    width: int = 0
    height: int = 0


@dataclass
class InitInfo:
    tracks: dict[int, TrackInfo]

    @property
    def video(self) -> TrackInfo | None:
        return next((t for t in self.tracks.values() if t.handler == "vide"), None)

    @property
    def codecs(self) -> str:
        return ",".join(t.codec for t in sorted(self.tracks.values(), key=lambda t: t.handler != "vide") if t.codec)


def parse_init(data: bytes) -> InitInfo:
    moov = _child(data, 0, len(data), "moov")
    if moov is None:
        raise Mp4Error("init segment without moov")
    tracks: dict[int, TrackInfo] = {}
    trex: dict[int, tuple[int, int]] = {}
    for kind, s, e in iter_boxes(data, *moov):
        if kind == "mvex":
            for k2, s2, e2 in iter_boxes(data, s, e):
                if k2 == "trex" and e2 - s2 >= 24:
                    tid, _idx, dur, _size, flags = struct.unpack_from(">IIIII", data, s2 + 4)
                    trex[tid] = (dur, flags)
        if kind != "trak":
            continue
        tkhd = _child(data, s, e, "tkhd")
        mdia = _child(data, s, e, "mdia")
        if tkhd is None or mdia is None:
            continue
        version = data[tkhd[0]]
        track_id = struct.unpack_from(">I", data, tkhd[0] + (20 if version == 1 else 12))[0]
        mdhd = _child(data, *mdia, "mdhd")
        hdlr = _child(data, *mdia, "hdlr")
        if mdhd is None or hdlr is None:
            continue
        mv = data[mdhd[0]]
        timescale = struct.unpack_from(">I", data, mdhd[0] + (20 if mv == 1 else 12))[0]
        handler = bytes(data[hdlr[0] + 8:hdlr[0] + 12]).decode("latin-1")
        info = TrackInfo(track_id, handler, timescale or 1)
        stsd = _find_path(data, mdia, ("minf", "stbl", "stsd"))
        if stsd is not None:
            _read_sample_entry(data, stsd, info)
        tracks[track_id] = info
    for tid, (dur, flags) in trex.items():
        if tid in tracks:
            tracks[tid].default_duration, tracks[tid].default_flags = dur, flags
    if not tracks:
        raise Mp4Error("init segment without tracks")
    return InitInfo(tracks)


def _find_path(data, span: tuple[int, int], path: tuple[str, ...]) -> tuple[int, int] | None:
    for kind in path:
        span = _child(data, *span, kind)
        if span is None:
            return None
    return span


def _read_sample_entry(data, stsd: tuple[int, int], info: TrackInfo) -> None:
    for kind, s, e in iter_boxes(data, stsd[0] + 8, stsd[1]):  # after version/flags + entry count
        if kind in ("avc1", "avc3"):
            info.width, info.height = struct.unpack_from(">HH", data, s + 24)
            avcc = _child(data, s + 78, e, "avcC")
            if avcc is not None and avcc[1] - avcc[0] >= 4:
                p, c, lvl = data[avcc[0] + 1], data[avcc[0] + 2], data[avcc[0] + 3]
                info.codec = f"{kind}.{p:02x}{c:02x}{lvl:02x}"
            else:
                info.codec = kind
        elif kind == "mp4a":
            info.codec = "mp4a.40.2"  # what clipfeed's rungs carry (AAC-LC, copied or encoded)
        return


@dataclass
class FragmentInfo:
    video_start: float | None = None   # seconds (tfdt of the video track)
    video_duration: float = 0.0
    independent: bool = False


def parse_fragment(data: bytes, moof: tuple[int, int], init: InitInfo) -> FragmentInfo:
    out = FragmentInfo()
    for kind, s, e in iter_boxes(data, *moof):
        if kind != "traf":
            continue
        tfhd = _child(data, s, e, "tfhd")
        if tfhd is None:
            raise Mp4Error("traf without tfhd")
        flags = struct.unpack_from(">I", data, tfhd[0])[0] & 0xFFFFFF
        track_id = struct.unpack_from(">I", data, tfhd[0] + 4)[0]
        track = init.tracks.get(track_id)
        if track is None or track.handler != "vide":
            continue
        pos = tfhd[0] + 8
        default_duration, default_flags = track.default_duration, track.default_flags
        if flags & 0x1:
            pos += 8
        if flags & 0x2:
            pos += 4
        if flags & 0x8:
            default_duration = struct.unpack_from(">I", data, pos)[0]
            pos += 4
        if flags & 0x10:
            pos += 4
        if flags & 0x20:
            default_flags = struct.unpack_from(">I", data, pos)[0]
        tfdt = _child(data, s, e, "tfdt")
        if tfdt is not None:
            version = data[tfdt[0]]
            base = struct.unpack_from(">Q" if version == 1 else ">I", data, tfdt[0] + 4)[0]
            out.video_start = base / track.timescale
        total = 0
        first_flags: int | None = None
        for k2, s2, _e2 in iter_boxes(data, s, e):
            if k2 != "trun":
                continue
            tflags = struct.unpack_from(">I", data, s2)[0] & 0xFFFFFF
            count = struct.unpack_from(">I", data, s2 + 4)[0]
            pos = s2 + 8
            if tflags & 0x1:
                pos += 4
            first_sample_flags = None
            if tflags & 0x4:
                first_sample_flags = struct.unpack_from(">I", data, pos)[0]
                pos += 4
            per_sample = 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if tflags & bit)
            if pos + per_sample * count > _e2:
                raise Mp4Error("trun overruns its box")
            for i in range(count):
                duration, sample_flags = default_duration, default_flags
                p = pos
                if tflags & 0x100:
                    duration = struct.unpack_from(">I", data, p)[0]
                    p += 4
                if tflags & 0x200:
                    p += 4
                if tflags & 0x400:
                    sample_flags = struct.unpack_from(">I", data, p)[0]
                if i == 0 and first_flags is None:
                    first_flags = first_sample_flags if first_sample_flags is not None else sample_flags
                total += duration
                pos += per_sample
        out.video_duration = total / track.timescale
        out.independent = first_flags is not None and not (first_flags & SYNC_SAMPLE_MASK)
    return out


# ------------------------------------------------------------------------------------ packager

@dataclass
class Part:
    msn: int
    index: int   # within its segment
    seq: int     # across the whole publish session: the file name
    duration: float
    independent: bool
    size: int

    @property
    def uri(self) -> str:
        return f"part{self.seq}.m4s"


@dataclass
class Segment:
    msn: int
    started_wall: float  # wall-clock time the segment's first frame was captured (approximately)
    parts: list[Part] = field(default_factory=list)
    duration: float = 0.0
    size: int = 0
    complete: bool = False

    @property
    def uri(self) -> str:
        return f"s{self.msn}.m4s"


@dataclass(frozen=True)
class PackagerConfig:
    part_target_s: float = 0.334
    segment_s: float = 1.0
    max_segment_s: float = 2.0
    window_segments: int = 10


_registry: dict[tuple[str, str], "Packager"] = {}


def active(rung_dir: Path) -> "Packager | None":
    return _registry.get(("dir", str(rung_dir)))


class Packager:
    """Cuts one rung's fMP4 byte stream into LL-HLS parts and segments in ``out_dir``."""

    def __init__(self, out_dir: Path, config: PackagerConfig | None = None):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config or PackagerConfig()
        self.init: InitInfo | None = None
        self.segments: list[Segment] = []
        self.next_msn = 0
        self.next_part = 0
        self.ended = False
        self.bytes_total = 0
        self.seconds_total = 0.0
        self.max_bitrate = 0
        self._pending = bytearray()  # fragments without video, carried into the next part
        self._segment_bytes = bytearray()
        self._init_bytes = bytearray()
        self._moof: bytes | None = None
        self._forget: list[Segment] = []
        self._changed: asyncio.Condition | None = None
        _registry[("dir", str(self.dir))] = self

    # -- input

    def feed_box(self, kind: str, box: bytes) -> bool:
        """Take one top-level box; True when a new part was published."""
        if kind in ("ftyp", "moov"):
            self._init_bytes += box
            if kind == "moov":
                self.init = parse_init(bytes(self._init_bytes))
                _write_atomic(self.dir / INIT, bytes(self._init_bytes))
            return False
        if self.init is None:
            return False
        if kind in ("styp", "sidx", "prft", "free", "skip", "mfra"):
            return False
        if kind == "moof":
            self._moof = box
            return False
        if kind == "mdat":
            moof = self._moof
            if moof is None:
                raise Mp4Error("mdat without moof")
            self._moof = None
            return self._fragment(moof + box, len(moof))
        return False

    def _fragment(self, data: bytes, moof_size: int) -> bool:
        info = parse_fragment(data, (8, moof_size), self.init)
        if info.video_duration <= 0:
            self._pending += data
            return False
        body = bytes(self._pending) + data
        self._pending.clear()
        open_seg = self.segments[-1] if self.segments and not self.segments[-1].complete else None
        if open_seg is not None and open_seg.parts:
            # A keyframe starts a segment once the open one is long enough, or at once when the
            # open one was force-cut without a keyframe (so segments line up with GOPs again).
            cut_on_key = info.independent and (open_seg.duration >= self.config.segment_s - 0.05
                                               or not open_seg.parts[0].independent)
            forced = open_seg.duration + info.video_duration > self.config.max_segment_s + 0.001
            if cut_on_key or forced:
                self._close_segment(open_seg)
                open_seg = None
        if open_seg is None:
            open_seg = Segment(self.next_msn, time.time() - info.video_duration)
            self.next_msn += 1
            self.segments.append(open_seg)
            self._segment_bytes.clear()
        part = Part(open_seg.msn, len(open_seg.parts), self.next_part, info.video_duration, info.independent,
                    len(body))
        self.next_part += 1
        _write_atomic(self.dir / part.uri, body)
        self._segment_bytes += body
        open_seg.parts.append(part)
        open_seg.duration += part.duration
        open_seg.size += len(body)
        self.bytes_total += len(body)
        self.seconds_total += part.duration
        self._write_playlist()
        return True

    def _close_segment(self, seg: Segment) -> None:
        _write_atomic(self.dir / seg.uri, bytes(self._segment_bytes))
        self._segment_bytes.clear()
        seg.complete = True
        if seg.duration > 0:
            self.max_bitrate = max(self.max_bitrate, int(seg.size * 8 / seg.duration))
        self._trim()

    def _trim(self) -> None:
        complete = [s for s in self.segments if s.complete]
        excess = len(complete) - self.config.window_segments
        if excess <= 0:
            return
        # Keep the dropped segments' files for another window: players still fetching them
        # (or holding them in a CDN-less cache) must not see them vanish under their feet.
        for seg in self.segments[:excess]:
            self._forget.append(seg)
        del self.segments[:excess]
        while len(self._forget) > self.config.window_segments:
            old = self._forget.pop(0)
            for name in [old.uri, *(p.uri for p in old.parts)]:
                (self.dir / name).unlink(missing_ok=True)

    def finish(self) -> None:
        """The publisher stopped: close the open segment and end the playlist."""
        if self.segments and not self.segments[-1].complete and self.segments[-1].parts:
            self._close_segment(self.segments[-1])
        self.segments = [s for s in self.segments if s.complete]
        self.ended = True
        self._write_playlist()

    def close(self) -> None:
        if _registry.get(("dir", str(self.dir))) is self:
            del _registry[("dir", str(self.dir))]

    # -- state for blocking reloads

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def announce(self) -> None:
        cond = self.changed
        async with cond:
            cond.notify_all()

    def has(self, msn: int, part: int | None) -> bool:
        """Whether the playlist already holds segment ``msn`` (complete) or its part ``part``."""
        if self.ended:
            return True
        for seg in reversed(self.segments):
            if seg.msn < msn:
                return False
            if seg.msn == msn:
                return seg.complete if part is None else (seg.complete or part < len(seg.parts))
        return False

    def has_part(self, seq: int) -> bool:
        """Whether part file number ``seq`` was written (or never will be: the stream ended)."""
        return self.ended or seq < self.next_part

    def position(self) -> tuple[int, int]:
        """(msn of the newest segment, parts it has) — (-1, 0) before the first part."""
        if not self.segments:
            return -1, 0
        last = self.segments[-1]
        return last.msn, len(last.parts)

    # -- playlist

    def playlist_text(self) -> str:
        cfg = self.config
        target = max(1, math.ceil(cfg.max_segment_s))
        lines = [
            "#EXTM3U", "#EXT-X-VERSION:9", f"#EXT-X-TARGETDURATION:{target}",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
            f"PART-HOLD-BACK={3 * cfg.part_target_s:.3f},HOLD-BACK={3 * target:.3f}",
            f"#EXT-X-PART-INF:PART-TARGET={cfg.part_target_s:.3f}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.segments[0].msn if self.segments else 0}",
            f'#EXT-X-MAP:URI="{INIT}"',
        ]
        complete = [s for s in self.segments if s.complete]
        with_parts = {s.msn for s in complete[-PARTS_FOR_SEGMENTS:]}
        for seg in self.segments:
            lines.append("#EXT-X-PROGRAM-DATE-TIME:" + _iso(seg.started_wall))
            if not seg.complete or seg.msn in with_parts:
                for part in seg.parts:
                    lines.append(f'#EXT-X-PART:DURATION={part.duration:.5f},URI="{part.uri}"'
                                 + (",INDEPENDENT=YES" if part.independent else ""))
            if seg.complete:
                lines.append(f"#EXTINF:{seg.duration:.5f},")
                lines.append(seg.uri)
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        elif self.segments:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part{self.next_part}.m4s"')
        return "\n".join(lines) + "\n"

    def _write_playlist(self) -> None:
        _write_atomic(self.dir / PLAYLIST, self.playlist_text().encode())

    # -- driving from a stream

    async def consume(self, reader: asyncio.StreamReader) -> None:
        """Read top-level boxes from ``reader`` (ffmpeg's stdout) until it closes."""
        while True:
            try:
                header = await reader.readexactly(8)
            except asyncio.IncompleteReadError:
                return
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                size = struct.unpack(">Q", await reader.readexactly(8))[0] - 8
                header += struct.pack(">Q", size + 8)
            if size < 8 or size > MAX_BOX:
                raise Mp4Error(f"box of {size} bytes from ffmpeg")
            body = await reader.readexactly(size - len(header)) if size > len(header) else b""
            if self.feed_box(kind.decode("latin-1"), header + body):
                await self.announce()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def package_file(data: bytes, out_dir: Path, config: PackagerConfig | None = None) -> Packager:
    """Cut a complete fMP4 byte string (used by the unit tests on real ffmpeg output)."""
    packager = Packager(out_dir, config)
    pos = 0
    for kind, _payload, end in iter_boxes(data):
        packager.feed_box(kind, data[pos:end])
        pos = end
    packager.finish()
    packager.close()
    return packager


def playlist_position(text: str) -> tuple[int, int, bool, int]:
    """(newest segment msn, its parts or -1 when it is complete, ended, next part number) from a
    media playlist written by ``Packager`` (for blocking reloads when the packager runs in
    another process)."""
    msn = 0
    parts = 0
    ended = False
    next_part = 0
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PART:"):
            parts += 1
            uri = line.split('URI="', 1)[1].split('"', 1)[0]
            next_part = max(next_part, int(uri[4:-4]) + 1)
        elif line.startswith("#EXT-X-PRELOAD-HINT:"):
            next_part = max(next_part, int(line.split('URI="part', 1)[1].split(".", 1)[0]))
        elif line.startswith("s") and line.endswith(".m4s"):
            msn, parts = msn + 1, 0
        elif line == "#EXT-X-ENDLIST":
            ended = True
    if parts:
        return msn, parts, ended, next_part
    return msn - 1, -1, ended, next_part
