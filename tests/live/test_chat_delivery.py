"""Chat delivery under load, over a real server and real WebSockets (both backends): messages the
room fans out together arrive as one JSON array in order; a client that stops reading gets its
backlog when it reads again (merged into few frames), and one that stays stuck is cut off (1013)
and rejoins with ?after=<last id> to get everything it missed; pre-built uncompressed frames mix
correctly with compressed ones on a permessage-deflate connection."""

from __future__ import annotations

import socket

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import LiveServer, register
from tests.live.test_chat import Chat, said, start_stream

TEXT = "x" * 480  # near the 500-character limit: fills buffers with few messages


def _join(base_url: str, stream_id: str, *, after: str | None = None, stalled: bool = False,
          token: str | None = None) -> Chat:
    """A chat client. stalled: its socket's receive buffer is tiny and its library stops reading
    after 4 unread frames, so until the test reads, the server's side of the connection fills up
    after a few kilobytes. Otherwise its library reads everything as it comes (however long the
    test takes to look at it), so the server never sees it fall behind."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if stalled:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = base_url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    chat = Chat.__new__(Chat)
    query = "&".join(f"{k}={v}" for k, v in (("after", after), ("token", token)) if v)
    url = base_url.replace("http://", "ws://") + f"/api/v1/live/{stream_id}/chat" + (f"?{query}" if query else "")
    chat.ws = connect(url, sock=sock, open_timeout=10, max_size=2**22, max_queue=4 if stalled else None).__enter__()
    chat.frames, chat.queued, chat.frame_sizes = [], [], []
    chat.hello = chat.wait_for(lambda f: f["type"] == "hello")
    chat.backlog = chat.wait_for(lambda f: f["type"] == "backlog")["messages"]
    return chat


@pytest.fixture
def busy_room(request, settings_factory):
    # A high rate limit: these tests send bursts from one user.
    settings = settings_factory(live_chat_rate=10_000, live_chat_client_queue=getattr(request, "param", 1000))
    server = LiveServer(settings, run_workers=False).start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        owner, alice = register(http), register(http)
        stream_id = start_stream(http, owner)
        yield {"url": server.url, "stream_id": stream_id, "alice": alice, "owner": owner}
    server.stop()


def test_burst_arrives_once_in_order_on_a_compressed_connection(busy_room):
    reader = Chat(busy_room["url"], busy_room["stream_id"])
    # The test client offers permessage-deflate like browsers do, and the server accepted it:
    # fan-out frames are sent uncompressed (RSV1 clear) between compressed ones and must decode.
    assert any(ext.name == "permessage-deflate" for ext in reader.ws.protocol.extensions)
    writer = Chat(busy_room["url"], busy_room["stream_id"], busy_room["alice"]["token"])
    for n in range(150):
        writer.say(f"burst {n}")
    writer.send(type="nonsense")  # an error frame (compressed, via the writer task) in between
    writer.error("unknown_type")
    writer.say("last")
    reader.wait_for(said("last"))
    texts = [m["text"] for m in reader.messages()]
    assert texts == [f"burst {n}" for n in range(150)] + ["last"]
    ids = [m["id"] for m in reader.messages()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    writer.wait_for(said("last"))
    assert [m["text"] for m in writer.messages()] == texts


def test_reader_that_pauses_gets_its_backlog_merged_in_order(busy_room):
    stalled = _join(busy_room["url"], busy_room["stream_id"], stalled=True)
    watcher = Chat(busy_room["url"], busy_room["stream_id"])
    writer = Chat(busy_room["url"], busy_room["stream_id"], busy_room["alice"]["token"])
    count = 600  # ~350 KB: more than the paused socket's buffers hold, fewer messages than its queue's limit
    for n in range(count):
        writer.say(f"{n} {TEXT}")
    watcher.wait_for(said(f"{count - 1} {TEXT}"))  # everything was fanned out meanwhile
    stalled.wait_for(said(f"{count - 1} {TEXT}"))
    assert [m["text"] for m in stalled.messages()] == [f"{n} {TEXT}" for n in range(count)]
    # What queued up while it did not read went out merged: far fewer frames than messages.
    assert len(stalled.frame_sizes) - 2 < count / 2, stalled.frame_sizes
    assert max(stalled.frame_sizes) <= 64  # frames stay bounded (clients limit message sizes)


@pytest.mark.parametrize("busy_room", [200], indirect=True)
def test_reader_stuck_past_its_queue_is_cut_off_and_rejoins_with_what_it_missed(busy_room):
    url, stream_id = busy_room["url"], busy_room["stream_id"]
    stalled = _join(url, stream_id, stalled=True)
    watcher = _join(url, stream_id)
    writer = _join(url, stream_id, token=busy_room["alice"]["token"])
    # ~600 KB: its TCP buffers (64 KB send buffer, capped by the server), the transport's 64 KB
    # and one fan-out frame take at most ~250 KB; its queue takes 200 more messages.
    count = 1000
    expected = [f"{n} {TEXT}" for n in range(count)]
    # In rounds of 100 that the watcher has seen before the next: the clients that do read are
    # never more than 100 messages behind (well within the limit), whatever the machine's load.
    for start in range(0, count, 100):
        for text in expected[start:start + 100]:
            writer.say(text)
        watcher.wait_for(said(expected[start + 99]))
    # Reading again, it gets what was written before the cut-off, then the close code.
    with pytest.raises(ConnectionClosed) as closed:
        stalled.wait_for(lambda f: False, timeout=15)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    seen = stalled.messages()
    assert 0 < len(seen) < count
    assert [m["text"] for m in seen] == expected[:len(seen)]
    # The page rejoins with the last id it saw and misses nothing.
    rejoined = _join(url, stream_id, after=seen[-1]["id"])
    assert [m["text"] for m in seen + rejoined.backlog] == expected
    # A malformed ?after= is ignored: the usual last 50.
    assert [m["text"] for m in _join(url, stream_id, after="'or'1'='1").backlog] == expected[-50:]
    # The room carried on for everyone else.
    writer.say("still here")
    watcher.wait_for(said("still here"))
    rejoined.wait_for(said("still here"))
    assert [m["text"] for m in watcher.messages()] == expected + ["still here"]


# uvicorn's legacy protocol, on purpose: it warns that it is deprecated (and websockets that its
# handler signature is).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated")
def test_other_websocket_servers_get_asgi_sends(settings_factory):
    """Under uvicorn's legacy websockets protocol the room finds no protocol to write frames to
    and uses ASGI sends: the same messages, in order, batches as arrays all the same."""
    settings = settings_factory(live_chat_rate=10_000)
    server = LiveServer(settings, run_workers=False, ws="websockets").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            owner, alice = register(http), register(http)
            stream_id = start_stream(http, owner)
        reader = Chat(server.url, stream_id)
        writer = Chat(server.url, stream_id, alice["token"])
        for n in range(100):
            writer.say(f"legacy {n}")
        reader.wait_for(said("legacy 99"))
        assert [m["text"] for m in reader.messages()] == [f"legacy {n}" for n in range(100)]
        assert server.app.state.live_rooms[stream_id].connections  # the room served them
        assert all(conn.protocol is None for conn in server.app.state.live_rooms[stream_id].connections)
        reader.close()
        writer.close()
    finally:
        server.stop()


def test_deleting_a_backlog_message_reaches_those_who_joined_with_it(busy_room):
    url, stream_id = busy_room["url"], busy_room["stream_id"]
    writer = Chat(url, stream_id, busy_room["alice"]["token"])
    writer.say("regrettable")
    said_it = writer.wait_for(said("regrettable"))
    streamer = Chat(url, stream_id, busy_room["owner"]["token"])
    assert [m["text"] for m in streamer.backlog] == ["regrettable"]
    joined = Chat(url, stream_id)
    streamer.send(type="delete", message_id=said_it["id"])
    assert joined.wait_for(lambda f: f["type"] == "message_deleted")["id"] == said_it["id"]
