"""The live ingest: RTMP publish -> key check -> ffmpeg rungs -> LL-HLS packager; recording -> replay.

``LiveIngest`` runs the RTMP server (``clipfeed serve`` starts it in the API's event loop,
``clipfeed ingest`` on its own). Its publish gate checks the stream key with
``live.service.authorize_publish`` (which claims the stream atomically) before any media is
read, and builds a ``StreamSession`` for the accepted publisher:

* the publisher's RTMP audio/video messages are remuxed into FLV tags (the message payload *is*
  the FLV tag body) and written to ``recording.flv`` and to each rung's ffmpeg stdin;
* rungs start once the codec configuration (AVC and AAC sequence headers) has arrived: the top
  rung copies H.264 that is within limits (else encodes it), plus one lower rung for weak
  networks; each rung's fragmented MP4 goes through a ``Packager`` into
  ``data_dir/live/<stream_id>/<rung>/`` and ``master.m3u8`` lists the rungs once each has a part;
* scaling rule: every few seconds the session reads the stream's viewer count and, once it
  reaches ``live_scale_viewers``, starts a middle rung at the next keyframe (the FLV header and
  sequence headers are replayed to it, timestamps are copied so it lines up) and rewrites the
  master playlist;
* the claim is kept fresh with ``publish_heartbeat``; when the creator ends the stream the
  publisher is disconnected;
* when the publisher leaves, the rungs drain, playlists get ``EXT-X-ENDLIST`` and
  ``publish_ended`` receives the recording (it becomes a replay video).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import struct
from collections import deque
from pathlib import Path

import clipfeed.db.models  # noqa: F401 - every table: `clipfeed ingest` writes rows with foreign keys
from clipfeed.config import Settings
from clipfeed.db import Database
from clipfeed.live import amf
from clipfeed.live.packager import MASTER, Packager, PackagerConfig, _write_atomic
from clipfeed.live.rtmp import AUDIO, VIDEO, PublishRefusal, RtmpLimits, RtmpServer
from clipfeed.media.ffmpeg_live import LiveFFmpeg, LiveRungPlan, live_rung_args, scaled_size

log = logging.getLogger("clipfeed.live.ingest")

FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09" + b"\x00\x00\x00\x00"
FLV_SCRIPT = 18
AVC_CODEC_ID = 7
AAC_FORMAT = 10
DRAIN_S = 10.0
# Media held before the codec configuration is complete (a publisher sending no audio: we wait
# this many video messages for an AAC sequence header before starting without audio).
MAX_EARLY_MESSAGES = 300
MAX_EARLY_BYTES = 16 * 1024 * 1024
AUDIO_WAIT_MESSAGES = 30
# The application an nginx edge pushes already-authorized streams to (deploy/nginx-rtmp.conf).
RELAY_APP = "relay"


def flv_tag(type_id: int, timestamp_ms: int, payload: bytes) -> bytes:
    ts = timestamp_ms & 0xFFFFFFFF
    header = bytes([type_id]) + len(payload).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big") \
        + bytes([ts >> 24]) + b"\x00\x00\x00"
    return header + payload + struct.pack(">I", 11 + len(payload))


def is_video_keyframe(payload: bytes) -> bool:
    return bool(payload) and payload[0] >> 4 == 1


def is_sequence_header(type_id: int, payload: bytes) -> bool:
    if type_id == VIDEO:
        return len(payload) > 1 and payload[0] & 0x0F == AVC_CODEC_ID and payload[1] == 0
    return len(payload) > 1 and payload[0] >> 4 == AAC_FORMAT and payload[1] == 0


class Rung:
    """One ffmpeg + its packager, fed FLV.

    Writes never block the publisher: tags queue in a per-rung backlog drained by a task, so a
    rung whose encoder falls behind (CPU) delays only itself. A rung more than
    ``MAX_BACKLOG_BYTES`` behind is dropped (killed, left out of the master playlist)."""

    MAX_BACKLOG_BYTES = 16 * 1024 * 1024

    def __init__(self, plan: LiveRungPlan, out_dir: Path, settings: Settings):
        self.plan = plan
        self.settings = settings
        self.packager = Packager(out_dir, PackagerConfig(
            part_target_s=settings.live_part_target_s, segment_s=settings.live_segment_s,
            max_segment_s=settings.live_max_segment_s, window_segments=settings.live_window_segments))
        self.ffmpeg = LiveFFmpeg(live_rung_args(plan, part_s=settings.live_part_s, preset=settings.live_x264_preset),
                                 time_limit_s=settings.rtmp_max_session_s + 60, ffmpeg=settings.ffmpeg_path)
        self.reader: asyncio.Task | None = None
        self.pump: asyncio.Task | None = None
        self.backlog: deque[bytes | None] = deque()
        self.backlog_bytes = 0
        self._wake = asyncio.Event()
        self.broken = False

    async def start(self, prelude: bytes) -> None:
        await self.ffmpeg.start()
        loop = asyncio.get_running_loop()
        self.reader = loop.create_task(self._read())
        self.pump = loop.create_task(self._pump())
        await self.write(prelude)

    async def _read(self) -> None:
        try:
            await self.packager.consume(self.ffmpeg.stdout)
        except Exception:
            log.exception("live rung %s: packaging failed", self.plan.name)
            self._break()

    def _break(self) -> None:
        self.broken = True
        self.backlog.clear()
        self.backlog_bytes = 0
        self.ffmpeg.kill()

    async def write(self, data: bytes) -> None:
        if self.broken:
            return
        if self.backlog_bytes + len(data) > self.MAX_BACKLOG_BYTES:
            log.warning("live rung %s: ffmpeg fell %d bytes behind; dropping the rung", self.plan.name,
                        self.backlog_bytes)
            self._break()
            return
        self.backlog.append(data)
        self.backlog_bytes += len(data)
        self._wake.set()

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.backlog:
                data = self.backlog.popleft()
                if data is None:
                    await self.ffmpeg.close_input()
                    return
                self.backlog_bytes -= len(data)
                try:
                    self.ffmpeg.stdin.write(data)
                    await self.ffmpeg.stdin.drain()
                except (ConnectionError, OSError):
                    log.warning("live rung %s: ffmpeg stopped reading: %s", self.plan.name,
                                self.ffmpeg.stderr_tail.decode(errors="replace")[-300:])
                    self._break()
                    return

    async def finish(self) -> None:
        if self.pump is not None and not self.pump.done():
            self.backlog.append(None)  # end of input once the backlog is written
            self._wake.set()
            try:
                await asyncio.wait_for(self.pump, DRAIN_S)
            except asyncio.TimeoutError:
                self.ffmpeg.kill()
        await self.ffmpeg.close_input()
        code = await self.ffmpeg.wait(DRAIN_S)
        if self.reader is not None:
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(self.reader, DRAIN_S)
        if code:
            log.info("live rung %s: ffmpeg exited %s: %s", self.plan.name, code,
                     self.ffmpeg.stderr_tail.decode(errors="replace")[-300:])
        self.packager.finish()
        self.packager.close()

    def kill(self) -> None:
        self.ffmpeg.kill()


class StreamSession:
    """One accepted publish (the RTMP server's ``PublishSink``)."""

    def __init__(self, ingest: "LiveIngest", stream_id: str):
        self.ingest = ingest
        self.settings = ingest.settings
        self.stream_id = stream_id
        self.dir = self.settings.resolved_live_dir / stream_id  # = live.service.live_dir
        self.meta: dict = {}
        self.video_config: bytes | None = None
        self.audio_config: bytes | None = None
        self.video_format: int | None = None
        self.audio_format: int | None = None
        self.early: list[tuple[int, int, bytes]] = []
        self.rungs: list[Rung] = []
        self.master_written: set[str] = set()
        self.recording_path = self.dir / "recording.flv"
        self.recording = None
        self.recorded = 0
        self.finished = False
        self.scaled = False
        self.pending_rungs: list[LiveRungPlan] = []
        self.source_size: tuple[int, int] = (0, 0)
        self._watch: asyncio.Task | None = None
        self.stop_requested = asyncio.Event()

    def prepare(self) -> None:
        # A new publish session starts from a clean folder (the previous one's replay was handed over).
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.recording = open(self.recording_path, "wb")
        self.recording.write(FLV_HEADER)
        # Counted, so the file never exceeds live_max_recording_bytes (the replay's size cap).
        self.recorded = len(FLV_HEADER)
        self._watch = asyncio.get_running_loop().create_task(self._supervise())

    # -- PublishSink

    async def metadata(self, values: dict) -> None:
        self.meta = values
        self._record(flv_tag(FLV_SCRIPT, 0, amf.encode("onMetaData", values)))

    async def media(self, type_id: int, timestamp_ms: int, payload: bytes) -> None:
        if self.finished or not payload:
            return
        if self.stop_requested.is_set():
            raise ConnectionAbortedError("the stream was ended")
        tag = flv_tag(type_id, timestamp_ms, payload)
        self._record(tag)
        if type_id == VIDEO and self.video_format is None:
            self.video_format = payload[0] & 0x0F
        if type_id == AUDIO and self.audio_format is None:
            self.audio_format = payload[0] >> 4
        if is_sequence_header(type_id, payload):
            if type_id == VIDEO:
                self.video_config = tag
            else:
                self.audio_config = tag
        if not self.rungs:
            self.early.append((type_id, timestamp_ms, tag))
            if self._ready_to_start():
                await self._start_rungs()
            elif len(self.early) > MAX_EARLY_MESSAGES or sum(len(t) for _, _, t in self.early) > MAX_EARLY_BYTES:
                raise ConnectionAbortedError("no usable video from the publisher")
            return
        if self.pending_rungs and type_id == VIDEO and is_video_keyframe(payload) \
                and not is_sequence_header(type_id, payload):
            await self._start_pending(tag)
            return
        for rung in self.rungs:
            await rung.write(tag)
        self._maybe_write_master()

    async def finish(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        if self._watch is not None:
            self._watch.cancel()
        await asyncio.gather(*(rung.finish() for rung in self.rungs), return_exceptions=True)
        self._maybe_write_master()
        if self.recording is not None:
            self.recording.close()
        recording = self.recording_path if self.recorded > len(FLV_HEADER) and self.video_config else None
        if recording is None:
            self.recording_path.unlink(missing_ok=True)
        await self.ingest.ended(self.stream_id, recording, reason)

    # -- rungs

    def _ready_to_start(self) -> bool:
        if self.video_format is None:
            return False
        if self.video_format == AVC_CODEC_ID and self.video_config is None:
            return False
        videos = sum(1 for t, _, _ in self.early if t == VIDEO)
        if self.audio_format is not None and self.audio_format == AAC_FORMAT and self.audio_config is None:
            return videos > AUDIO_WAIT_MESSAGES
        return self.audio_format is not None or videos > AUDIO_WAIT_MESSAGES

    def _plans(self) -> list[LiveRungPlan]:
        s = self.settings
        width = int(self.meta.get("width") or 0) if isinstance(self.meta.get("width"), (int, float)) else 0
        height = int(self.meta.get("height") or 0) if isinstance(self.meta.get("height"), (int, float)) else 0
        self.source_size = (width, height)
        known = width > 0 and height > 0
        audio = "none" if self.audio_format is None else ("copy" if self.audio_format == AAC_FORMAT else "aac")
        within = (not known) or (max(width, height) <= s.live_passthrough_max_long_edge
                                 and min(width, height) <= s.live_passthrough_max_short_edge)
        plans: list[LiveRungPlan] = []
        if self.video_format == AVC_CODEC_ID and within:
            plans.append(LiveRungPlan("src", copy_video=True, width=width, height=height, audio=audio))
        else:
            w, h = scaled_size(width or 1280, height or 720, s.live_top_short_edge)
            plans.append(LiveRungPlan("src", copy_video=False, width=w, height=h,
                                      video_kbps=s.live_scale_video_kbps * 2, audio=audio))
        if s.live_low_short_edge and (not known or min(width, height) > s.live_low_short_edge):
            w, h = scaled_size(width or 1280, height or 720, s.live_low_short_edge)
            plans.append(LiveRungPlan("low", copy_video=False, width=w, height=h,
                                      video_kbps=s.live_low_video_kbps, audio=audio, audio_kbps=64))
        return plans

    def _prelude(self) -> bytes:
        out = bytearray(FLV_HEADER)
        if self.meta:
            out += flv_tag(FLV_SCRIPT, 0, amf.encode("onMetaData", self.meta))
        return bytes(out)

    async def _start_rungs(self) -> None:
        prelude = self._prelude() + b"".join(tag for _, _, tag in self.early)
        self.early.clear()
        for plan in self._plans():
            rung = Rung(plan, self.dir / plan.name, self.settings)
            self.rungs.append(rung)
            await rung.start(prelude)

    def request_scale_up(self) -> bool:
        """The scaling rule: add the middle rung (from the next keyframe). False when not applicable."""
        s = self.settings
        if self.scaled or not self.rungs or not s.live_scale_short_edge:
            return False
        width, height = self.source_size
        if width and height and min(width, height) <= s.live_scale_short_edge:
            return False
        self.scaled = True
        w, h = scaled_size(width or 1280, height or 720, s.live_scale_short_edge)
        audio = self.rungs[0].plan.audio
        self.pending_rungs.append(LiveRungPlan("mid", copy_video=False, width=w, height=h,
                                               video_kbps=s.live_scale_video_kbps, audio=audio))
        return True

    async def _start_pending(self, keyframe_tag: bytes) -> None:
        prelude = self._prelude() + (self.video_config or b"") + (self.audio_config or b"")
        for plan in self.pending_rungs:
            rung = Rung(plan, self.dir / plan.name, self.settings)
            self.rungs.append(rung)
            await rung.start(prelude)
        self.pending_rungs.clear()
        self.master_written.clear()  # the new rung joins the master once it has a part
        for rung in self.rungs:
            await rung.write(keyframe_tag)

    def _maybe_write_master(self) -> None:
        ready = [r for r in self.rungs if r.packager.segments and r.packager.init is not None and not r.broken]
        names = {r.plan.name for r in ready}
        if not ready or names == self.master_written:
            return
        if not self.master_written and len(ready) < sum(1 for r in self.rungs if not r.broken):
            return  # the first master lists every starting rung
        _write_atomic(self.dir / MASTER, master_playlist(ready).encode())
        self.master_written = names

    def _record(self, tag: bytes) -> None:
        if self.recording is None or self.recording.closed:
            return
        if self.recorded + len(tag) > self.settings.live_max_recording_bytes:
            return
        self.recording.write(tag)
        self.recorded += len(tag)

    async def _supervise(self) -> None:
        """Heartbeat the claim, stop when the creator ended the stream, apply the scaling rule."""
        from clipfeed.live import service

        while True:
            await asyncio.sleep(self.settings.live_ingest_check_s)
            try:
                async with self.ingest.db.transaction() as session:
                    alive = await service.publish_heartbeat(session, self.stream_id)
            except Exception:
                log.exception("live %s: heartbeat failed", self.stream_id)
                continue
            if not alive:
                log.info("live %s: the stream was ended; disconnecting the publisher", self.stream_id)
                self.stop_requested.set()
                return
            viewers = service.viewer_count(self.stream_id, self.settings)
            if viewers >= self.settings.live_scale_viewers and self.request_scale_up():
                log.info("live %s: %d viewers, adding a rung", self.stream_id, viewers)


def master_playlist(rungs: list[Rung]) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:9"]
    for rung in sorted(rungs, key=lambda r: -(r.packager.init.video.width * r.packager.init.video.height
                                                if r.packager.init.video else 0)):
        pk = rung.packager
        video = pk.init.video
        measured = int(pk.bytes_total * 8 / pk.seconds_total) if pk.seconds_total > 0.5 else 0
        declared = (rung.plan.video_kbps + (rung.plan.audio_kbps if rung.plan.audio != "none" else 0)) * 1000
        bandwidth = max(pk.max_bitrate, int(measured * 1.3), declared, 100_000)
        attrs = [f"BANDWIDTH={bandwidth}", f'CODECS="{pk.init.codecs}"']
        if video and video.width and video.height:
            attrs.insert(1, f"RESOLUTION={video.width}x{video.height}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(f"{rung.plan.name}/index.m3u8")
    return "\n".join(lines) + "\n"


class LiveIngest:
    """The RTMP server plus the sessions it accepted, for one deployment (settings + database)."""

    def __init__(self, settings: Settings, db: Database, *, jobs=None, store=None):
        self.settings = settings
        self.db = db
        self.jobs = jobs
        self.store = store
        self.sessions: dict[str, StreamSession] = {}
        self.server = RtmpServer(self._gate, host=settings.rtmp_host, port=settings.rtmp_port, limits=RtmpLimits(
            idle_timeout_s=settings.rtmp_idle_timeout_s, max_session_s=settings.rtmp_max_session_s,
            max_kbps=settings.rtmp_max_kbps, max_connections=settings.rtmp_max_connections))
        # Calls of publish_ended (stream id, recording path or None, reason), newest last.
        self.ended_log: list[tuple[str, Path | None, str]] = []
        self.ended_event = asyncio.Event()

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def _gate(self, app: str, stream_key: str, peer: str) -> StreamSession:
        from clipfeed.live import service

        app = app.strip("/").split("/")[0].split("?")[0]
        if app == "live":
            try:
                async with self.db.transaction() as session:
                    stream = await service.authorize_publish(session, stream_key)
                    stream_id = stream.id
            except service.PublishRefused as refused:
                raise PublishRefusal(refused.reason) from None
        elif app == RELAY_APP:
            stream_id = await self._relayed_stream(stream_key, peer)
        else:
            raise PublishRefusal("unknown application (publish to .../live/<stream key>)")
        if stream_id in self.sessions and not self.sessions[stream_id].finished:
            raise PublishRefusal("this stream is already being published")
        sink = StreamSession(self, stream_id)
        sink.prepare()
        self.sessions[stream_id] = sink
        log.info("live %s: publishing", stream_id)
        return sink

    async def _relayed_stream(self, stream_key: str, peer: str) -> str:
        """An nginx edge pushing a stream its on_publish hook already authorized (and claimed):
        trusted only from the configured addresses, and only for a stream that is live."""
        from sqlalchemy import select

        from clipfeed.live import service
        from clipfeed.live.models import LiveStatus, LiveStream

        if peer not in self.settings.rtmp_relay_from:
            raise PublishRefusal("relaying is not allowed from this address")
        async with self.db.transaction() as session:
            row = (await session.execute(select(LiveStream.id, LiveStream.status, LiveStream.publishing).where(
                LiveStream.stream_key_hash == service.hash_key(stream_key)))).first()
        if row is None or row.status != LiveStatus.LIVE or not row.publishing:
            raise PublishRefusal("stream not authorized by the edge")
        return row.id

    async def ended(self, stream_id: str, recording: Path | None, reason: str) -> None:
        from clipfeed.live import service

        if self.sessions.get(stream_id) is not None and self.sessions[stream_id].finished:
            del self.sessions[stream_id]
        try:
            async with self.db.transaction() as session:
                await service.publish_ended(session, stream_id, recording, jobs=self.jobs, store=self.store)
        except Exception:
            log.exception("live %s: publish_ended failed", stream_id)
        self.ended_log.append((stream_id, recording, reason))
        self.ended_event.set()
        log.info("live %s: publish ended (%s)", stream_id, reason)
