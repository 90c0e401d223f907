"""The RTMP server: key check before media, refusals, and hostile bytes that only hurt their own connection."""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import time

import httpx
import pytest

from clipfeed.live import amf
from clipfeed.live.rtmp import COMMAND_AMF0, VIDEO, encode_message
from tests.conftest import LiveServer, wait_for
from tests.live.ingest_support import publish, rtmp_port, start_stream


@pytest.fixture
def ingest_server(settings_factory):
    server = LiveServer(settings_factory(rtmp_enabled=True, rtmp_port=0, rtmp_idle_timeout_s=3.0)).start()
    yield server
    server.stop()


@pytest.fixture
def http(ingest_server):
    with httpx.Client(base_url=ingest_server.url, timeout=30) as client:
        yield client


def _live_root(server):
    return server.settings.resolved_data_dir / "live"


def _closed_by_server(sock: socket.socket, timeout: float = 10) -> bool:
    """True when the server closes the connection (EOF or reset) within the timeout."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def _handshake(sock: socket.socket) -> None:
    sock.sendall(b"\x03" + bytes(8) + os.urandom(1528))
    received = b""
    while len(received) < 1 + 1536 * 2:
        chunk = sock.recv(65536)
        assert chunk, "server closed during the handshake"
        received += chunk
    sock.sendall(received[1:1537])  # C2 echoes S1


def _command(*values, stream_id: int = 0) -> bytes:
    return encode_message(3, COMMAND_AMF0, stream_id, amf.encode(*values), 128)


def _connect_and_publish(port: int, key: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    _handshake(sock)
    sock.sendall(_command("connect", 1.0, {"app": "live", "type": "nonprivate", "tcUrl": f"rtmp://127.0.0.1/live"}))
    sock.sendall(_command("createStream", 2.0, None))
    sock.sendall(_command("publish", 3.0, None, key, "live", stream_id=1))
    return sock


def _read_until(sock: socket.socket, needle: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while needle not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_wrong_key_is_refused_before_any_media(ingest_server, http):
    port = rtmp_port(ingest_server)
    # ffmpeg is told NetStream.Publish.BadName and exits non-zero; nothing is written anywhere.
    refused = publish(port, "live_not-a-real-key", seconds=3)
    assert refused.wait(timeout=30) != 0
    assert b"Server error" in refused.stderr.read()
    assert not _live_root(ingest_server).exists() or not any(_live_root(ingest_server).iterdir())

    # At the protocol level: the refusal arrives, then the connection closes; media sent after
    # the refusal is never accepted.
    sock = _connect_and_publish(port, "live_wrong")
    reply = _read_until(sock, b"NetStream.Publish.BadName")
    assert b"NetStream.Publish.BadName" in reply
    try:
        sock.sendall(encode_message(4, VIDEO, 1, b"\x17\x00" + bytes(64), 128))
    except OSError:
        pass
    assert _closed_by_server(sock)
    sock.close()

    # An app other than "live" is refused too; so is "relay" (nginx edges only) from an address
    # not in rtmp_relay_from, even with a live stream's key; and an ended stream.
    stream = start_stream(http)
    for app in ("other", "relay"):
        assert publish(port, stream["stream_key"], seconds=3, app=app).wait(timeout=30) != 0
    assert http.get(f"/api/v1/live/{stream['stream_id']}").json()["status"] == "idle"
    assert http.post(f"/api/v1/live/{stream['stream_id']}/end", headers=stream["owner"]["headers"]).status_code == 200
    ended = publish(port, stream["stream_key"], seconds=3)
    assert ended.wait(timeout=30) != 0
    assert not (_live_root(ingest_server) / stream["stream_id"]).exists()


def test_media_before_publish_closes_the_connection(ingest_server):
    sock = socket.create_connection(("127.0.0.1", rtmp_port(ingest_server)))
    _handshake(sock)
    sock.sendall(_command("connect", 1.0, {"app": "live"}))
    sock.sendall(encode_message(4, VIDEO, 1, b"\x17\x00" + bytes(64), 128))
    assert _closed_by_server(sock)
    sock.close()


def test_second_publisher_and_hostile_clients_leave_a_good_publisher_alone(ingest_server, http, tmp_path):
    port = rtmp_port(ingest_server)
    stream = start_stream(http)
    good = publish(port, stream["stream_key"], seconds=8, log=tmp_path / "good.log")
    try:
        base = f"/media/live/{stream['stream_id']}"
        wait_for(lambda: http.get(f"{base}/master.m3u8").status_code == 200, timeout=30, message="first publisher live")

        # A second publisher on the same key is refused while the first one goes on.
        second = publish(port, stream["stream_key"], seconds=3)
        assert second.wait(timeout=30) != 0
        assert b"already being published" in second.stderr.read()

        # Garbage instead of a handshake, a truncated handshake, a truncated chunk after connect,
        # a message longer than the limit, and a bad AMF body: each closes its own connection.
        garbage = socket.create_connection(("127.0.0.1", port))
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4000))
        assert _closed_by_server(garbage)

        truncated = socket.create_connection(("127.0.0.1", port))
        truncated.sendall(b"\x03" + os.urandom(700))
        truncated.shutdown(socket.SHUT_WR)
        assert _closed_by_server(truncated)

        cut = socket.create_connection(("127.0.0.1", port))
        _handshake(cut)
        cut.sendall(_command("connect", 1.0, {"app": "live"})[:20])
        cut.shutdown(socket.SHUT_WR)
        assert _closed_by_server(cut)

        huge = socket.create_connection(("127.0.0.1", port))
        _handshake(huge)
        huge.sendall(bytes([0x03]) + b"\x00\x00\x00" + (0xFFFFFF).to_bytes(3, "big") + bytes([COMMAND_AMF0])
                     + b"\x00\x00\x00\x00")
        assert _closed_by_server(huge)

        bad_amf = socket.create_connection(("127.0.0.1", port))
        _handshake(bad_amf)
        bad_amf.sendall(encode_message(3, COMMAND_AMF0, 0, b"\x02\xff\xff" + b"connect", 128))
        assert _closed_by_server(bad_amf)

        silent = socket.create_connection(("127.0.0.1", port))
        _handshake(silent)
        assert _closed_by_server(silent, timeout=10)  # idle timeout (3 s here)

        for sock in (garbage, truncated, cut, huge, bad_amf, silent):
            sock.close()

        # The good publisher was never disturbed: its playlist keeps growing and it ends cleanly.
        def newest_msn():
            text = http.get(f"{base}/src/index.m3u8").text
            return max(int(m) for m in re.findall(r'URI="part(\d+)\.m4s"', text))

        before = newest_msn()
        wait_for(lambda: newest_msn() > before, timeout=10, message="playlist still growing")
        assert good.wait(timeout=30) == 0
    finally:
        if good.poll() is None:
            good.kill()
    ingest = ingest_server.app.state.ingest
    wait_for(lambda: any(e[0] == stream["stream_id"] for e in ingest.ended_log), timeout=30, message="publish_ended")
    assert len(ingest.ended_log) == 1  # refused publishers never reach publish_ended


def test_amf_decoder_only_ever_raises_amf_error():
    rng = random.Random(7)
    valid = amf.encode("publish", 3.0, None, {"k": [1.0, "x", {"y": True}]}, "live")
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 6)):  # flip, cut or random bytes
            choice = rng.random()
            if choice < 0.5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif choice < 0.8:
                data = data[:rng.randrange(len(data) + 1)]
            else:
                data = bytearray(rng.randbytes(rng.randrange(64)))
        try:
            amf.decode_all(bytes(data))
        except amf.AMFError:
            pass


def test_amf_round_trip():
    values = ["connect", 1.0, {"app": "live", "n": 3.5, "flag": True, "nested": {"x": None}}, None, [1.0, "a"]]
    assert amf.decode_all(amf.encode(*values)) == values
    with pytest.raises(amf.AMFError):
        amf.decode_all(b"\x03" * 100)  # nested deeper than the limit / truncated


def _reader_over(data: bytes, **limits):
    import asyncio

    from clipfeed.live.rtmp import ChunkReader, RtmpLimits

    buffer = memoryview(data)
    position = [0]

    async def read(n: int) -> bytes:
        if position[0] + n > len(buffer):
            raise ConnectionResetError("end of test data")
        chunk = bytes(buffer[position[0]:position[0] + n])
        position[0] += n
        return chunk

    reader = ChunkReader(read, RtmpLimits(**limits))

    def messages():
        async def collect():
            out = []
            try:
                while True:
                    out.append(await reader.next_message())
            except ConnectionResetError:
                return out
        return asyncio.run(collect())

    return reader, messages


def test_chunk_reader_header_types_interleaving_and_extended_timestamps():
    big = bytes(range(256)) * 2  # 512 bytes: 4 chunks of 128
    # Message 1 on csid 4: type-0 header with an extended timestamp (0x01000000), continued with
    # type-3 chunks that repeat it; interleaved with a message on csid 5 between its chunks.
    first = encode_message(4, VIDEO, 1, big, 128, timestamp=0x01000000)
    pieces = [first[:12 + 4 + 128], first[12 + 4 + 128:]]
    other = encode_message(5, COMMAND_AMF0, 0, amf.encode("FCPublish", 2.0, None, "k"), 128, timestamp=7)
    # Type-1 (new length/type, timestamp delta 40) and type-2 (delta only) and a type-3 new
    # message on csid 5 (repeats the last delta).
    body = b"\x09\x01"
    type1 = bytes([0x40 | 5]) + (40).to_bytes(3, "big") + len(body).to_bytes(3, "big") + bytes([VIDEO]) + body
    type2 = bytes([0x80 | 5]) + (10).to_bytes(3, "big") + body
    type3 = bytes([0xC0 | 5]) + body
    _reader, messages = _reader_over(pieces[0] + other + pieces[1] + type1 + type2 + type3)
    got = messages()
    assert [(m.type_id, m.timestamp, len(m.payload)) for m in got] == [
        (COMMAND_AMF0, 7, len(amf.encode("FCPublish", 2.0, None, "k"))),
        (VIDEO, 0x01000000, 512),
        (VIDEO, 47, 2), (VIDEO, 57, 2), (VIDEO, 67, 2)]
    assert got[1].payload == big and got[1].stream_id == 1


def test_chunk_reader_limits():
    from clipfeed.live.rtmp import ProtocolViolation

    # A continuation (type 3) on a chunk stream that never had a full header.
    _reader, messages = _reader_over(bytes([0xC0 | 9]) + b"x" * 10)
    with pytest.raises(ProtocolViolation):
        messages()
    # More chunk streams than allowed, each holding a partial message.
    # (basic header 0x00 + one byte: chunk stream id 64 + i)
    partials = b"".join(bytes([0x00, i]) + b"\0\0\0" + (1000).to_bytes(3, "big") + bytes([VIDEO]) + bytes(4)
                        + bytes(128) for i in range(10))
    _reader, messages = _reader_over(partials, max_chunk_streams=4)
    with pytest.raises(ProtocolViolation):
        messages()
