"""Live chat over a real server and real WebSockets: backlog, flood control, slow mode, moderation,
banned words, emotes and badges, bad frames. Both backends (SQLite in-process fan-out;
PostgreSQL + Redis pub/sub)."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import LiveServer, register

# A 1x1 transparent PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


class Chat:
    """A chat client: frames are collected in order; wait_for reads until one matches."""

    def __init__(self, base_url: str, stream_id: str, token: str | None = None):
        url = base_url.replace("http://", "ws://") + f"/api/v1/live/{stream_id}/chat"
        if token:
            url += f"?token={token}"
        self.ws = connect(url, open_timeout=10, max_size=2**22).__enter__()
        self.frames: list[dict] = []
        self.queued: list[dict] = []
        self.frame_sizes: list[int] = []  # objects per WebSocket frame received
        self.hello = self.wait_for(lambda f: f["type"] == "hello")
        self.backlog = self.wait_for(lambda f: f["type"] == "backlog")["messages"]

    def send(self, **frame) -> None:
        self.ws.send(json.dumps(frame))

    def say(self, text: str, nonce: str | None = None) -> None:
        self.send(type="message", text=text, **({"nonce": nonce} if nonce else {}))

    def wait_for(self, predicate, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching frame within {timeout}s; got {self.frames[-5:]}")
            # One WebSocket frame carries one JSON object, or an array of them in order (messages
            # the room fanned out together): keep them one by one, as the page does.
            if not self.queued:
                data = json.loads(self.ws.recv(timeout=remaining))
                self.frame_sizes.append(len(data) if isinstance(data, list) else 1)
                self.queued.extend(data if isinstance(data, list) else [data])
            frame = self.queued.pop(0)
            self.frames.append(frame)
            if predicate(frame):
                return frame

    def messages(self) -> list[dict]:
        return [f for f in self.frames if f["type"] == "message"]

    def error(self, code: str) -> dict:
        return self.wait_for(lambda f: f["type"] == "error" and f["code"] == code)

    def close(self) -> None:
        self.ws.close()


def said(text: str):
    return lambda frame: frame["type"] == "message" and frame["text"] == text


def start_stream(http: httpx.Client, owner: dict, **body) -> str:
    response = http.post("/api/v1/live/start", json=body or {"title": "chat test"}, headers=owner["headers"])
    assert response.status_code == 201, response.text
    return response.json()["stream_id"]


@pytest.fixture
def room(client, live_server):
    owner, alice, bob = register(client), register(client), register(client)
    stream_id = start_stream(client, owner)
    chats: list[Chat] = []

    def join(who: dict | None = None) -> Chat:
        chat = Chat(live_server.url, stream_id, who["token"] if who else None)
        chats.append(chat)
        return chat

    yield {"stream_id": stream_id, "owner": owner, "alice": alice, "bob": bob, "join": join, "http": client}
    for chat in chats:
        chat.close()


def test_anyone_reads_only_signed_in_users_write(room):
    reader = room["join"]()
    assert reader.hello["you"] is None and reader.backlog == []
    reader.say("hello from nobody")
    assert "sign in" in reader.error("sign_in_required")["message"]
    alice = room["join"](room["alice"])
    alice.say("hi all", nonce="n1")
    delivered = reader.wait_for(said("hi all"))
    assert delivered["user"]["id"] == room["alice"]["user"]["id"]
    assert alice.wait_for(said("hi all"))["nonce"] == "n1"
    # A stream nobody may see: an error frame and a close, like an unknown one.
    gone = Chat.__new__(Chat)
    url = str(room["http"].base_url).replace("http://", "ws://") + "/api/v1/live/nosuchstream/chat"
    gone.ws, gone.frames, gone.queued, gone.frame_sizes = connect(url, open_timeout=10).__enter__(), [], [], []
    assert gone.wait_for(lambda f: f["type"] == "error")["code"] == "not_found"
    gone.close()


def test_last_50_on_join(settings_factory):
    server = LiveServer(settings_factory(live_chat_rate=100)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            owner, alice = register(http), register(http)
            stream_id = start_stream(http, owner)
            writer = Chat(server.url, stream_id, alice["token"])
            for n in range(60):
                writer.say(f"line {n}")
            writer.wait_for(said("line 59"))
            late = Chat(server.url, stream_id)
            assert [m["text"] for m in late.backlog] == [f"line {n}" for n in range(10, 60)]
            # Nothing from the backlog is delivered twice.
            writer.say("after join")
            late.wait_for(said("after join"))
            assert [m["text"] for m in late.messages()] == ["after join"]
            writer.close()
            late.close()
    finally:
        server.stop()


def test_sixth_message_in_ten_seconds_is_refused_and_not_delivered(room):
    observer = room["join"]()
    alice, bob = room["join"](room["alice"]), room["join"](room["bob"])
    for n in range(5):
        alice.say(f"a{n}")
    observer.wait_for(said("a4"))
    alice.say("a5 flood")
    refused = alice.error("rate_limited")
    assert 0 < refused["retry_after"] <= 10
    bob.say("marker")
    observer.wait_for(said("marker"))
    texts = [m["text"] for m in observer.messages()]
    assert texts == ["a0", "a1", "a2", "a3", "a4", "marker"]
    # The room is unharmed: others still talk, the limit is per user.
    bob.say("still here")
    observer.wait_for(said("still here"))


def test_slow_mode(room):
    observer = room["join"]()
    owner, alice = room["join"](room["owner"]), room["join"](room["alice"])
    alice.send(type="slow_mode", seconds=30)
    assert alice.error("forbidden")
    owner.send(type="slow_mode", seconds=30)
    observer.wait_for(lambda f: f["type"] == "slow_mode" and f["seconds"] == 30)
    alice.say("first")
    observer.wait_for(said("first"))
    alice.say("second")
    refused = alice.error("slow_mode")
    assert 25 < refused["retry_after"] <= 30
    # The streamer (and moderators) are exempt.
    owner.say("s1")
    owner.say("s2")
    observer.wait_for(said("s2"))
    assert "second" not in [m["text"] for m in observer.messages()]
    # Set over HTTP too, and a new joiner learns it in hello.
    response = room["http"].patch(f"/api/v1/live/{room['stream_id']}/chat", json={"slow_mode_s": 0},
                                  headers=room["owner"]["headers"])
    assert response.status_code == 200
    observer.wait_for(lambda f: f["type"] == "slow_mode" and f["seconds"] == 0)
    assert room["join"]().hello["slow_mode_s"] == 0


def test_moderators_delete_time_out_and_ban(room):
    http, stream_id = room["http"], room["stream_id"]
    mod = register(http)
    path = f"/api/v1/live/{stream_id}/moderators"
    assert http.post(path, json={"user_id": mod["user"]["id"]}).status_code == 401
    assert http.post(path, json={"user_id": mod["user"]["id"]}, headers=room["alice"]["headers"]).status_code == 403
    assert http.post(path, json={"user_id": mod["user"]["id"]}, headers=room["owner"]["headers"]).status_code == 201
    listed = http.get(path, headers=room["owner"]["headers"]).json()["items"]
    assert [u["id"] for u in listed] == [mod["user"]["id"]]

    observer = room["join"]()
    moderator = room["join"](mod)
    alice, bob = room["join"](room["alice"]), room["join"](room["bob"])
    assert moderator.hello["you"]["moderator"] is True and alice.hello["you"]["moderator"] is False

    moderator.say("mod here")
    assert observer.wait_for(said("mod here"))["badges"] == ["moderator"]
    alice.say("rude thing")
    rude = observer.wait_for(said("rude thing"))

    bob.send(type="delete", message_id=rude["id"])
    assert bob.error("forbidden")
    moderator.send(type="delete", message_id=rude["id"])
    observer.wait_for(lambda f: f["type"] == "message_deleted" and f["id"] == rude["id"])
    assert "rude thing" not in [m["text"] for m in room["join"]().backlog]

    moderator.send(type="timeout", user_id=room["alice"]["user"]["id"], seconds=60)
    observer.wait_for(lambda f: f["type"] == "user_timed_out")
    alice.say("can I talk")
    assert 55 < alice.error("timed_out")["retry_after"] <= 60

    moderator.send(type="ban", user_id=room["bob"]["user"]["id"], reason="spam")
    observer.wait_for(lambda f: f["type"] == "user_banned")
    bob.say("let me in")
    bob.error("banned")
    # The ban is durable: a new connection is still banned.
    again = room["join"](room["bob"])
    again.say("new socket")
    again.error("banned")
    # Nobody moderates the streamer; only the streamer moderates moderators.
    moderator.send(type="ban", user_id=room["owner"]["user"]["id"])
    assert moderator.error("forbidden")

    owner = room["join"](room["owner"])
    owner.send(type="unban", user_id=room["bob"]["user"]["id"])
    observer.wait_for(lambda f: f["type"] == "user_unbanned")
    again.say("thanks")
    observer.wait_for(said("thanks"))
    assert not [m for m in observer.messages() if m["text"] in ("can I talk", "let me in", "new socket")]

    # Dismissal takes effect at once in the running room.
    assert http.delete(f"{path}/{mod['user']['id']}", headers=room["owner"]["headers"]).status_code == 200
    observer.wait_for(lambda f: f["type"] == "moderator_removed")
    moderator.send(type="timeout", user_id=room["alice"]["user"]["id"], seconds=5)
    assert moderator.error("forbidden")


def test_banned_words_emotes_and_badges(settings_factory):
    server = LiveServer(settings_factory(live_chat_banned_words=["darn"])).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            owner, fan, other = register(http), register(http), register(http)
            stream_id = start_stream(http, owner)
            assert http.post(f"/api/v1/users/{owner['user']['id']}/follow", headers=fan["headers"]).status_code == 200
            words = http.patch(f"/api/v1/live/{stream_id}/chat", json={"banned_words": ["Heck"]},
                               headers=owner["headers"])
            assert words.json()["banned_words"] == ["heck"]
            assert http.patch(f"/api/v1/live/{stream_id}/chat", json={"banned_words": ["x"]},
                              headers=other["headers"]).status_code == 403
            emote = http.post(f"/api/v1/live/{stream_id}/emotes",
                              json={"name": "kappa", "image_base64": base64.b64encode(PNG).decode()},
                              headers=owner["headers"])
            assert emote.status_code == 201, emote.text
            bad = http.post(f"/api/v1/live/{stream_id}/emotes",
                            json={"name": "evil", "image_base64": base64.b64encode(b"<svg onload=x>").decode()},
                            headers=owner["headers"])
            assert bad.status_code == 422
            image = http.get(emote.json()["url"])
            assert image.status_code == 200 and image.content == PNG and image.headers["content-type"] == "image/png"

            observer = Chat(server.url, stream_id)
            fan_chat, streamer = Chat(server.url, stream_id, fan["token"]), Chat(server.url, stream_id, owner["token"])
            fan_chat.say("oh DARN it")
            fan_chat.error("banned_word")
            fan_chat.say("what the heck")
            fan_chat.error("banned_word")
            fan_chat.say("darnation is fine")
            observer.wait_for(said("darnation is fine"))
            fan_chat.say("hi :wave: :kappa: :nope:")
            message = observer.wait_for(said("hi :wave: :kappa: :nope:"))
            assert message["badges"] == ["follower"]
            assert message["parts"] == [
                {"type": "text", "text": "hi "},
                {"type": "emote", "name": "wave", "emoji": "\U0001f44b"},
                {"type": "text", "text": " "},
                {"type": "emote", "name": "kappa", "url": emote.json()["url"]},
                {"type": "text", "text": " :nope:"},
            ]
            streamer.say(":fire:")
            fire = observer.wait_for(said(":fire:"))
            assert fire["badges"] == ["streamer"] and fire["parts"] == [{"type": "emote", "name": "fire", "emoji": "\U0001f525"}]
            for chat in (observer, fan_chat, streamer):
                chat.close()
    finally:
        server.stop()


def test_bad_frames_get_error_frames_and_the_room_survives(room):
    observer = room["join"]()
    alice = room["join"](room["alice"])
    alice.ws.send("{not json")
    alice.error("invalid_json")
    alice.ws.send(b"\x00\x01binary")
    alice.error("invalid_json")
    alice.ws.send("[1, 2]")
    alice.error("invalid_message")
    alice.send(type="warp")
    alice.error("unknown_type")
    alice.say("x" * 501)
    alice.error("message_too_long")
    alice.ws.send(json.dumps({"type": "message", "text": "y" * 20_000}))
    alice.error("message_too_long")
    alice.send(type="message", text={"nested": True})
    alice.error("invalid_message")
    alice.say("   ")
    alice.error("invalid_message")
    alice.say("x" * 500)
    observer.wait_for(said("x" * 500))
    assert [m["text"] for m in observer.messages()] == ["x" * 500]
    assert not [f for f in observer.frames if f["type"] == "error"]


def test_flooding_frames_disconnects_only_the_flooder(room):
    observer = room["join"]()
    alice, bob = room["join"](room["alice"]), room["join"](room["bob"])
    for _ in range(60):
        try:
            alice.ws.send("{}")
        except Exception:  # noqa: BLE001 - the server may close mid-burst
            break
    alice.error("flood")
    with pytest.raises(Exception):
        alice.wait_for(lambda f: False, timeout=5)
    bob.say("unharmed")
    observer.wait_for(said("unharmed"))


def test_ended_stream_stops_writes(room):
    http, stream_id = room["http"], room["stream_id"]
    bob = room["join"](room["bob"])
    assert http.post(f"/api/v1/live/{stream_id}/end", headers=room["owner"]["headers"]).status_code == 200
    bob.wait_for(lambda f: f["type"] == "stream_ended")
    bob.say("anyone?")
    bob.error("stream_ended")
    # Reading still works: the backlog of an ended stream stays available.
    assert room["join"]().hello["status"] == "ended"
