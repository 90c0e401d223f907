"""An asyncio RTMP server for publishers (OBS, phone apps, ffmpeg).

It speaks exactly what a publisher needs: the handshake, chunk streams, protocol control messages
and the AMF0 commands ``connect``, ``releaseStream``, ``FCPublish``, ``createStream``, ``publish``,
``FCUnpublish``/``deleteStream``/``closeStream``, plus ``@setDataFrame`` metadata and audio/video.

The stream key (the publish name; OBS sends ``ingest_url + "/" + key`` as app ``live`` and name
``key``) is checked through ``on_publish`` before a single audio or video message is accepted:
media that arrives before an accepted ``publish`` is a protocol violation and closes the
connection. A refused key gets ``onStatus NetStream.Publish.BadName`` (level ``error``) and the
connection is closed. Every read has a deadline, every message and the chunk size are bounded,
the bytes a client may send before publishing are capped, and any malformed byte closes that
connection only: ``RtmpServer`` never lets one client's failure reach another.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from clipfeed.live import amf

log = logging.getLogger("clipfeed.live.rtmp")

HANDSHAKE_SIZE = 1536
RTMP_VERSION = 3

# Message type ids.
SET_CHUNK_SIZE, ABORT, ACK, USER_CONTROL, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
AUDIO, VIDEO = 8, 9
DATA_AMF3, COMMAND_AMF3, DATA_AMF0, COMMAND_AMF0 = 15, 17, 18, 20
MEDIA_TYPES = (AUDIO, VIDEO)

OUT_CHUNK_SIZE = 4096
WINDOW_SIZE = 2_500_000
PUBLISH_STREAM_ID = 1


class ProtocolViolation(Exception):
    """The peer sent something RTMP does not allow (or beyond our limits): close its connection."""


class PublishRefusal(Exception):
    """Raised by an ``on_publish`` gate to refuse a key; ``reason`` goes to the client."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RtmpLimits:
    handshake_timeout_s: float = 5.0
    # No byte for this long (before or during publishing): the connection is dropped.
    idle_timeout_s: float = 15.0
    max_message_bytes: int = 8 * 1024 * 1024
    max_chunk_size: int = 1024 * 1024
    max_chunk_streams: int = 32
    # Everything a client may send before its publish is accepted (commands are small).
    max_bytes_before_publish: int = 256 * 1024
    # One publishing session's wall-clock length and average bitrate ceiling.
    max_session_s: float = 4 * 3600.0
    max_kbps: int = 25_000
    max_connections: int = 64


class PublishSink(Protocol):
    """What an accepted publish hands its media to (see ``clipfeed.live.ingest``)."""

    async def metadata(self, values: dict) -> None: ...

    async def media(self, type_id: int, timestamp_ms: int, payload: bytes) -> None: ...

    async def finish(self, reason: str) -> None: ...


# (app, stream key, peer address) -> the sink for the accepted publication, or PublishRefusal.
PublishGate = Callable[[str, str, str], Awaitable[PublishSink]]


@dataclass
class _ChunkStream:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    buffer: bytearray = field(default_factory=bytearray)


@dataclass
class Message:
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


class ChunkReader:
    """Turns the chunk stream of one connection into whole messages, within the limits."""

    def __init__(self, read: Callable[[int], Awaitable[bytes]], limits: RtmpLimits):
        self._read = read
        self.limits = limits
        self.chunk_size = 128
        self.streams: dict[int, _ChunkStream] = {}
        self.buffered = 0

    async def next_message(self) -> Message:
        while True:
            message = await self._next_chunk()
            if message is not None:
                return message

    async def _next_chunk(self) -> Message | None:
        first = (await self._read(1))[0]
        fmt, csid = first >> 6, first & 0x3F
        if csid == 0:
            csid = 64 + (await self._read(1))[0]
        elif csid == 1:
            b = await self._read(2)
            csid = 64 + b[0] + b[1] * 256
        cs = self.streams.get(csid)
        if cs is None:
            if fmt != 0:
                raise ProtocolViolation(f"chunk stream {csid} starts without a full header")
            if len(self.streams) >= self.limits.max_chunk_streams:
                raise ProtocolViolation("too many chunk streams")
            cs = self.streams[csid] = _ChunkStream()
        starting = not cs.buffer
        if fmt == 0:
            h = await self._read(11)
            ts = int.from_bytes(h[0:3], "big")
            cs.length = int.from_bytes(h[3:6], "big")
            cs.type_id = h[6]
            cs.stream_id = struct.unpack("<I", h[7:11])[0]
            cs.extended = ts == 0xFFFFFF
            if cs.extended:
                ts = struct.unpack(">I", await self._read(4))[0]
            cs.timestamp, cs.delta = ts, 0
        elif fmt in (1, 2):
            h = await self._read(7 if fmt == 1 else 3)
            delta = int.from_bytes(h[0:3], "big")
            if fmt == 1:
                cs.length = int.from_bytes(h[3:6], "big")
                cs.type_id = h[6]
            cs.extended = delta == 0xFFFFFF
            if cs.extended:
                delta = struct.unpack(">I", await self._read(4))[0]
            cs.delta = delta
            if starting:
                cs.timestamp = (cs.timestamp + delta) & 0xFFFFFFFF
        else:
            if cs.extended:
                await self._read(4)
            if starting and cs.delta:
                cs.timestamp = (cs.timestamp + cs.delta) & 0xFFFFFFFF
        if fmt in (0, 1) and starting is False:
            raise ProtocolViolation("a new message header arrived in the middle of a message")
        if cs.length > self.limits.max_message_bytes:
            raise ProtocolViolation(f"message of {cs.length} bytes is over the limit")
        take = min(self.chunk_size, cs.length - len(cs.buffer))
        if take:
            self.buffered += take
            if self.buffered > self.limits.max_message_bytes * 2:
                raise ProtocolViolation("too much partially received data")
            cs.buffer += await self._read(take)
        if len(cs.buffer) < cs.length:
            return None
        payload = bytes(cs.buffer)
        self.buffered -= len(cs.buffer)
        cs.buffer.clear()
        return Message(cs.type_id, cs.stream_id, cs.timestamp, payload)


def encode_message(csid: int, type_id: int, stream_id: int, payload: bytes, chunk_size: int,
                   timestamp: int = 0) -> bytes:
    """One message as chunks: a type-0 header, then type-3 continuation headers."""
    out = bytearray([csid & 0x3F])
    out += min(timestamp, 0xFFFFFF).to_bytes(3, "big") + len(payload).to_bytes(3, "big")
    out += bytes([type_id]) + struct.pack("<I", stream_id)
    if timestamp >= 0xFFFFFF:
        out += struct.pack(">I", timestamp)
    for offset in range(0, len(payload), chunk_size):
        if offset:
            out.append(0xC0 | (csid & 0x3F))
            if timestamp >= 0xFFFFFF:
                out += struct.pack(">I", timestamp)
        out += payload[offset:offset + chunk_size]
    return bytes(out)


class RtmpConnection:
    """One client: handshake, then messages until it leaves, misbehaves or hits a limit."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: PublishGate,
                 limits: RtmpLimits):
        self.reader, self.writer = reader, writer
        self.gate = gate
        self.limits = limits
        self.app = ""
        self.sink: PublishSink | None = None
        self.received = 0
        self.acked = 0
        self.peer_window = 0
        self.started = time.monotonic()
        self.out_chunk_size = 128
        self.chunks = ChunkReader(self._read, limits)

    async def _read(self, n: int) -> bytes:
        try:
            data = await asyncio.wait_for(self.reader.readexactly(n), self.limits.idle_timeout_s)
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("client closed the connection") from exc
        except asyncio.TimeoutError as exc:
            raise ProtocolViolation("client sent nothing for too long") from exc
        self.received += n
        if self.sink is None and self.received > self.limits.max_bytes_before_publish:
            raise ProtocolViolation("too many bytes before an accepted publish")
        if self.sink is not None:
            elapsed = time.monotonic() - self.started
            if elapsed > self.limits.max_session_s:
                raise ProtocolViolation("publishing session is over its time limit")
            if self.received > (elapsed + 10.0) * self.limits.max_kbps * 125:
                raise ProtocolViolation("publisher is over the bitrate limit")
        if self.peer_window and self.received - self.acked >= self.peer_window:
            self.acked = self.received
            self._send(2, ACK, 0, struct.pack(">I", self.received & 0xFFFFFFFF))
        return data

    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes) -> None:
        self.writer.write(encode_message(csid, type_id, stream_id, payload, self.out_chunk_size))

    def _command(self, stream_id: int, *values) -> None:
        self._send(3 if stream_id == 0 else 5, COMMAND_AMF0, stream_id, amf.encode(*values))

    async def run(self) -> None:
        finish_reason = "disconnected"
        try:
            await asyncio.wait_for(self._handshake(), self.limits.handshake_timeout_s)
            while True:
                message = await self.chunks.next_message()
                if not await self._handle(message):
                    finish_reason = "unpublished"
                    break
        except asyncio.TimeoutError:
            finish_reason = "handshake timed out"
        except (ProtocolViolation, amf.AMFError) as exc:
            finish_reason = f"protocol violation: {exc}"
            log.info("rtmp %s: closing: %s", self._peer(), exc)
        except (ConnectionError, OSError):
            finish_reason = "disconnected"
        finally:
            if self.sink is not None:
                sink, self.sink = self.sink, None
                try:
                    await sink.finish(finish_reason)
                except Exception:  # a failing sink must not keep the socket open
                    log.exception("rtmp: finishing a publication failed")
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def _peer(self) -> str:
        peer = self.writer.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    async def _handshake(self) -> None:
        c0 = await self._read(1)
        if c0[0] != RTMP_VERSION:
            raise ProtocolViolation(f"unsupported RTMP version {c0[0]}")
        c1 = await self._read(HANDSHAKE_SIZE)
        # S1: our time, four zero bytes (the "simple" handshake, which every client accepts), random.
        s1 = struct.pack(">I", int(time.monotonic() * 1000) & 0xFFFFFFFF) + b"\0\0\0\0" + os.urandom(HANDSHAKE_SIZE - 8)
        self.writer.write(bytes([RTMP_VERSION]) + s1 + c1)
        await self.writer.drain()
        await self._read(HANDSHAKE_SIZE)  # C2: the client's echo of S1; nothing to verify with it
        self.received = 0

    async def _handle(self, m: Message) -> bool:
        """Handle one message; False when the client unpublished and the connection should end."""
        t = m.type_id
        if t == SET_CHUNK_SIZE:
            if len(m.payload) < 4:
                raise ProtocolViolation("short Set Chunk Size")
            size = struct.unpack(">I", m.payload[:4])[0] & 0x7FFFFFFF
            if not 1 <= size <= self.limits.max_chunk_size:
                raise ProtocolViolation(f"chunk size {size} is out of bounds")
            self.chunks.chunk_size = size
        elif t == WINDOW_ACK_SIZE:
            if len(m.payload) >= 4:
                self.peer_window = struct.unpack(">I", m.payload[:4])[0]
        elif t == ABORT:
            if len(m.payload) >= 4:
                cs = self.chunks.streams.get(struct.unpack(">I", m.payload[:4])[0])
                if cs is not None:
                    self.chunks.buffered -= len(cs.buffer)
                    cs.buffer.clear()
        elif t in (ACK, USER_CONTROL, SET_PEER_BANDWIDTH):
            pass
        elif t in MEDIA_TYPES:
            if self.sink is None:
                raise ProtocolViolation("media before an accepted publish")
            await self.sink.media(t, m.timestamp, m.payload)
        elif t in (DATA_AMF0, DATA_AMF3):
            payload = m.payload[1:] if t == DATA_AMF3 and m.payload[:1] == b"\0" else m.payload
            values = amf.decode_all(payload)
            if values and values[0] == "@setDataFrame":
                values = values[1:]
            if self.sink is not None and len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
                await self.sink.metadata(values[1])
        elif t in (COMMAND_AMF0, COMMAND_AMF3):
            payload = m.payload[1:] if t == COMMAND_AMF3 and m.payload[:1] == b"\0" else m.payload
            return await self._command_message(m.stream_id, amf.decode_all(payload))
        await self.writer.drain()
        return True

    async def _command_message(self, stream_id: int, values: list) -> bool:
        if not values or not isinstance(values[0], str):
            raise ProtocolViolation("command without a name")
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        if name == "connect":
            obj = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            self.app = str(obj.get("app", ""))[:256]
            self._send(2, WINDOW_ACK_SIZE, 0, struct.pack(">I", WINDOW_SIZE))
            self._send(2, SET_PEER_BANDWIDTH, 0, struct.pack(">IB", WINDOW_SIZE, 2))
            self._send(2, SET_CHUNK_SIZE, 0, struct.pack(">I", OUT_CHUNK_SIZE))
            self.out_chunk_size = OUT_CHUNK_SIZE
            self._command(0, "_result", txn, {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                          {"level": "status", "code": "NetConnection.Connect.Success",
                           "description": "Connection succeeded.", "objectEncoding": 0.0})
        elif name in ("releaseStream", "FCPublish"):
            self._command(0, "_result", txn, None, None)
        elif name == "createStream":
            self._command(0, "_result", txn, None, float(PUBLISH_STREAM_ID))
        elif name == "publish":
            await self._publish(values)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if self.sink is not None:
                return False
        # Anything else (getStreamLength, _checkbw, play...) is not for a publisher: ignored.
        await self.writer.drain()
        return True

    async def _publish(self, values: list) -> None:
        if self.sink is not None:
            raise ProtocolViolation("a second publish on one connection")
        raw_name = values[3] if len(values) > 3 and isinstance(values[3], str) else ""
        key = raw_name.split("?", 1)[0].strip()
        try:
            if not key:
                raise PublishRefusal("no stream key")
            peer = self.writer.get_extra_info("peername")
            sink = await self.gate(self.app, key, peer[0] if peer else "")
        except PublishRefusal as refusal:
            self._command(PUBLISH_STREAM_ID, "onStatus", 0.0, None,
                          {"level": "error", "code": "NetStream.Publish.BadName", "description": refusal.reason})
            await self.writer.drain()
            raise ProtocolViolation(f"publish refused: {refusal.reason}") from None
        self.sink = sink
        self.started = time.monotonic()
        self.received = 0
        self._send(2, USER_CONTROL, 0, struct.pack(">HI", 0, PUBLISH_STREAM_ID))  # Stream Begin
        self._command(PUBLISH_STREAM_ID, "onStatus", 0.0, None,
                      {"level": "status", "code": "NetStream.Publish.Start", "description": "Publishing."})


class RtmpServer:
    """Accepts RTMP connections; each runs independently under ``limits``."""

    def __init__(self, gate: PublishGate, *, host: str = "127.0.0.1", port: int = 1935,
                 limits: RtmpLimits | None = None):
        self.gate = gate
        self.host, self.port = host, port
        self.limits = limits or RtmpLimits()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: dict[asyncio.Task, asyncio.StreamWriter] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("rtmp ingest listening on %s:%d", self.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) >= self.limits.max_connections:
            writer.close()
            return
        task = asyncio.current_task()
        self._tasks[task] = writer
        try:
            await RtmpConnection(reader, writer, self.gate, self.limits).run()
        except Exception:  # never let one connection's bug reach the server
            log.exception("rtmp connection failed")
        finally:
            self._tasks.pop(task, None)

    async def stop(self) -> None:
        """Stop accepting; close every connection (its publication finishes normally)."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for writer in list(self._tasks.values()):
            writer.transport.abort()
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        if self._server is not None:
            await self._server.wait_closed()
