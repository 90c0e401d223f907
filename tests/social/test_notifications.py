"""Notifications over real HTTP: the inbox (cursor, unread count, mark read) and the live
Server-Sent Events stream (live push across threads/processes' channels, polling fallback,
Last-Event-ID replay), on every backend."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from clipfeed.social import notifications as notifications_service
from clipfeed.social.models import Notification
from tests.conftest import wait_for
from tests.mediagen import make_clip
from tests.social.factories import make_users, make_video, run

API = "/api/v1"


class EventStream:
    """A real SSE client on httpx: reads frames off the wire with a deadline."""

    def __init__(self, base_url: str, headers: dict, *, last_event_id: str | None = None, read_timeout: float = 8):
        self._client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(10, read=read_timeout))
        if last_event_id:
            headers = {**headers, "Last-Event-ID": last_event_id}
        self._context = self._client.stream("GET", f"{API}/notifications/stream", headers=headers)
        self.response = self._context.__enter__()
        self._lines = self.response.iter_lines()
        self.comments: list[str] = []
        self.retry: int | None = None

    def wait_connected(self) -> None:
        assert self.response.status_code == 200
        for line in self._lines:
            if line.startswith("retry:"):
                self.retry = int(line.split(":", 1)[1])
            if line == ": connected":
                return
        raise AssertionError("stream ended before it said it was connected")

    def next_event(self, deadline_s: float = 10) -> dict:
        deadline = time.monotonic() + deadline_s
        fields: dict = {}
        for line in self._lines:
            if time.monotonic() > deadline:
                break
            if line.startswith(":"):
                self.comments.append(line)
            elif line == "":
                if "data" in fields:
                    return {"event": fields.get("event"), "id": fields.get("id"), "data": json.loads(fields["data"])}
                fields = {}
            else:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
        raise AssertionError(f"no event within {deadline_s}s")

    def close(self) -> None:
        self._context.__exit__(None, None, None)
        self._client.close()


@pytest.fixture
def streams():
    opened: list[EventStream] = []

    def open_stream(*args, **kwargs) -> EventStream:
        stream = EventStream(*args, **kwargs)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


@pytest.fixture
def people(live_server):
    owner, fan, other = make_users(live_server.settings, 3, prefix="n")
    return {"owner": owner, "fan": fan, "other": other}


def follow(client, who, whom) -> None:
    response = client.post(f"{API}/users/{whom['user']['id']}/follow", headers=who["headers"])
    assert response.status_code == 200, response.text


def inbox(client, who, **params) -> dict:
    response = client.get(f"{API}/notifications", headers=who["headers"], params=params)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------------------------------------
# The inbox
# ---------------------------------------------------------------------------------------------


def test_anonymous_and_bad_tokens_get_401(client):
    bad = {"Authorization": "Bearer not-a-token"}
    for headers in ({}, bad):
        assert client.get(f"{API}/notifications", headers=headers).status_code == 401
        assert client.post(f"{API}/notifications/read", headers=headers, json={"all": True}).status_code == 401
        response = client.get(f"{API}/notifications/stream", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


def test_inbox_is_newest_first_paginated_and_marked_read(client, live_server):
    owner, *fans = make_users(live_server.settings, 4, prefix="i")
    for fan in fans:
        follow(client, fan, owner)
    page = inbox(client, owner, limit=2)
    assert page["unread_count"] == 3 and len(page["items"]) == 2 and page["next_cursor"]
    rest = inbox(client, owner, limit=2, cursor=page["next_cursor"])
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    items = page["items"] + rest["items"]
    assert [item["actor"]["id"] for item in items] == [fan["user"]["id"] for fan in reversed(fans)]
    first = items[0]
    assert first["kind"] == "follow" and first["read"] is False and first["video_id"] is None
    assert set(first) == {"id", "kind", "actor", "video_id", "comment_id", "text", "read", "created_at"}
    assert set(first["actor"]) == {"id", "handle", "display_name"}
    assert inbox(client, fans[0])["items"] == []  # nobody else sees them

    marked = client.post(f"{API}/notifications/read", headers=owner["headers"], json={"ids": [first["id"]]})
    assert marked.json() == {"updated": 1, "unread_count": 2}
    # Someone else's ids are ignored (and say nothing about whether they exist).
    other = client.post(f"{API}/notifications/read", headers=fans[0]["headers"], json={"ids": [items[1]["id"]]})
    assert other.json() == {"updated": 0, "unread_count": 0}
    assert inbox(client, owner)["unread_count"] == 2
    everything = client.post(f"{API}/notifications/read", headers=owner["headers"], json={"all": True})
    assert everything.json() == {"updated": 2, "unread_count": 0}
    assert all(item["read"] for item in inbox(client, owner)["items"])


@pytest.mark.parametrize("body, field", [({}, "ids"), ({"ids": "abc"}, "ids"), ({"ids": ["x"], "more": 1}, "more"),
                                         ({"all": "maybe"}, "all"), ({"ids": ["x" * 40]}, "ids.0")])
def test_mark_read_rejects_bad_bodies(client, people, body, field):
    response = client.post(f"{API}/notifications/read", headers=people["owner"]["headers"], json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_mark_read_rejects_malformed_json(client, people):
    headers = {**people["owner"]["headers"], "Content-Type": "application/json"}
    response = client.post(f"{API}/notifications/read", headers=headers, content=b"{nope")
    assert response.status_code == 422


def test_notifications_from_blocked_users_disappear(client, people):
    owner, fan = people["owner"], people["fan"]
    follow(client, fan, owner)
    assert inbox(client, owner)["unread_count"] == 1
    assert client.post(f"{API}/users/{fan['user']['id']}/block", headers=owner["headers"]).status_code == 200
    page = inbox(client, owner)
    assert page["items"] == [] and page["unread_count"] == 0


# ---------------------------------------------------------------------------------------------
# The live stream
# ---------------------------------------------------------------------------------------------


def test_stream_pushes_a_follow_as_it_happens(client, live_server, people, streams, monkeypatch):
    # No polling during this test: the event must arrive through the live channel.
    monkeypatch.setattr(notifications_service, "POLL_S", 3600.0)
    owner, fan = people["owner"], people["fan"]
    stream = streams(live_server.url, owner["headers"])
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert stream.response.headers["cache-control"] == "no-store"
    stream.wait_connected()
    assert stream.retry and stream.retry > 0

    started = time.monotonic()
    follow(client, fan, owner)
    event = stream.next_event(deadline_s=5)
    assert time.monotonic() - started < 5
    assert event["event"] == "notification"
    assert event["data"]["kind"] == "follow" and event["data"]["actor"]["id"] == fan["user"]["id"]
    assert event["id"] == event["data"]["id"] == inbox(client, owner)["items"][0]["id"]


def test_stream_pushes_a_like(client, live_server, people, streams, monkeypatch):
    monkeypatch.setattr(notifications_service, "POLL_S", 3600.0)
    owner, fan = people["owner"], people["fan"]
    video_id = make_video(live_server.settings, owner["user"]["id"])
    stream = streams(live_server.url, owner["headers"])
    stream.wait_connected()
    response = client.post(f"{API}/videos/{video_id}/like", headers=fan["headers"])
    assert response.status_code in (200, 201), response.text
    event = stream.next_event(deadline_s=5)
    assert event["data"]["kind"] == "like" and event["data"]["video_id"] == video_id
    assert event["data"]["actor"]["handle"] == fan["user"]["handle"]


def test_stream_gets_notifications_published_from_another_thread_and_loop(live_server, people, streams, monkeypatch):
    """What a media job on a worker thread does: its own event loop, its own engine."""
    monkeypatch.setattr(notifications_service, "POLL_S", 3600.0)
    owner = people["owner"]
    video_id = make_video(live_server.settings, owner["user"]["id"])
    stream = streams(live_server.url, owner["headers"])
    stream.wait_connected()

    async def ready(session):
        await notifications_service.notify(session, owner["user"]["id"], "video_ready", video_id=video_id)

    run(live_server.settings, ready)
    event = stream.next_event(deadline_s=5)
    assert event["data"]["kind"] == "video_ready" and event["data"]["video_id"] == video_id
    assert event["data"]["actor"] is None


def test_stream_polls_for_rows_nobody_published(live_server, people, streams):
    """A writer that cannot reach the live channel (another process on SQLite): the row still
    arrives, through the stream's periodic read of the table."""
    owner = people["owner"]
    stream = streams(live_server.url, owner["headers"])
    stream.wait_connected()

    async def insert(session):
        session.add(Notification(user_id=owner["user"]["id"], kind="video_rejected", text="too long"))

    run(live_server.settings, insert)
    event = stream.next_event(deadline_s=notifications_service.POLL_S * 3)
    assert event["data"]["kind"] == "video_rejected" and event["data"]["text"] == "too long"


def test_stream_replays_what_came_after_last_event_id(client, live_server, people, streams):
    owner, fan, other = people["owner"], people["fan"], people["other"]
    follow(client, fan, owner)
    follow(client, other, owner)
    newest, oldest = inbox(client, owner)["items"]
    stream = streams(live_server.url, owner["headers"], last_event_id=oldest["id"])
    stream.wait_connected()
    event = stream.next_event(deadline_s=5)
    assert event["id"] == newest["id"] and event["data"]["actor"]["id"] == other["user"]["id"]
    # Nothing else is replayed (the oldest one was seen already), and new ones keep coming.
    third = make_users(live_server.settings, 1, prefix="z")[0]
    follow(client, third, owner)
    event = stream.next_event(deadline_s=5)
    assert event["data"]["actor"]["id"] == third["user"]["id"]


def test_another_users_last_event_id_replays_nothing(client, live_server, people, streams):
    owner, fan = people["owner"], people["fan"]
    follow(client, owner, fan)
    foreign = inbox(client, fan)["items"][0]["id"]
    follow(client, fan, owner)
    stream = streams(live_server.url, owner["headers"], last_event_id=foreign)
    stream.wait_connected()
    follow(client, people["other"], owner)
    event = stream.next_event(deadline_s=5)  # the live one, not a replay of the earlier follow
    assert event["data"]["actor"]["id"] == people["other"]["user"]["id"]


def test_stream_accepts_the_session_cookie(client, live_server, streams):
    from tests.conftest import register

    me = register(client)
    stream = streams(live_server.url, {"Cookie": f"clipfeed_session={me['token']}"})
    stream.wait_connected()


# ---------------------------------------------------------------------------------------------
# From the media pipeline
# ---------------------------------------------------------------------------------------------


def test_processing_notifies_ready_and_rejected(client, live_server, people, streams, tmp_path):
    from tests.media.test_pipeline import tus_upload

    owner = people["owner"]
    stream = streams(live_server.url, owner["headers"], read_timeout=60)
    stream.wait_connected()
    clip = make_clip(tmp_path / "tiny.mp4", width=320, height=240, seconds=1.5, fps=15, audio=False)
    video_id = tus_upload(live_server.url, owner["headers"], clip)
    event = stream.next_event(deadline_s=120)
    assert event["data"]["kind"] == "video_ready" and event["data"]["video_id"] == video_id

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all\n" * 50)
    junk_id = tus_upload(live_server.url, owner["headers"], junk)
    event = stream.next_event(deadline_s=60)
    assert event["data"]["kind"] == "video_rejected" and event["data"]["video_id"] == junk_id
    assert event["data"]["text"]
    kinds = wait_for(lambda: [i["kind"] for i in inbox(client, owner)["items"]] or None, timeout=10)
    assert kinds == ["video_rejected", "video_ready"]
