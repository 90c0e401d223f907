"""Comments: validation, one level of replies, pagination, deletes and counters, comments off,
notifications and mentions, write limits — through the real server, on every backend."""

from __future__ import annotations

import httpx
import pytest

from clipfeed.social.models import Comment, Notification
from tests.conftest import LiveServer, register
from tests.social import factories as f


@pytest.fixture
def setup(client, live_server):
    owner, fan, friend = (register(client, handle=None) for _ in range(3))
    video_id = f.make_video(live_server.settings, owner["user"]["id"])
    return {"owner": owner, "fan": fan, "friend": friend, "video": video_id, "settings": live_server.settings}


def _comment(client, video_id, who, text="hello", parent_id=None):
    body = {"text": text} | ({"parent_id": parent_id} if parent_id else {})
    return client.post(f"/api/v1/videos/{video_id}/comment", json=body, headers=who["headers"])


def _counts(client, video_id) -> int:
    return client.get(f"/api/v1/videos/{video_id}").json()["comment_count"]


def _notes(settings, user, kind) -> int:
    return f.count(settings, Notification, user_id=user["user"]["id"], kind=kind)


def test_text_is_validated_and_stored_as_typed(client, setup):
    video_id, fan = setup["video"], setup["fan"]
    for text in ("", "   \n\t ", "x" * 1001, " " + "x" * 1001):
        response = _comment(client, video_id, fan, text)
        assert response.status_code == 422, (text[:10], response.text)
        assert response.json()["error"]["field"] == "text"
    assert _comment(client, video_id, fan, "x" * 5000).json()["error"]["field"] == "text"
    missing = client.post(f"/api/v1/videos/{video_id}/comment", json={}, headers=fan["headers"])
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "text"
    ok = _comment(client, video_id, fan, "  " + "y" * 1000 + "  ")
    assert ok.status_code == 201 and ok.json()["text"] == "y" * 1000
    script = _comment(client, video_id, fan, '<script>alert("x")</script> <b>hi</b>')
    assert script.json()["text"] == '<script>alert("x")</script> <b>hi</b>'
    listed = client.get(f"/api/v1/videos/{video_id}/comments").json()["items"]
    assert listed[0]["text"] == '<script>alert("x")</script> <b>hi</b>'
    assert listed[0]["author"] == {"id": fan["user"]["id"], "handle": fan["user"]["handle"],
                                   "display_name": fan["user"]["display_name"]}


def test_replies_are_one_level_paginated_and_counted(client, setup):
    video_id, owner, fan, friend = setup["video"], setup["owner"], setup["fan"], setup["friend"]
    top = _comment(client, video_id, fan, "first!").json()
    other_top = _comment(client, video_id, friend, "second").json()
    reply = _comment(client, video_id, owner, "thanks", parent_id=top["id"])
    assert reply.status_code == 201 and reply.json()["parent_id"] == top["id"]
    # Replying to a reply attaches to the top-level comment.
    nested = _comment(client, video_id, friend, "me too", parent_id=reply.json()["id"]).json()
    assert nested["parent_id"] == top["id"]
    third = _comment(client, video_id, fan, "and again", parent_id=top["id"]).json()

    page = client.get(f"/api/v1/videos/{video_id}/comments").json()
    assert [c["id"] for c in page["items"]] == [other_top["id"], top["id"]]  # top level only, newest first
    assert page["items"][1]["reply_count"] == 3 and page["next_cursor"] is None
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = client.get(f"/api/v1/comments/{top['id']}/replies", params=params).json()
        seen += [c["id"] for c in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == [reply.json()["id"], nested["id"], third["id"]]  # oldest first
    assert _counts(client, video_id) == 5

    elsewhere = f.make_video(setup["settings"], owner["user"]["id"])
    wrong = _comment(client, elsewhere, fan, "hm", parent_id=top["id"])
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "parent_id"
    assert _comment(client, video_id, fan, "hm", parent_id="nosuchcomment000").json()["error"]["field"] == "parent_id"
    assert client.get("/api/v1/comments/nosuchcomment000/replies").status_code == 404
    assert client.get(f"/api/v1/videos/{video_id}/comments", params={"cursor": "%%%"}).status_code == 422


def test_deletes_by_author_or_owner_fix_the_counters(client, setup):
    video_id, owner, fan, friend = setup["video"], setup["owner"], setup["fan"], setup["friend"]
    top = _comment(client, video_id, fan, "top").json()
    replies = [_comment(client, video_id, friend, f"r{i}", parent_id=top["id"]).json() for i in range(3)]
    lone = _comment(client, video_id, friend, "lone").json()
    assert _counts(client, video_id) == 5

    assert client.delete(f"/api/v1/comments/{replies[0]['id']}").status_code == 401
    forbidden = client.delete(f"/api/v1/comments/{replies[0]['id']}", headers=fan["headers"])
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert client.delete(f"/api/v1/comments/{replies[0]['id']}", headers=friend["headers"]).status_code == 204
    assert client.delete(f"/api/v1/comments/{replies[0]['id']}", headers=friend["headers"]).status_code == 404
    tops = client.get(f"/api/v1/videos/{video_id}/comments").json()["items"]
    assert {c["id"]: c["reply_count"] for c in tops}[top["id"]] == 2
    assert _counts(client, video_id) == 4
    # The video's owner deletes a thread: its replies go with it.
    assert client.delete(f"/api/v1/comments/{top['id']}", headers=owner["headers"]).status_code == 204
    assert _counts(client, video_id) == 1
    assert client.get(f"/api/v1/comments/{replies[1]['id']}/replies").status_code == 404
    assert f.count(setup["settings"], Comment, video_id=video_id) == 1
    assert client.delete(f"/api/v1/comments/{lone['id']}", headers=owner["headers"]).status_code == 204
    assert _counts(client, video_id) == 0
    assert client.delete("/api/v1/comments/nosuchcomment000", headers=owner["headers"]).status_code == 404


def test_owner_can_turn_comments_off(client, setup):
    video_id, owner, fan = setup["video"], setup["owner"], setup["fan"]
    existing = _comment(client, video_id, fan, "before").json()
    path = f"/api/v1/videos/{video_id}"
    assert client.patch(path, json={"comments_enabled": False}, headers=fan["headers"]).status_code == 403
    off = client.patch(path, json={"comments_enabled": False}, headers=owner["headers"])
    assert off.status_code == 200 and off.json()["comments_enabled"] is False
    for who in (fan, owner):
        response = _comment(client, video_id, who, "after")
        assert response.status_code == 403 and response.json()["error"]["code"] == "comments_disabled"
    reply = _comment(client, video_id, owner, "reply", parent_id=existing["id"])
    assert reply.json()["error"]["code"] == "comments_disabled"
    assert [c["id"] for c in client.get(f"{path}/comments").json()["items"]] == [existing["id"]]
    assert client.patch(path, json={"comments_enabled": "maybe"}, headers=owner["headers"]).status_code == 422
    assert client.patch(path, json={"comments_enabled": True}, headers=owner["headers"]).json()["comments_enabled"]
    assert _comment(client, video_id, fan, "again").status_code == 201


def test_notifications_for_comments_replies_and_mentions(client, setup):
    settings = setup["settings"]
    video_id, owner, fan, friend = setup["video"], setup["owner"], setup["fan"], setup["friend"]
    outsider = register(client)
    f.block(settings, outsider["user"]["id"], fan["user"]["id"])  # outsider blocked fan: no mention
    text = (f"hey @{friend['user']['handle'].upper()}. look, mail me at x@{friend['user']['handle']}.com "
            f"@{outsider['user']['handle']} @nosuchuser123 @{fan['user']['handle']}")
    top = _comment(client, video_id, fan, text).json()
    assert _notes(settings, owner, "comment") == 1
    assert _notes(settings, friend, "mention") == 1
    assert _notes(settings, outsider, "mention") == 0
    assert _notes(settings, fan, "mention") == 0  # not for mentioning oneself
    # A reply notifies the replied-to author; the owner gets "comment", not twice.
    reply = _comment(client, video_id, friend, f"@{owner['user']['handle']} see", parent_id=top["id"]).json()
    assert _notes(settings, fan, "reply") == 1
    assert _notes(settings, owner, "comment") == 2
    assert _notes(settings, owner, "mention") == 0
    # The owner replying to a reply: the reply's author (friend) is notified.
    _comment(client, video_id, owner, "ok", parent_id=reply["id"])
    assert _notes(settings, friend, "reply") == 1
    assert _notes(settings, owner, "comment") == 2  # no notification for one's own comment


def test_blocked_users_cannot_comment_or_see_comments(client, setup):
    settings = setup["settings"]
    video_id, owner, fan, friend = setup["video"], setup["owner"], setup["fan"], setup["friend"]
    top = _comment(client, video_id, fan, "hello").json()
    f.block(settings, fan["user"]["id"], friend["user"]["id"])  # the comment's author blocks friend
    refused = _comment(client, video_id, friend, "hi", parent_id=top["id"])
    assert refused.status_code == 403
    # friend no longer sees fan's comment; others do.
    assert client.get(f"/api/v1/videos/{video_id}/comments", headers=friend["headers"]).json()["items"] == []
    assert len(client.get(f"/api/v1/videos/{video_id}/comments").json()["items"]) == 1
    f.block(settings, owner["user"]["id"], fan["user"]["id"])  # the creator blocks fan
    assert _comment(client, video_id, fan, "still here?").status_code == 404
    assert client.get(f"/api/v1/comments/{top['id']}/replies", headers=fan["headers"]).status_code == 404


def test_comments_are_rate_limited(settings_factory):
    server = LiveServer(settings_factory(comments_per_minute=3)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:

            def burst():
                owner, fan = f.make_users(server.settings, 2)
                video_id = f.make_video(server.settings, owner["user"]["id"])
                codes = [_comment(http, video_id, fan, f"c{i}").status_code for i in range(4)]
                limited = _comment(http, video_id, fan, "again")
                mine = _comment(http, video_id, owner, "mine").status_code
                count = http.get(f"/api/v1/videos/{video_id}").json()["comment_count"]
                return codes, limited, mine, count

            codes, limited, mine, count = f.in_one_window(burst)
            assert codes == [201, 201, 201, 429]
            assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
            assert limited.json()["error"]["code"] == "rate_limited"
            assert mine == 201 and count == 4
    finally:
        server.stop()
