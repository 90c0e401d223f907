"""Creator analytics checked against the exact views, likes, shares, comments and follows posted."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import text

from clipfeed.analytics import service
from clipfeed.db import utcnow
from clipfeed.media.models import Video
from tests.conftest import register
from tests.feed import factories as ff
from tests.social import factories as f


def test_analytics_numbers_match_the_views_posted(client, live_server, user):
    settings = live_server.settings
    owner = user
    viewer_a, viewer_b, late, stranger = f.make_users(settings, 4)
    video_id = f.make_video(settings, owner["user"]["id"], duration_ms=10_000)
    view = f"/api/v1/videos/{video_id}/view"
    posts = [
        (viewer_a["headers"], {"watch_ms": 2_500}),                                    # left at 2.5 s
        (viewer_b["headers"], {"watch_ms": 10_000, "completed": True}),                # watched it all
        ({"User-Agent": "phone/1"}, {"watch_ms": 1_000}),                              # anonymous skip
        (viewer_a["headers"], {"watch_ms": 25_000, "completed": True, "replay": True}),  # looped
    ]
    for headers, body in posts:
        assert client.post(view, json=body, headers=headers).status_code == 200

    # Engagement: 2 likes, 1 share, 3 comments (one a reply).
    for fan in (viewer_a, viewer_b):
        assert client.post(f"/api/v1/videos/{video_id}/like", headers=fan["headers"]).status_code == 200
    assert client.post(f"/api/v1/videos/{video_id}/share", headers=viewer_b["headers"]).status_code == 200
    top = client.post(f"/api/v1/videos/{video_id}/comment", json={"text": "wow"}, headers=viewer_a["headers"]).json()
    client.post(f"/api/v1/videos/{video_id}/comment", json={"text": "yes", "parent_id": top["id"]},
                headers=viewer_b["headers"])
    client.post(f"/api/v1/videos/{video_id}/comment", json={"text": "hi"}, headers=stranger["headers"])

    # Follows: b follows right after viewing (gained); `late` viewed but followed 2 h later (not
    # gained); the stranger follows without having viewed (not gained).
    client.post(view, json={"watch_ms": 3_000}, headers=late["headers"])
    f.follow(settings, viewer_b["user"]["id"], owner["user"]["id"])
    f.follow(settings, late["user"]["id"], owner["user"]["id"], at=utcnow() + timedelta(hours=2))
    f.follow(settings, stranger["user"]["id"], owner["user"]["id"])

    response = client.get(f"/api/v1/videos/{video_id}/analytics", headers=owner["headers"])
    assert response.status_code == 200, response.text
    stats = response.json()
    # Views: 2500, 10000 (complete), 1000 (skip), 25000 (replay: complete), 3000.
    assert stats["views"] == 5
    assert stats["unique_viewers"] == 4  # a, b, the anonymous phone, late
    assert stats["total_watch_ms"] == 41_500
    assert stats["avg_watch_ms"] == 8_300.0
    assert stats["completion_rate"] == 0.4
    # Effective watch: 2500, 10000, 1000, 10000, 3000 -> share still watching at each second.
    assert stats["retention"] == [1.0, 1.0, 0.8, 0.6] + [0.4] * 7
    assert (stats["likes"], stats["shares"], stats["comments"]) == (2, 1, 3)
    assert stats["follows_gained"] == 1
    assert stats["duration_ms"] == 10_000


def test_anonymous_viewers_are_told_apart_by_client(client, live_server, user):
    video_id = f.make_video(live_server.settings, user["user"]["id"], duration_ms=5_000)
    for agent in ("phone/1", "phone/1", "laptop/2"):
        client.post(f"/api/v1/videos/{video_id}/view", json={"watch_ms": 5_000}, headers={"User-Agent": agent})
    stats = client.get(f"/api/v1/videos/{video_id}/analytics", headers=user["headers"]).json()
    assert stats["views"] == 3 and stats["unique_viewers"] == 2
    assert stats["retention"] == [1.0] * 6 and stats["completion_rate"] == 1.0


def test_empty_analytics_and_who_may_see_them(client, live_server, user):
    settings = live_server.settings
    video_id = f.make_video(settings, user["user"]["id"], duration_ms=3_400)
    path = f"/api/v1/videos/{video_id}/analytics"
    stats = client.get(path, headers=user["headers"]).json()
    assert stats["views"] == 0 and stats["avg_watch_ms"] == 0.0 and stats["retention"] == [0.0] * 4
    other, blocked = register(client), register(client)
    f.block(settings, user["user"]["id"], blocked["user"]["id"])
    assert client.get(path).status_code == 401
    forbidden = client.get(path, headers=other["headers"])
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert client.get(path, headers=blocked["headers"]).status_code == 404
    private = f.make_video(settings, user["user"]["id"], visibility="private")
    assert client.get(f"/api/v1/videos/{private}/analytics", headers=other["headers"]).status_code == 404
    assert client.get(f"/api/v1/videos/{private}/analytics", headers=user["headers"]).status_code == 200
    assert client.get("/api/v1/videos/nosuchvideo00000/analytics", headers=user["headers"]).status_code == 404


def _at(day: date, *hms: int) -> datetime:
    return datetime.combine(day, time(*hms), UTC)


def test_views_by_day_cover_thirty_utc_days_zero_filled(client, live_server, user):
    settings = live_server.settings
    video_id = f.make_video(settings, user["user"]["id"], duration_ms=5_000)
    other_video = f.make_video(settings, user["user"]["id"], duration_ms=5_000)
    today = utcnow().date()
    # Two views today through the API, then events written with chosen times: the window's
    # first and last instants, a skip (a view), and what must not count (a like, an older view,
    # another video's view).
    for _ in range(2):
        assert client.post(f"/api/v1/videos/{video_id}/view", json={"watch_ms": 1_000}).status_code == 200
    owner_id = user["user"]["id"]
    ff.events(settings, [{"creator_id": owner_id, **row} for row in [
        {"kind": "skip", "video_id": video_id, "created_at": utcnow() - timedelta(seconds=5)},
        {"kind": "like", "video_id": video_id, "created_at": utcnow() - timedelta(seconds=5)},
        {"kind": "view", "video_id": video_id, "created_at": _at(today - timedelta(days=1), 23, 59, 59)},
        {"kind": "view", "video_id": video_id, "created_at": _at(today - timedelta(days=3), 0, 0, 0)},
        *[{"kind": "view", "video_id": video_id, "created_at": _at(today - timedelta(days=29), 0, 0, 0)}] * 2,
        *[{"kind": "view", "video_id": video_id, "created_at": _at(today - timedelta(days=30), 23, 59, 59)}] * 5,
        {"kind": "view", "video_id": other_video, "created_at": _at(today - timedelta(days=1), 12)},
    ]])
    expected = {today: 3, today - timedelta(days=1): 1, today - timedelta(days=3): 1, today - timedelta(days=29): 2}

    series = client.get(f"/api/v1/videos/{video_id}/analytics", headers=user["headers"]).json()["views_by_day"]
    days = [date.fromisoformat(row["date"]) for row in series]
    assert len(series) == 30
    assert days == [days[0] + timedelta(days=i) for i in range(30)]  # consecutive, oldest first
    assert days[-1] in (today, today + timedelta(days=1))  # today (the clock may pass midnight mid-test)
    assert {row["date"]: row["views"] for row in series} == {d.isoformat(): expected.get(d, 0) for d in days}
    if days[-1] == today:
        assert sum(row["views"] for row in series) == 7  # the 31-days-old views are outside

    empty = client.get(f"/api/v1/videos/{other_video}/analytics", headers=user["headers"]).json()["views_by_day"]
    assert sum(row["views"] for row in empty) == (1 if days[-1] == today else 0)

    # Across the creator's videos: both videos' views, nobody else's.
    stranger = register(client)
    client.post(f"/api/v1/videos/{f.make_video(settings, stranger['user']['id'])}/view", json={"watch_ms": 1_000})
    mine = client.get("/api/v1/me/analytics", headers=user["headers"])
    assert mine.status_code == 200, mine.text
    expected[today - timedelta(days=1)] += 1
    by_date = {row["date"]: row["views"] for row in mine.json()["views_by_day"]}
    assert len(by_date) == 30 and by_date == {d.isoformat(): expected.get(d, 0) for d in days}
    assert client.get("/api/v1/me/analytics").status_code == 401
    theirs = client.get("/api/v1/me/analytics", headers=stranger["headers"]).json()["views_by_day"]
    assert sum(row["views"] for row in theirs) == 1  # their one video's one view, none of ours


def test_views_by_day_are_utc_days_whatever_the_session_time_zone(live_server, user):
    """PostgreSQL's date() of a timestamptz follows the session's TimeZone: a view at 23:59:59 UTC
    must stay on its UTC day even when the connection runs 14 hours ahead."""
    settings = live_server.settings
    video_id = f.make_video(settings, user["user"]["id"])
    day = date(2026, 3, 10)
    ff.events(settings, [{"kind": "view", "video_id": video_id, "created_at": _at(day, 23, 59, 59)},
                         {"kind": "view", "video_id": video_id, "created_at": _at(day + timedelta(days=1), 0, 0, 1)}])

    async def work(session):
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(text("SET TIME ZONE 'Pacific/Kiritimati'"))
        video = await session.get(Video, video_id)
        return await service.views_by_day(session, video, days=3, today=day + timedelta(days=1))

    assert ff.run(settings, work) == [{"date": "2026-03-09", "views": 0}, {"date": "2026-03-10", "views": 1},
                                      {"date": "2026-03-11", "views": 1}]
