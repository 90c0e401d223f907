"""Follows, blocks, profiles and visibility over real HTTP, on every backend."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select

from clipfeed.social.models import Follow, InteractionEvent, Notification
from clipfeed.storage import LocalStore
from tests.conftest import LiveServer, register, wait_for
from tests.social.factories import count, make_users, make_video, run

API = "/api/v1"


def follow(client, headers, user_id, **kwargs) -> httpx.Response:
    return client.post(f"{API}/users/{user_id}/follow", headers=headers, **kwargs)


def unfollow(client, headers, user_id) -> httpx.Response:
    return client.delete(f"{API}/users/{user_id}/follow", headers=headers)


def profile(client, user_id, headers=None) -> httpx.Response:
    return client.get(f"{API}/users/{user_id}/profile", headers=headers or {})


def put_blob(settings, key: str, data: bytes) -> None:
    async def chunks():
        yield data

    asyncio.run(LocalStore(settings.blob_root).put(key, chunks()))


def poster_url(video_id: str) -> str:
    return f"/media/videos/{video_id}/poster.jpg"


@pytest.fixture
def people(live_server):
    """Three users (owner, fan, stranger) with tokens, made straight in the database."""
    owner, fan, stranger = make_users(live_server.settings, 3, prefix="g")
    return {"owner": owner, "fan": fan, "stranger": stranger}


def _error_field(response: httpx.Response) -> str | None:
    return response.json()["error"].get("field")


# ---------------------------------------------------------------------------------------------
# Authorization matrix and bad input
# ---------------------------------------------------------------------------------------------


def test_anonymous_callers_get_401_on_every_write(client, people):
    target = people["owner"]["user"]["id"]
    for method, path in [("POST", f"/users/{target}/follow"), ("DELETE", f"/users/{target}/follow"),
                         ("POST", f"/users/{target}/block"), ("DELETE", f"/users/{target}/block"),
                         ("GET", "/me/blocks"), ("PATCH", "/me")]:
        response = client.request(method, API + path, json={} if method == "PATCH" else None)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"


def test_unknown_users_are_404(client, people):
    headers = people["fan"]["headers"]
    for method, path in [("POST", "/users/nobody0000000000/follow"), ("DELETE", "/users/nobody0000000000/follow"),
                         ("POST", "/users/nobody0000000000/block"), ("DELETE", "/users/nobody0000000000/block"),
                         ("GET", "/users/nobody0000000000/profile"), ("GET", "/users/nobody0000000000/followers"),
                         ("GET", "/users/nobody0000000000/following"), ("GET", "/users/by-handle/nobody_here"),
                         ("GET", "/users/nobody0000000000/videos")]:
        response = client.request(method, API + path, headers=headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"


def test_self_follow_and_self_block_are_422(client, people):
    me = people["fan"]
    response = follow(client, me["headers"], me["user"]["id"])
    assert response.status_code == 422 and _error_field(response) == "user_id"
    response = client.post(f"{API}/users/{me['user']['id']}/block", headers=me["headers"])
    assert response.status_code == 422 and _error_field(response) == "user_id"


def test_malformed_follow_body_is_422(client, people):
    target = people["owner"]["user"]["id"]
    headers = {**people["fan"]["headers"], "Content-Type": "application/json"}
    response = client.post(f"{API}/users/{target}/follow", headers=headers, content=b"{not json")
    assert response.status_code == 422
    response = follow(client, people["fan"]["headers"], target, json={"video_id": "x" * 100})
    assert response.status_code == 422 and _error_field(response) == "video_id"


# ---------------------------------------------------------------------------------------------
# Follows
# ---------------------------------------------------------------------------------------------


def test_follow_is_idempotent_counted_and_listed(client, live_server, people):
    owner, fan = people["owner"], people["fan"]
    first = follow(client, fan["headers"], owner["user"]["id"])
    assert first.status_code == 200, first.text
    assert first.json() == {"user_id": owner["user"]["id"], "following": True, "changed": True,
                                 "follower_count": 1, "following_count": 1}
    again = follow(client, fan["headers"], owner["user"]["id"])
    assert again.json()["changed"] is False and again.json()["follower_count"] == 1

    seen_by_fan = profile(client, owner["user"]["id"], fan["headers"]).json()
    assert seen_by_fan["follower_count"] == 1 and seen_by_fan["is_following"] is True
    assert seen_by_fan["follows_you"] is False and seen_by_fan["blocked"] is False
    seen_by_owner = profile(client, fan["user"]["id"], owner["headers"]).json()
    assert seen_by_owner["following_count"] == 1 and seen_by_owner["follows_you"] is True
    assert profile(client, owner["user"]["id"]).json()["is_following"] is False  # anonymous

    followers = client.get(f"{API}/users/{owner['user']['id']}/followers").json()
    assert [u["id"] for u in followers["items"]] == [fan["user"]["id"]] and followers["next_cursor"] is None
    following = client.get(f"{API}/users/{fan['user']['id']}/following", headers=fan["headers"]).json()
    assert [u["id"] for u in following["items"]] == [owner["user"]["id"]]
    assert following["items"][0]["is_following"] is True

    # One follow event and one notification, however often the request was repeated.
    settings = live_server.settings
    assert count(settings, InteractionEvent, kind="follow", user_id=fan["user"]["id"]) == 1
    assert count(settings, Notification, kind="follow", user_id=owner["user"]["id"]) == 1

    gone = unfollow(client, fan["headers"], owner["user"]["id"])
    assert gone.status_code == 200 and gone.json()["changed"] is True and gone.json()["follower_count"] == 0
    assert unfollow(client, fan["headers"], owner["user"]["id"]).json()["changed"] is False
    assert profile(client, owner["user"]["id"]).json()["follower_count"] == 0
    assert profile(client, fan["user"]["id"]).json()["following_count"] == 0


def test_follow_from_a_video_is_recorded_on_the_event(client, live_server, people):
    owner, fan = people["owner"], people["fan"]
    video_id = make_video(live_server.settings, owner["user"]["id"])
    assert follow(client, fan["headers"], owner["user"]["id"], json={"video_id": video_id}).status_code == 200
    assert count(live_server.settings, InteractionEvent, kind="follow", video_id=video_id) == 1


def test_fifty_concurrent_follows_are_counted_exactly(client, live_server):
    settings = live_server.settings
    star, *fans = make_users(settings, 51, prefix="c")
    star_id = star["user"]["id"]
    limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
    with httpx.Client(base_url=live_server.url, timeout=60, limits=limits) as http, ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(lambda fan: follow(http, fan["headers"], star_id).status_code, fans))
        assert statuses == [200] * 50
        assert profile(http, star_id).json()["follower_count"] == 50
        assert count(settings, Follow, followee_id=star_id) == 50
        # Repeats change nothing; then everyone leaves at once.
        assert {r for r in pool.map(lambda fan: follow(http, fan["headers"], star_id).json()["changed"], fans[:10])} == {False}
        statuses = list(pool.map(lambda fan: unfollow(http, fan["headers"], star_id).status_code, fans))
        assert statuses == [200] * 50
    assert profile(client, star_id).json()["follower_count"] == 0
    assert count(settings, Follow, followee_id=star_id) == 0
    for fan in fans[:3]:
        assert profile(client, fan["user"]["id"]).json()["following_count"] == 0


def test_mutual_concurrent_follows_do_not_deadlock(client, live_server):
    a, b = make_users(live_server.settings, 2, prefix="m")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda pair: follow(client, pair[0]["headers"], pair[1]["user"]["id"]).status_code,
                                [(a, b), (b, a)] * 5))
    assert set(results) == {200}
    for person in (a, b):
        body = profile(client, person["user"]["id"]).json()
        assert body["follower_count"] == 1 and body["following_count"] == 1


def test_follow_lists_are_cursor_paginated_newest_first(client, live_server, people):
    star = people["owner"]
    fans = make_users(live_server.settings, 5, prefix="p")
    for fan in fans:
        assert follow(client, fan["headers"], star["user"]["id"]).status_code == 200
    seen, cursor = [], None
    while True:
        page = client.get(f"{API}/users/{star['user']['id']}/followers",
                          params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [u["id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [fan["user"]["id"] for fan in reversed(fans)]
    bad = client.get(f"{API}/users/{star['user']['id']}/followers", params={"cursor": "garbage!"})
    assert bad.status_code == 422 and _error_field(bad) == "cursor"


def test_follows_are_rate_limited_per_user(settings_factory):
    settings = settings_factory(follows_per_minute=3)
    server = LiveServer(settings).start()
    try:
        me, *others = make_users(settings, 5, prefix="r")
        with httpx.Client(base_url=server.url, timeout=30) as http:
            codes = [follow(http, me["headers"], other["user"]["id"]).status_code for other in others[:3]]
            assert codes == [200, 200, 200]
            limited = follow(http, me["headers"], others[3]["user"]["id"])
            assert limited.status_code == 429
            assert int(limited.headers["Retry-After"]) >= 1
            assert limited.json()["error"]["code"] == "rate_limited"
            # Someone else is not affected.
            assert follow(http, others[3]["headers"], me["user"]["id"]).status_code == 200
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


def test_block_removes_follows_both_ways_and_hides_everything(client, live_server, people):
    settings = live_server.settings
    owner, fan = people["owner"], people["fan"]
    owner_id, fan_id = owner["user"]["id"], fan["user"]["id"]
    video_id = make_video(settings, owner_id)
    put_blob(settings, f"videos/{video_id}/poster.jpg", b"\xff\xd8poster")
    fan_video = make_video(settings, fan_id)
    assert follow(client, fan["headers"], owner_id).status_code == 200
    assert follow(client, owner["headers"], fan_id).status_code == 200
    assert client.get(poster_url(video_id), headers=fan["headers"]).status_code == 200

    response = client.post(f"{API}/users/{fan_id}/block", headers=owner["headers"])
    assert response.status_code == 200 and response.json()["changed"] is True
    assert client.post(f"{API}/users/{fan_id}/block", headers=owner["headers"]).json()["changed"] is False
    for person in (owner_id, fan_id):
        body = profile(client, person).json()
        assert body["follower_count"] == 0 and body["following_count"] == 0
    assert count(settings, Follow, followee_id=owner_id) == 0 and count(settings, Follow, followee_id=fan_id) == 0

    # The blocked user: no follow, no video, no profile, no list, no media.
    assert follow(client, fan["headers"], owner_id).status_code == 403
    assert client.get(f"{API}/videos/{video_id}", headers=fan["headers"]).status_code == 404
    assert profile(client, owner_id, fan["headers"]).status_code == 404
    assert client.get(f"{API}/users/by-handle/{owner['user']['handle']}", headers=fan["headers"]).status_code == 404
    assert client.get(f"{API}/users/{owner_id}/videos", headers=fan["headers"]).status_code == 404
    assert client.get(f"{API}/users/{owner_id}/followers", headers=fan["headers"]).status_code == 404
    # /media caches access facts for ~2 s: the block reaches it within that.
    wait_for(lambda: client.get(poster_url(video_id), headers=fan["headers"]).status_code == 404,
             timeout=10, message="the blocked user's media access to end")
    # The blocker: sees the profile (to unblock) but not the other's videos, and cannot follow either.
    seen = profile(client, fan_id, owner["headers"]).json()
    assert seen["blocked"] is True and seen["video_count"] == 0
    assert client.get(f"{API}/videos/{fan_video}", headers=owner["headers"]).status_code == 404
    assert client.get(f"{API}/users/{fan_id}/videos", headers=owner["headers"]).json()["items"] == []
    assert follow(client, owner["headers"], fan_id).status_code == 403
    blocks = client.get(f"{API}/me/blocks", headers=owner["headers"]).json()
    assert [b["id"] for b in blocks["items"]] == [fan_id]
    assert client.get(f"{API}/me/blocks", headers=fan["headers"]).json()["items"] == []
    # Everyone else still sees the owner's public video.
    assert client.get(f"{API}/videos/{video_id}").status_code == 200
    assert client.get(poster_url(video_id)).status_code == 200

    # Unblocking restores access (no follows come back by themselves).
    assert client.delete(f"{API}/users/{fan_id}/block", headers=owner["headers"]).json()["changed"] is True
    assert client.delete(f"{API}/users/{fan_id}/block", headers=owner["headers"]).json()["changed"] is False
    assert client.get(f"{API}/videos/{video_id}", headers=fan["headers"]).status_code == 200
    assert profile(client, owner_id, fan["headers"]).json()["is_following"] is False
    assert follow(client, fan["headers"], owner_id).status_code == 200


def test_blocked_users_are_left_out_of_follow_lists(client, live_server, people):
    owner, fan, stranger = people["owner"], people["fan"], people["stranger"]
    for person in (fan, stranger):
        assert follow(client, person["headers"], owner["user"]["id"]).status_code == 200
    assert client.post(f"{API}/users/{stranger['user']['id']}/block", headers=fan["headers"]).status_code == 200
    listed = client.get(f"{API}/users/{owner['user']['id']}/followers", headers=fan["headers"]).json()
    assert [u["id"] for u in listed["items"]] == [fan["user"]["id"]]
    listed = client.get(f"{API}/users/{owner['user']['id']}/followers").json()
    assert len(listed["items"]) == 2


# ---------------------------------------------------------------------------------------------
# Visibility
# ---------------------------------------------------------------------------------------------


def test_visibility_matrix_for_videos_lists_and_media(client, live_server, people):
    settings = live_server.settings
    owner, fan, stranger = people["owner"], people["fan"], people["stranger"]
    owner_id = owner["user"]["id"]
    videos = {}
    for visibility in ("public", "followers", "unlisted", "private"):
        videos[visibility] = make_video(settings, owner_id, visibility=visibility)
        put_blob(settings, f"videos/{videos[visibility]}/poster.jpg", b"\xff\xd8" + visibility.encode())
    assert follow(client, fan["headers"], owner_id).status_code == 200

    viewers = {"anonymous": {}, "stranger": stranger["headers"], "fan": fan["headers"], "owner": owner["headers"]}
    expected = {  # which videos each viewer can open by id
        "anonymous": {"public", "unlisted"},
        "stranger": {"public", "unlisted"},
        "fan": {"public", "unlisted", "followers"},
        "owner": {"public", "unlisted", "followers", "private"},
    }
    listed = {  # which the profile lists to them
        "anonymous": {"public"}, "stranger": {"public"}, "fan": {"public", "followers"},
        "owner": {"public", "followers", "unlisted", "private"},
    }
    for who, headers in viewers.items():
        for visibility, video_id in videos.items():
            response = client.get(f"{API}/videos/{video_id}", headers=headers)
            assert (response.status_code == 200) == (visibility in expected[who]), (who, visibility, response.status_code)
            if response.status_code == 404:
                assert response.json()["error"]["code"] == "not_found"
        items = client.get(f"{API}/users/{owner_id}/videos", headers=headers).json()["items"]
        assert {item["visibility"] for item in items} == listed[who], who
        assert profile(client, owner_id, headers).json()["video_count"] == len(listed[who])

    # Media: a session is enough for a followers-only video the viewer may see; signed URLs from
    # the API work without one; strangers get 404 either way.
    followers_poster = poster_url(videos["followers"])
    assert client.get(followers_poster, headers=fan["headers"]).status_code == 200
    assert client.get(followers_poster, headers=stranger["headers"]).status_code == 404
    assert client.get(followers_poster).status_code == 404
    signed = client.get(f"{API}/videos/{videos['followers']}", headers=fan["headers"]).json()["urls"]["poster"]
    assert "sig=" in signed and client.get(signed).status_code == 200
    assert client.get(poster_url(videos["private"]), headers=fan["headers"]).status_code == 404
    assert client.get(poster_url(videos["unlisted"])).status_code == 200

    # Unfollowing takes the followers-only video away again.
    assert unfollow(client, fan["headers"], owner_id).status_code == 200
    assert client.get(f"{API}/videos/{videos['followers']}", headers=fan["headers"]).status_code == 404
    items = client.get(f"{API}/users/{owner_id}/videos", headers=fan["headers"]).json()["items"]
    assert {item["visibility"] for item in items} == {"public"}


def test_others_cannot_edit_or_delete_a_video_they_can_see(client, live_server, people):
    owner, stranger = people["owner"], people["stranger"]
    public = make_video(live_server.settings, owner["user"]["id"])
    private = make_video(live_server.settings, owner["user"]["id"], visibility="private")
    assert client.patch(f"{API}/videos/{public}", headers=stranger["headers"], json={"caption": "x"}).status_code == 403
    assert client.delete(f"{API}/videos/{public}", headers=stranger["headers"]).status_code == 403
    assert client.patch(f"{API}/videos/{private}", headers=stranger["headers"], json={"caption": "x"}).status_code == 404
    assert client.delete(f"{API}/videos/{private}", headers=stranger["headers"]).status_code == 404


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------


def test_profile_edits_are_validated_and_stored_as_text(client):
    me = register(client)
    headers = me["headers"]
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    response = client.patch(f"{API}/me", headers=headers,
                            json={"display_name": hostile[:64], "bio": "line one\nline two", "region": "fr"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["display_name"] == hostile[:64] and body["bio"] == "line one\nline two"
    assert body["region"] == "FR" and body["is_me"] is True
    public = profile(client, me["user"]["id"]).json()
    assert public["display_name"] == hostile[:64] and "region" not in public
    by_handle = client.get(f"{API}/users/by-handle/@{me['user']['handle'].upper()}").json()
    assert by_handle["id"] == me["user"]["id"]

    # Only the fields sent change.
    assert client.patch(f"{API}/me", headers=headers, json={"region": None}).json()["region"] is None
    assert profile(client, me["user"]["id"]).json()["bio"] == "line one\nline two"

    for payload, field in [({"bio": "b" * 281}, "bio"), ({"display_name": "d" * 65}, "display_name"),
                           ({"display_name": "   "}, "display_name"), ({"region": "XX"}, "region"),
                           ({"region": "FRA"}, "region"), ({"display_name": "a\x00b"}, "display_name"),
                           ({"bio": 12}, "bio"), ({"handle": "new"}, "handle")]:
        response = client.patch(f"{API}/me", headers=headers, json=payload)
        assert response.status_code == 422, (payload, response.text)
        assert _error_field(response) == field, (payload, response.json())
    response = client.patch(f"{API}/me", headers={**headers, "Content-Type": "application/json"}, content=b"{")
    assert response.status_code == 422
    assert client.get(f"{API}/me", headers=headers).json()["display_name"] == hostile[:64]


def test_follow_state_rows_match_counters(client, live_server, people):
    """The denormalized counters equal the rows after a mixed sequence of writes."""
    settings = live_server.settings
    owner, fan, stranger = people["owner"], people["fan"], people["stranger"]
    follow(client, fan["headers"], owner["user"]["id"])
    follow(client, stranger["headers"], owner["user"]["id"])
    follow(client, owner["headers"], fan["user"]["id"])
    client.post(f"{API}/users/{stranger['user']['id']}/block", headers=owner["headers"])
    unfollow(client, fan["headers"], owner["user"]["id"])
    follow(client, fan["headers"], owner["user"]["id"])

    async def rows(session):
        return (await session.execute(select(Follow.follower_id, Follow.followee_id))).all()

    edges = run(settings, rows)
    for person in (owner, fan, stranger):
        uid = person["user"]["id"]
        body = profile(client, uid).json()
        assert body["follower_count"] == sum(1 for _, b in edges if b == uid)
        assert body["following_count"] == sum(1 for a, _ in edges if a == uid)
