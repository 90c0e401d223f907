"""The Following feed over real HTTP: who and what it shows, and a cursor that holds while new
videos arrive."""

from __future__ import annotations

from datetime import timedelta

from clipfeed.db import utcnow
from tests.feed import factories as f


def page(client, headers, **params) -> dict:
    response = client.get("/api/v1/feed/following", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_needs_a_signed_in_viewer(client):
    response = client.get("/api/v1/feed/following")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert client.get("/api/v1/feed/following", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_only_followed_creators_and_what_the_viewer_may_see(client, settings):
    viewer = f.make_user(settings)
    followed = f.make_user(settings)
    stranger = f.make_user(settings)
    blocker = f.make_user(settings)
    t0 = utcnow() - timedelta(hours=1)
    public = f.make_video(settings, followed["id"], "public", published_at=t0)
    fans = f.make_video(settings, followed["id"], "followers only", visibility="followers",
                        published_at=t0 + timedelta(minutes=1))
    f.make_video(settings, followed["id"], "private", visibility="private", published_at=t0 + timedelta(minutes=2))
    f.make_video(settings, followed["id"], "unlisted", visibility="unlisted", published_at=t0 + timedelta(minutes=3))
    f.make_video(settings, followed["id"], "processing", status="processing", published_at=None)
    f.make_video(settings, stranger["id"], "not followed", published_at=t0 + timedelta(minutes=4))
    f.make_video(settings, viewer["id"], "my own", published_at=t0 + timedelta(minutes=5))
    f.make_video(settings, blocker["id"], "blocked either way", published_at=t0 + timedelta(minutes=6))
    f.follow(settings, viewer["id"], followed["id"])
    f.follow(settings, viewer["id"], blocker["id"])
    f.block(settings, blocker["id"], viewer["id"])

    body = page(client, viewer["headers"])
    assert [v["id"] for v in body["items"]] == [fans, public]
    assert body["next_cursor"] is None
    # Another follower sees nothing from people they do not follow.
    other = f.make_user(settings)
    assert page(client, other["headers"])["items"] == []


def test_cursor_is_stable_while_new_videos_arrive(client, settings):
    viewer = f.make_user(settings)
    creators = [f.make_user(settings) for _ in range(3)]
    for creator in creators:
        f.follow(settings, viewer["id"], creator["id"])
    t0 = utcnow() - timedelta(hours=2)
    videos = []
    for i in range(9):
        # Two videos share a timestamp: the id breaks the tie.
        at = t0 + timedelta(minutes=i if i != 5 else 4)
        videos.append((at, f.make_video(settings, creators[i % 3]["id"], f"clip {i}", published_at=at)))
    expected = [vid for _, vid in sorted(videos, key=lambda pair: (pair[0], pair[1]), reverse=True)]

    first = page(client, viewer["headers"], limit=4)
    assert [v["id"] for v in first["items"]] == expected[:4]
    # New videos arrive between the pages.
    fresh = [f.make_video(settings, creators[0]["id"], "brand new"),
             f.make_video(settings, creators[1]["id"], "brand new too")]
    seen = [v["id"] for v in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        body = page(client, viewer["headers"], limit=4, cursor=cursor)
        seen += [v["id"] for v in body["items"]]
        cursor = body["next_cursor"]
    assert seen == expected                      # no duplicates, no gaps, new ones not mixed in
    top = page(client, viewer["headers"], limit=4)
    assert set(v["id"] for v in top["items"][:2]) == set(fresh)


def test_quiet_feeds_reach_back_as_far_as_needed(client, settings):
    viewer = f.make_user(settings)
    creator = f.make_user(settings)
    f.follow(settings, viewer["id"], creator["id"])
    ages = [timedelta(minutes=5), timedelta(hours=20), timedelta(days=5), timedelta(days=40),
            timedelta(days=400), timedelta(days=2000)]
    made = [f.make_video(settings, creator["id"], "old and new", published_at=utcnow() - age) for age in ages]
    seen, cursor = [], None
    for _ in range(4):
        body = page(client, viewer["headers"], limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [v["id"] for v in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == made and cursor is None


def test_bad_cursor_and_limit_are_422(client, settings):
    viewer = f.make_user(settings)
    for params, field in [({"cursor": "garbage!"}, "cursor"), ({"limit": 0}, "limit"), ({"limit": 101}, "limit")]:
        response = client.get("/api/v1/feed/following", params=params, headers=viewer["headers"])
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field
