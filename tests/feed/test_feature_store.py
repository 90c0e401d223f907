"""The online feature store (in memory embedded, Redis at scale): an event reaches the user's
profile and the video/creator counters within a second of its commit, profiles are warm-started
from the event table, and the Redis Stream consumer group survives a restart."""

from __future__ import annotations

import time

import pytest

from clipfeed.db.migrate import downgrade, upgrade
from clipfeed.feed import events as feed_events
from clipfeed.feed.feature_store import MemoryFeatureStore, VideoCounters, feature_store, load_user
from clipfeed.feed.foryou import creator_states, video_state
from clipfeed.feed.recsys.features import FEATURE_INDEX, UserState, build_features
from clipfeed.feed.sources import load_catalog
from tests.conftest import wait_for
from tests.feed import factories as f


def load(settings, user_id: str):
    async def work(session):
        return await load_user(session, feature_store(settings), user_id)

    return f.run(settings, work)


def test_events_over_http_reach_the_store_within_a_second(client, settings):
    creator = f.make_user(settings)
    video = f.make_video(settings, creator["id"], "sunset #beach #golden")
    viewer = f.make_user(settings)
    store = feature_store(settings)
    profile = load(settings, viewer["id"])  # warm (empty) profile, as after a first feed page
    assert profile.event_count == 0

    started = time.monotonic()
    assert client.post(f"/api/v1/videos/{video}/view", json={"watch_ms": 10_000, "completed": True},
                       headers=viewer["headers"]).status_code == 200
    assert client.post(f"/api/v1/videos/{video}/like", headers=viewer["headers"]).status_code == 200
    assert client.post(f"/api/v1/users/{creator['id']}/follow", headers=viewer["headers"]).status_code == 200

    def reflected():
        user = store.user(viewer["id"])
        counters = store.videos([video]).get(video)
        creators = store.creators([creator["id"]])
        return (user is not None and user.event_count == 3 and counters is not None and counters.likes == 1
                and counters.completions == 1 and creator["id"] in creators and creators[creator["id"]].followers == 1)

    wait_for(reflected, timeout=5, interval=0.02, message="the events in the feature store")
    assert time.monotonic() - started < 1.0 + 0.5  # three requests plus the fan-out
    user = store.user(viewer["id"]).to_state()
    assert user.hashtag_affinity["beach"] > 0 and user.hashtag_affinity["golden"] > 0
    assert user.creator_affinity[creator["id"]] > 0
    assert [vid for vid, _w, _t in user.recent] == [video, video]  # like + view, newest first
    assert store.videos([video])[video].velocity > 0

    # A skip and "not interested" push the taste the other way.
    other = f.make_video(settings, creator["id"], "#beach again")
    assert client.post(f"/api/v1/videos/{other}/view", json={"watch_ms": 300}, headers=viewer["headers"]).json()["kind"] == "skip"
    assert client.post(f"/api/v1/videos/{other}/not-interested", headers=viewer["headers"]).status_code == 200
    wait_for(lambda: store.user(viewer["id"]).event_count == 5, timeout=5, interval=0.02, message="skip + not interested")
    assert store.user(viewer["id"]).to_state().hashtag_affinity["beach"] < user.hashtag_affinity["beach"]


def test_profiles_warm_start_from_the_event_table(settings):
    creator = f.make_user(settings)
    liked = f.make_video(settings, creator["id"], "#cooking pasta")
    viewer = f.make_user(settings)
    f.events(settings, [
        {"kind": "view", "user_id": viewer["id"], "video_id": liked, "creator_id": creator["id"],
         "watch_ms": 10_000, "completed": True, "created_at": f.utcnow()},
        {"kind": "like", "user_id": viewer["id"], "video_id": liked, "creator_id": creator["id"],
         "created_at": f.utcnow()},
    ])
    store = feature_store(settings)
    assert store.user(viewer["id"]) is None  # nothing loaded: a miss
    # An event for a profile that is not loaded is skipped (the warm start reads it from the table).
    feed_events.dispatch(settings, [feed_events.FeedEvent("like", viewer["id"], "elsewhere", creator["id"], time.time())])
    assert store.user(viewer["id"]) is None
    profile = load(settings, viewer["id"])
    assert profile.event_count == 2
    state = profile.to_state()
    assert state.hashtag_affinity["cooking"] > 0 and state.creator_affinity[creator["id"]] > 0
    assert store.user(viewer["id"]).event_count == 2  # now cached


def test_memory_store_counters_and_velocity_decay():
    store = MemoryFeatureStore()
    now = time.time()
    events = [feed_events.FeedEvent("view", "u1", "v1", "c1", now - 7200, watch_ms=5000, duration_ms=5000, completed=True),
              feed_events.FeedEvent("like", "u1", "v1", "c1", now - 7200),
              feed_events.FeedEvent("view", "u2", "v2", "c1", now, watch_ms=5000, duration_ms=5000, completed=True)]
    store.apply_global(events)
    store.add_impressions(["v1", "v1", "v2"])
    v1, v2 = store.videos(["v1", "v2"])["v1"], store.videos(["v1", "v2"])["v2"]
    assert (v1.views, v1.completions, v1.likes, v1.impressions) == (1, 1, 1, 2)
    # Two half-lives old: the 4 weighted events of v1 count as ~1 now, v2's single view as 1.
    assert v1.velocity_now(now) == pytest.approx(1.0, rel=0.01)
    assert v2.velocity_now(now) == pytest.approx(1.0, rel=0.01)
    assert store.creators(["c1"])["c1"].completion_rate > 0.35


def test_the_stream_consumer_group_picks_up_where_it_left_off(settings):
    now = time.time()
    if not settings.redis_url:
        # Embedded: no stream; the counters are applied in process right after the commit.
        feed_events.dispatch(settings, [feed_events.FeedEvent("share", None, "vs1", "cs1", now)])
        assert feature_store(settings).videos(["vs1"])["vs1"].shares == 1
        return
    consumer = feed_events.StreamConsumer(settings, block_ms=50)
    consumer._ensure_group()
    feed_events.dispatch(settings, [feed_events.FeedEvent("share", None, "vs1", "cs1", now)])
    # Nobody consumes yet: the counters are untouched, the entry waits in the stream.
    assert "vs1" not in feature_store(settings).videos(["vs1"])
    assert consumer.run_once() == 1
    assert feature_store(settings).videos(["vs1"])["vs1"].shares == 1
    # A second consumer of the same group does not see the acknowledged entry again.
    other = feed_events.StreamConsumer(settings, block_ms=50)
    assert other.run_once() == 0
    feed_events.dispatch(settings, [feed_events.FeedEvent("share", None, "vs1", "cs1", now)])
    assert other.run_once() == 1
    assert feature_store(settings).videos(["vs1"])["vs1"].shares == 2
    consumer.stop()
    other.stop()


def _catalog(settings):
    async def work(session):
        return await load_catalog(session, settings)

    return f.run(settings, work)


def test_video_and_creator_features_outlive_the_feature_store(client, settings):
    """The ranker's completion rate is completions / views. Both are counted on the video's row,
    so a feature store that starts empty (a restart, a new Redis) ranks an established video by
    its real rate, not by all its views against the completions seen since the store started;
    its creator by their videos, followers and completion rate, as the ranker was trained."""
    creator = f.make_user(settings)
    video = f.make_video(settings, creator["id"], "finished by most")
    f.make_video(settings, creator["id"], "not watched yet")
    for i in range(5):  # 3 completed, 1 left halfway, 1 skipped
        viewer = f.make_user(settings)
        body = {"watch_ms": (10_000, 10_000, 10_000, 4_000, 300)[i], "completed": i < 3}
        assert client.post(f"/api/v1/videos/{video}/view", json=body, headers=viewer["headers"]).status_code == 200
    assert client.post(f"/api/v1/users/{creator['id']}/follow", headers=viewer["headers"]).status_code == 200
    catalog = _catalog(settings)
    meta = catalog.videos[video]
    assert (meta.views, meta.completions, meta.skips) == (5, 3, 1)
    stats = creator_states(catalog, {}, [creator["id"]])[creator["id"]]
    assert (stats.video_count, stats.followers, stats.completion_rate) == (2, 1, 0.75)

    now = time.time()
    state = video_state(meta, VideoCounters(), now)  # a store that counted none of it
    assert (state.views, state.completions, state.impressions) == (4, 3, 5)  # views as trained: not skips
    X = build_features(UserState("viewer"), [state], {}, collab_scores=None, source_ids=None, now=now)
    assert X[0, FEATURE_INDEX["completion_rate"]] == pytest.approx((3 + 3.5) / (4 + 10))
    # A store that has counted more views than the catalog's last refresh: its pair, never a mix.
    state = video_state(meta, VideoCounters(views=10, skips=3, completions=2), now)
    assert (state.views, state.completions) == (7, 2)


def test_the_migration_counts_the_completions_and_skips_already_in_the_event_log(settings):
    creator, viewer = f.make_user(settings), f.make_user(settings)
    video, other = f.make_video(settings, creator["id"], "one"), f.make_video(settings, creator["id"], "two")
    seen = {"user_id": viewer["id"], "creator_id": creator["id"], "created_at": f.utcnow()}
    f.events(settings, [
        {**seen, "kind": "view", "video_id": video, "watch_ms": 10_000, "completed": True},
        {**seen, "kind": "view", "video_id": video, "watch_ms": 10_000, "completed": True},
        {**seen, "kind": "view", "video_id": video, "watch_ms": 5_000},
        {**seen, "kind": "skip", "video_id": video, "watch_ms": 300},
        {**seen, "kind": "like", "video_id": video},
        {**seen, "kind": "view", "video_id": other, "watch_ms": 10_000, "completed": True},
    ])
    downgrade(settings, "0008")
    upgrade(settings)
    catalog = _catalog(settings)
    counted = [(catalog.videos[v].completions, catalog.videos[v].skips) for v in (video, other)]
    assert counted == [(2, 1), (1, 0)]
