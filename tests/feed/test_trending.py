"""Trending over real HTTP: velocity relative to the item's own baseline, regions, hashtags and
sounds, visibility, the fallback before the first computation."""

from __future__ import annotations

from datetime import timedelta

from clipfeed.db import utcnow
from clipfeed.feed import trending
from clipfeed.jobs.queue import PERIODIC, TASK_MODULES
from tests.feed import factories as f


def ids(client, path: str = "/api/v1/feed/trending", headers: dict | None = None, **params) -> list[str]:
    response = client.get(path, params=params, headers=headers or {})
    assert response.status_code == 200, response.text
    return [item.get("id") or item.get("tag") for item in response.json()["items"]]


def spike(video_id: str, *, views: int, likes: int = 0, shares: int = 0, region: str | None = None,
          hours: float = 1.5) -> list[dict]:
    return (f.steady(video_id, per_hour=views / hours, hours=hours, region=region)
            + f.steady(video_id, per_hour=likes / hours, hours=hours, kind="like", region=region)
            + f.steady(video_id, per_hour=shares / hours, hours=hours, kind="share", region=region))


def evergreen(video_id: str, *, per_hour: int, region: str | None = None) -> list[dict]:
    """Steady traffic for the past 7 days, right up to now."""
    return f.steady(video_id, per_hour=per_hour, hours=7 * 24, region=region)


def test_a_fresh_spike_outranks_an_old_evergreen_video(client, settings):
    big = f.make_user(settings, "big_channel")
    small = f.make_user(settings, "small_creator")
    old = f.make_video(settings, big["id"], "the classic", published_at=utcnow() - timedelta(days=60))
    new = f.make_video(settings, small["id"], "my first clip", published_at=utcnow() - timedelta(hours=2))
    quiet = f.make_video(settings, small["id"], "a few views", published_at=utcnow() - timedelta(hours=3))
    # The evergreen video gets more engagement in the last day than the spike (20/h vs ~70 in
    # 1.5 h), but that is its normal rate; the spike has no history at all.
    f.events(settings, evergreen(old, per_hour=20) + spike(new, views=40, likes=10) + spike(quiet, views=2))

    result = trending.recompute(settings)
    assert result.entries["video"] == 2
    assert ids(client) == [new, old]  # `quiet` stays below the minimum volume
    body = client.get("/api/v1/feed/trending").json()
    assert body["region"] == "" and body["next_cursor"] is None
    assert body["items"][0]["owner_id"] == small["id"]


def test_regions_from_the_parameter_then_the_profile_else_global(client, settings):
    owner = f.make_user(settings)
    french = f.make_video(settings, owner["id"], "baguette")
    american = f.make_video(settings, owner["id"], "bagel")
    f.events(settings, spike(french, views=60, likes=5, region="FR") + spike(american, views=20, region="FR")
             + spike(american, views=150, likes=20, region="us"))
    trending.recompute(settings)

    assert ids(client, region="FR") == [french, american]
    assert ids(client, region="us") == [american]             # region codes are case-insensitive
    assert ids(client) == [american, french]                  # global: all regions together
    assert ids(client, region="JP") == [american, french]     # nothing there: global
    paris = f.make_user(settings, region="FR")
    assert ids(client, headers=paris["headers"]) == [french, american]
    assert ids(client, headers=paris["headers"], region="US") == [american]
    assert client.get("/api/v1/feed/trending", params={"region": "F R!"}).status_code == 422


def test_trending_hashtags_and_sounds(client, settings):
    owner = f.make_user(settings)
    sound_a = f.make_sound(settings, owner["id"], "Sea Shanty Remix")
    sound_b = f.make_sound(settings, owner["id"], "Lo-fi beat")
    hot = [f.make_video(settings, owner["id"], f"take {i} #shantytok #music", sound_id=sound_a) for i in range(3)]
    warm = f.make_video(settings, owner["id"], "chill #lofi #music", sound_id=sound_b)
    secret = f.make_video(settings, owner["id"], "#secrettag", visibility="private", sound_id=sound_b)
    rows = spike(warm, views=30)
    for video in hot:
        rows += spike(video, views=30, likes=5, shares=2)
    rows += spike(secret, views=500, likes=100)                # private videos never count
    f.events(settings, rows)
    trending.recompute(settings)

    tags = client.get("/api/v1/trending/hashtags").json()
    assert [t["tag"] for t in tags["items"]] == ["music", "shantytok", "lofi"]
    assert tags["items"][1]["video_count"] == 3 and tags["items"][0]["score"] > 0
    sounds = client.get("/api/v1/trending/sounds").json()["items"]
    assert [s["id"] for s in sounds] == [sound_a, sound_b]
    assert sounds[0]["title"] == "Sea Shanty Remix"
    limited = client.get("/api/v1/trending/hashtags", params={"limit": 1}).json()
    assert [t["tag"] for t in limited["items"]] == ["music"]
    rest = client.get("/api/v1/trending/hashtags", params={"limit": 5, "cursor": limited["next_cursor"]}).json()
    assert [t["tag"] for t in rest["items"]] == ["shantytok", "lofi"] and rest["next_cursor"] is None


def test_served_lists_respect_visibility_and_blocks_at_read_time(client, settings):
    viewer = f.make_user(settings)
    owner = f.make_user(settings)
    other = f.make_user(settings)
    first = f.make_video(settings, owner["id"], "one")
    second = f.make_video(settings, other["id"], "two")
    third = f.make_video(settings, other["id"], "three")
    f.events(settings, spike(first, views=90) + spike(second, views=60) + spike(third, views=30))
    trending.recompute(settings)
    assert ids(client) == [first, second, third]

    f.block(settings, viewer["id"], owner["id"])
    assert ids(client, headers=viewer["headers"]) == [second, third]
    f.update_video(settings, second, visibility="private")   # hidden after the computation
    assert ids(client) == [first, third]
    page = client.get("/api/v1/feed/trending", params={"limit": 1}).json()
    assert [v["id"] for v in page["items"]] == [first]
    rest = client.get("/api/v1/feed/trending", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [v["id"] for v in rest["items"]] == [third] and rest["next_cursor"] is None


def test_before_any_computation_recent_popular_videos_are_served(client, settings):
    owner = f.make_user(settings)
    plain = f.make_video(settings, owner["id"], "plain")
    liked = f.make_video(settings, owner["id"], "liked", like_count=30, view_count=100)
    f.make_video(settings, owner["id"], "private", visibility="private", like_count=500)
    f.make_video(settings, owner["id"], "old", published_at=utcnow() - timedelta(days=30), like_count=500)
    assert ids(client) == [liked, plain]
    assert client.get("/api/v1/trending/hashtags").json()["items"] == []
    assert client.get("/api/v1/trending/sounds").json()["items"] == []


def test_recompute_is_a_periodic_job_and_safe_to_run_twice(settings):
    assert "clipfeed.feed.tasks" in TASK_MODULES
    import clipfeed.feed.tasks  # noqa: F401  (registers the job)

    assert PERIODIC["trending.recompute"].schedule == {"minute": "*/5"}
    owner = f.make_user(settings)
    video = f.make_video(settings, owner["id"], "x")
    f.events(settings, spike(video, views=50))
    first = trending.recompute(settings)
    second = trending.recompute(settings)
    assert first.entries == second.entries == {"video": 1, "hashtag": 0, "sound": 0}
