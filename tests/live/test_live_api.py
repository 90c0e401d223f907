"""Live stream API and the publish seam: authorization matrix, key shown once, rotation, end."""

from __future__ import annotations

import asyncio

import pytest

from clipfeed.live import presence
from clipfeed.live import service as live
from tests.conftest import db_run as _run
from tests.conftest import register


def _authorize(settings, key):
    return _run(settings, lambda session: live.authorize_publish(session, key))


def _refused(settings, key) -> str:
    with pytest.raises(live.PublishRefused) as refused:
        _authorize(settings, key)
    return refused.value.reason


def test_publish_claim_key_rotation_and_end(client, settings):
    owner = register(client)
    started = client.post("/api/v1/live/start", json={"title": "hello"}, headers=owner["headers"])
    assert started.status_code == 201, started.text
    body = started.json()
    key, stream_id = body["stream_key"], body["stream_id"]
    assert body["ingest_url"].startswith("rtmp://") and body["ingest_url"].endswith("/live")

    # The key is shown once: never in the stream's state, not even to the owner.
    state = client.get(f"/api/v1/live/{stream_id}", headers=owner["headers"]).json()
    assert "stream_key" not in state and key not in str(state)
    assert state["status"] == "idle"

    stream = _authorize(settings, key)
    assert stream.id == stream_id and stream.status == "live"
    assert "already being published" in _refused(settings, key)
    assert client.get(f"/api/v1/live/{stream_id}").json()["status"] == "live"

    _run(settings, lambda session: live.publish_ended(session, stream_id, None))
    assert client.get(f"/api/v1/live/{stream_id}").json()["status"] == "idle"

    rotated = client.post(f"/api/v1/live/{stream_id}/rotate-key", headers=owner["headers"])
    assert rotated.status_code == 200
    new_key = rotated.json()["stream_key"]
    assert new_key != key
    assert "unknown stream key" in _refused(settings, key)
    assert _authorize(settings, new_key).status == "live"

    ended = client.post(f"/api/v1/live/{stream_id}/end", headers=owner["headers"])
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    _run(settings, lambda session: live.publish_ended(session, stream_id, None))
    assert client.get(f"/api/v1/live/{stream_id}").json()["status"] == "ended"
    assert "ended" in _refused(settings, new_key)
    assert "unknown stream key" in _refused(settings, "live_nonsense")


def _start(client, who, **body):
    response = client.post("/api/v1/live/start", json=body, headers=who["headers"])
    assert response.status_code == 201, response.text
    return response.json()


def test_authorization_matrix(client):
    owner, other, follower, blocked = (register(client) for _ in range(4))
    assert client.post("/api/v1/live/start", json={}).status_code == 401
    assert client.post("/api/v1/live/start", json={"title": "x" * 141}, headers=owner["headers"]).status_code == 422
    bad = client.post("/api/v1/live/start", json={"visibility": "everyone"}, headers=owner["headers"])
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "visibility"
    stream_id = _start(client, owner, title="public one")["stream_id"]
    # One open stream per creator.
    again = client.post("/api/v1/live/start", json={}, headers=owner["headers"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "stream_open"

    for path in (f"/api/v1/live/{stream_id}/rotate-key", f"/api/v1/live/{stream_id}/end"):
        assert client.post(path).status_code == 401
        denied = client.post(path, headers=other["headers"])
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    assert client.get(f"/api/v1/live/{stream_id}").status_code == 200
    assert client.get("/api/v1/live/nosuchstream").status_code == 404

    # Followers-only and private streams, and blocks: hidden ones are 404 alike.
    assert client.post(f"/api/v1/users/{owner['user']['id']}/follow", headers=follower["headers"]).status_code == 200
    assert client.post(f"/api/v1/users/{blocked['user']['id']}/block", headers=owner["headers"]).status_code in (200, 201)
    assert client.post(f"/api/v1/live/{stream_id}/end", headers=owner["headers"]).status_code == 200
    followers_only = _start(client, owner, visibility="followers")["stream_id"]
    assert client.get(f"/api/v1/live/{followers_only}").status_code == 404
    assert client.get(f"/api/v1/live/{followers_only}", headers=other["headers"]).status_code == 404
    assert client.get(f"/api/v1/live/{followers_only}", headers=follower["headers"]).status_code == 200
    assert client.get(f"/api/v1/live/{followers_only}", headers=owner["headers"]).status_code == 200
    assert client.get(f"/api/v1/live/{stream_id}", headers=blocked["headers"]).status_code == 404
    assert client.post(f"/api/v1/live/{followers_only}/end", headers=other["headers"]).status_code == 404
    assert client.post(f"/api/v1/live/{followers_only}/end", headers=owner["headers"]).status_code == 200
    private = _start(client, owner, visibility="private")["stream_id"]
    assert client.get(f"/api/v1/live/{private}", headers=follower["headers"]).status_code == 404
    assert client.get(f"/api/v1/live/{private}", headers=owner["headers"]).json()["visibility"] == "private"


def test_live_now_list_respects_visibility_blocks_and_paginates(client, settings):
    viewer, fan, blocker = register(client), register(client), register(client)
    creators = [register(client) for _ in range(5)]
    visibilities = ["public", "public", "followers", "unlisted", "public"]
    streams = []
    for creator, visibility in zip(creators, visibilities):
        started = _start(client, creator, title=f"{visibility} show", visibility=visibility)
        streams.append(started["stream_id"])
        if creator is not creators[4]:
            _authorize(settings, started["stream_key"])  # the last one stays idle: not live, not listed
    assert client.post(f"/api/v1/users/{creators[2]['user']['id']}/follow", headers=fan["headers"]).status_code == 200
    assert client.post(f"/api/v1/users/{viewer['user']['id']}/block", headers=creators[1]["headers"]).status_code in (200, 201)

    def ids(headers=None, limit=20):
        out, cursor = [], None
        while True:
            params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
            page = client.get("/api/v1/live", params=params, headers=headers or {})
            assert page.status_code == 200, page.text
            out += [item["id"] for item in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return out

    newest_first = [streams[2], streams[1], streams[0]]
    assert ids() == [streams[1], streams[0]]
    assert ids(limit=1) == [streams[1], streams[0]]
    assert ids(fan["headers"], limit=1) == newest_first
    assert ids(viewer["headers"]) == [streams[0]]  # creator 1 blocked the viewer
    assert ids(creators[3]["headers"]) == [streams[3], streams[1], streams[0]]  # own unlisted stream
    item = client.get("/api/v1/live").json()["items"][0]
    assert item["owner"]["id"] == creators[1]["user"]["id"] and item["playback_url"] == f"/media/live/{streams[1]}/master.m3u8"
    assert client.get("/api/v1/live", params={"cursor": "garbage!"}).status_code == 422


def test_viewers_are_deduplicated_and_peak_is_kept(client, settings, live_server):
    from tests.live.test_chat import Chat

    owner, alice = register(client), register(client)
    started = _start(client, owner)
    stream_id = started["stream_id"]
    _authorize(settings, started["stream_key"])
    chats = [Chat(live_server.url, stream_id, alice["token"]), Chat(live_server.url, stream_id, alice["token"]),
             Chat(live_server.url, stream_id)]
    try:
        # The ingest reports playlist polls with the same key rule: alice's player is alice.
        async def alices_player():
            try:
                await live.note_viewer(stream_id, live.viewer_key_for(alice["user"]["id"], "10.0.0.9", "x"), settings)
            finally:
                await presence.close_clients()  # this loop's Redis client ends with it

        asyncio.run(alices_player())
        state = client.get(f"/api/v1/live/{stream_id}").json()
        assert state["viewers"] == 2 and state["peak_viewers"] == 2
    finally:
        for chat in chats:
            chat.close()
    _run(settings, lambda session: live.publish_ended(session, stream_id, None))
    state = client.get(f"/api/v1/live/{stream_id}").json()
    assert state["status"] == "idle" and state["viewers"] == 0 and state["peak_viewers"] == 2
