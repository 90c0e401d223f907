"""Chat fan-out on the wire: one pre-built WebSocket frame written to many sockets.

A chat room sends the same text to every socket. Through ASGI each of those sends costs a trip
through Starlette's send wrappers, uvicorn's ``send`` coroutine (an ``await`` on its writable
event), websockets' frame serialization and, when permessage-deflate was negotiated (browsers
always offer it and uvicorn accepts), one zlib compression per socket with that socket's own
context: ~30-50 µs of server CPU per delivery, i.e. 30-50 ms for the last of 1,000 sockets.

Here the room builds the frame bytes once and writes them straight to each socket's transport
(~2 µs): only for connections served by uvicorn's sans-I/O ``websockets`` protocol (the default
``ws="auto"`` with websockets >= 14), whose ASGI ``send`` is that protocol's bound method. The
frame is what uvicorn itself would produce for an uncompressed text message: FIN + text opcode,
unmasked (RFC 6455 §5.1: servers never mask), RSV1 clear. RSV1 clear is also valid when
permessage-deflate was negotiated: RFC 7692 §6 makes compression a per-message choice marked by
RSV1, and an uncompressed message leaves both sides' LZ77 windows untouched, so frames uvicorn
compresses for the same socket (hello, backlog, errors) still decode. Chat frames are a few
hundred bytes, so skipping compression costs little bandwidth and saves one deflate per socket.

The raw path is taken only while the connection is open, no close frame was sent, and the
transport is below its high-water mark (uvicorn's ``writable`` event); otherwise the caller falls
back to the ordinary ASGI send, which waits for writability. Any other server (or test client)
simply never gets a protocol here and uses ASGI sends throughout.
"""

from __future__ import annotations

import struct

from websockets.protocol import State

try:  # uvicorn's sans-I/O websockets protocol (uvicorn >= 0.35 with websockets >= 14)
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - another server or an older uvicorn: ASGI sends only
    WebSocketsSansIOProtocol = None

SCOPE_KEY = "clipfeed.ws_protocol"
# uvicorn internals the raw path reads or drives; if a uvicorn release renames any, the raw path
# is simply not taken (ASGI sends throughout) instead of failing mid-fan-out.
PROTOCOL_ATTRIBUTES = ("close_sent", "disconnected", "writable", "conn", "transport", "queue", "read_paused")


class RawSocketMiddleware:
    """Remember, for WebSocket scopes, uvicorn's protocol object behind ``send``.

    Must sit where ``send`` is still uvicorn's own (Starlette's outer middlewares and ours pass it
    through unchanged for WebSocket scopes); anything else leaves the scope untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and WebSocketsSansIOProtocol is not None:
            protocol = getattr(send, "__self__", None)
            if type(protocol) is WebSocketsSansIOProtocol and all(
                    hasattr(protocol, name) for name in PROTOCOL_ATTRIBUTES):
                scope[SCOPE_KEY] = protocol
        await self.app(scope, receive, send)


def text_frame(text: str) -> bytes:
    """An unmasked, unfragmented, uncompressed WebSocket text frame (RFC 6455 §5.2)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 65536:
        head = struct.pack("!BBH", 0x81, 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 127, size)
    return head + payload


def protocol_of(scope) -> object | None:
    return scope.get(SCOPE_KEY)


def write(protocol, frame: bytes) -> bool:
    """Write a pre-built frame if the socket can take it now; False means use the ASGI send."""
    if (protocol.close_sent or protocol.disconnected or not protocol.writable.is_set()
            or protocol.conn.state is not State.OPEN):
        return False
    transport = protocol.transport
    if transport.is_closing():
        return False
    transport.write(frame)
    return True


def limit_send_buffer(protocol, size: int) -> None:
    """Cap the kernel's send buffer for a chat socket. Linux autotunes it up to tcp_wmem's max
    (4 MB by default) for a peer that stopped reading, so 1,000 stuck viewers could pin gigabytes
    of kernel memory; chat needs a few kilobytes a second. With the cap, what a stuck client has
    not read waits in its bounded queue (counted, merged when it reads again, cut off past the
    limit) instead."""
    import socket

    sock = protocol.transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        except OSError:  # pragma: no cover - not a TCP socket (e.g. a Unix socket in a test)
            pass


def close_behind(protocol, code: int, reason: str, grace_s: float) -> None:
    """Close a connection whose buffers are full without waiting for it: the close frame is
    queued behind what it has not read yet (a client that resumes reads all of it, then the
    code), and the connection is dropped if it has not gone away `grace_s` later. Mirrors what
    uvicorn does for an ASGI close, minus the wait for writability that would block here."""
    transport = protocol.transport
    if protocol.close_sent or transport.is_closing():
        return
    protocol.conn.send_close(code, reason)
    transport.write(b"".join(protocol.conn.data_to_send()))
    protocol.close_sent = True
    protocol.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
    if protocol.read_paused:  # hear the client's close reply
        protocol.read_paused = False
        transport.resume_reading()
    # uvicorn closes the transport when the client answers the close (or when the app returns
    # and no close timer is set): the timer keeps it open for the client to read up to the close.
    protocol.close_timer = protocol.loop.call_later(grace_s, transport.abort)


def abort(protocol) -> None:
    """Drop a connection at once: it took no close in time (not reading at all). Without a
    protocol (another server) there is nothing more to do than the ASGI close already tried."""
    if protocol is not None and not protocol.transport.is_closing():
        protocol.transport.abort()
