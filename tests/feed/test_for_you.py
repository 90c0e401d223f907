"""The For You feed over real HTTP: events reflected in the next page, seen and not-interested
videos never again, creator rules, visibility, cursors, limits and the model fallback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from clipfeed.feed.reranking import respects_creator_rules
from clipfeed.storage import build_store
from tests.feed import factories as f

GENEROUS = {name: 5000.0 for name in ("following", "collaborative", "content", "trending", "affinity", "exploration")}


@pytest.fixture
def settings(settings_factory):
    # Tests insert rows straight into the DB: reload the catalog on every ranking. Budgets are
    # generous because the test machine is shared; budget enforcement has its own test.
    return settings_factory(feed_catalog_refresh_s=0, feed_source_budget_ms=GENEROUS, feed_exploration_share=0.0)


def page(client, headers=None, **params) -> dict:
    response = client.get("/api/v1/feed/for-you", params=params, headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()


def drain(client, headers=None, limit: int = 10, max_pages: int = 50) -> list[dict]:
    """Every item the feed serves, page after page, until it has nothing left."""
    served, cursor = [], None
    for _ in range(max_pages):
        params = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        body = page(client, headers, **params)
        served += body["items"]
        cursor = body["next_cursor"]
        if not body["items"] or not cursor:
            break
    return served


def topical_platform(settings, topics=("cats", "dogs", "cars"), creators_per_topic: int = 4,
                     per_topic: int = 10) -> dict:
    """Videos of `topics` (one hashtag each), each topic by its own few creators."""
    owners, by_topic = [], {}
    for topic in topics:
        mine = [f.make_user(settings, f"{topic}{i}") for i in range(creators_per_topic)]
        owners += mine
        by_topic[topic] = [f.make_video(settings, mine[j % creators_per_topic]["id"], f"clip {j} #{topic}")
                           for j in range(per_topic)]
    return {"owners": owners, "by_topic": by_topic}


def watch(client, headers, video_id: str, *, completed: bool, like: bool = False) -> None:
    body = {"watch_ms": 10_000 if completed else 500, "completed": completed, "replay": False}
    assert client.post(f"/api/v1/videos/{video_id}/view", json=body, headers=headers).status_code == 200
    if like:
        assert client.post(f"/api/v1/videos/{video_id}/like", headers=headers).status_code == 200


def test_what_a_user_likes_rises_in_the_next_page(client, settings):
    platform = topical_platform(settings)
    cats = set(platform["by_topic"]["cats"])
    viewer = f.make_user(settings, "viewer")

    first = page(client, viewer["headers"], limit=9)
    assert first["mode"] == "cold_start" and len(first["items"]) == 9
    for item in first["items"]:
        watch(client, viewer["headers"], item["id"], completed=item["id"] in cats, like=item["id"] in cats)
    if not cats & {i["id"] for i in first["items"]}:  # make sure the viewer met the topic at all
        for video_id in list(cats)[:3]:
            watch(client, viewer["headers"], video_id, completed=True, like=True)

    second = page(client, viewer["headers"], limit=10, explain=1)
    assert second["mode"] == "personalized"
    ids = [item["id"] for item in second["items"]]
    assert ids[0] in cats, second["items"][0]["explain"]
    cat_positions = [i for i, vid in enumerate(ids) if vid in cats]
    other_positions = [i for i, vid in enumerate(ids) if vid not in cats]
    assert len(cat_positions) >= 4
    assert sum(cat_positions) / len(cat_positions) < sum(other_positions) / max(1, len(other_positions))
    assert "affinity" in second["items"][0]["explain"]["sources"]
    assert not {i["id"] for i in first["items"]} & set(ids)  # already seen: never again


def test_a_liked_creator_rises_and_never_comes_twice_in_a_row(client, settings):
    star = f.make_user(settings, "star")
    others = [f.make_user(settings, f"other{i}") for i in range(4)]
    star_videos = [f.make_video(settings, star["id"], f"star {i}") for i in range(12)]
    for i, other in enumerate(others):
        for j in range(4):
            f.make_video(settings, other["id"], f"other {i}-{j}")
    viewer = f.make_user(settings)
    for video_id in star_videos[:3]:
        watch(client, viewer["headers"], video_id, completed=True, like=True)

    served = drain(client, viewer["headers"], limit=7)
    creators = [item["owner_id"] for item in served]
    assert creators[0] == star["id"]
    assert respects_creator_rules(creators), creators
    ids = [item["id"] for item in served]
    assert len(ids) == len(set(ids))


def test_not_interested_and_seen_videos_never_come_back(client, settings):
    platform = topical_platform(settings, creators_per_topic=3, per_topic=6)
    viewer = f.make_user(settings)
    everything = {vid for ids in platform["by_topic"].values() for vid in ids}
    unwanted = platform["by_topic"]["dogs"][0]
    response = client.post(f"/api/v1/videos/{unwanted}/not-interested", headers=viewer["headers"])
    assert response.status_code == 200 and response.json()["not_interested"] is True
    # Idempotent.
    assert client.post(f"/api/v1/videos/{unwanted}/not-interested", headers=viewer["headers"]).status_code == 200

    first = page(client, viewer["headers"], limit=5)
    marked = first["items"][0]["id"]
    assert client.post(f"/api/v1/videos/{marked}/not-interested", headers=viewer["headers"]).status_code == 200
    rest = drain(client, viewer["headers"], limit=6)
    ids = [item["id"] for item in first["items"] + rest]
    assert len(ids) == len(set(ids))
    assert unwanted not in ids and marked not in {i["id"] for i in rest}
    # Everything else is eventually served, and the creator rules hold over the whole stream.
    assert set(ids) == everything - {unwanted}
    assert respects_creator_rules([item["owner_id"] for item in first["items"] + rest])
    # A second pass has nothing new: seen is seen, also after the queue is rebuilt.
    assert page(client, viewer["headers"], limit=10)["items"] == []

    assert client.post("/api/v1/videos/nope/not-interested", headers=viewer["headers"]).status_code == 404
    assert client.post(f"/api/v1/videos/{unwanted}/not-interested").status_code == 401


def test_videos_another_process_showed_are_left_out_when_the_queue_is_ranked_again(client, settings):
    from clipfeed.feed import foryou

    topical_platform(settings, creators_per_topic=3, per_topic=6)
    viewer = f.make_user(settings)
    served = [item["id"] for item in page(client, viewer["headers"], limit=5)["items"]]
    for vid in served[:3]:  # personalized from here: the queue is ranked (reading the impression log)
        watch(client, viewer["headers"], vid, completed=True)
    served += [item["id"] for item in page(client, viewer["headers"], limit=1)["items"]]
    queue = foryou.engine_for(settings, None).queues[viewer["id"]]
    # Another API process shows the viewer the next videos of this one's queue.
    elsewhere = [item.video_id for item in queue.items[:4]]
    assert len(elsewhere) == 4
    f.impressions(settings, viewer["id"], elsewhere)
    # The viewer's next event re-ranks the queue, which reads the impressions written since.
    watch(client, viewer["headers"], served[3], completed=True)
    body = page(client, viewer["headers"], limit=2)
    assert not {item.video_id for item in queue.items} & set(elsewhere)
    # Left out by the ranking, not dropped at serving (where the log would make the page short).
    assert len(body["items"]) == 2 and not {item["id"] for item in body["items"]} & set(elsewhere + served)


def test_queued_items_are_not_walked_by_the_garbage_collector(client, settings):
    import gc

    from clipfeed.feed import foryou

    topical_platform(settings, creators_per_topic=3, per_topic=6)
    viewer = f.make_user(settings)
    served = [item["id"] for item in page(client, viewer["headers"], limit=3)["items"]]
    for vid in served:  # personalized: the queue is ranked by the full pipeline
        watch(client, viewer["headers"], vid, completed=True)
    page(client, viewer["headers"], limit=1)
    queue = foryou.engine_for(settings, None).queues[viewer["id"]]
    assert queue.items and not any(gc.is_tracked(item) for item in queue.items)


def test_hidden_blocked_and_unready_videos_never_appear(client, settings):
    viewer = f.make_user(settings)
    friend, stranger, blocker, blocked = (f.make_user(settings) for _ in range(4))
    f.follow(settings, viewer["id"], friend["id"])
    f.block(settings, blocker["id"], viewer["id"])
    f.block(settings, viewer["id"], blocked["id"])
    public = {f.make_video(settings, stranger["id"], "public"), f.make_video(settings, friend["id"], "public friend")}
    visible = public | {f.make_video(settings, friend["id"], "for followers", visibility="followers")}
    hidden_to_all = {f.make_video(settings, stranger["id"], "private", visibility="private"),
                     f.make_video(settings, stranger["id"], "followers only, not followed", visibility="followers"),
                     f.make_video(settings, stranger["id"], "unlisted", visibility="unlisted"),
                     f.make_video(settings, stranger["id"], "rejected", status="rejected"),
                     f.make_video(settings, stranger["id"], "processing", status="processing"),
                     f.make_video(settings, stranger["id"], "failed", status="failed")}
    # Public, but not for this viewer: a block either way, and their own video.
    not_for_viewer = {f.make_video(settings, blocker["id"], "they blocked me"),
                      f.make_video(settings, blocked["id"], "I blocked them"),
                      f.make_video(settings, viewer["id"], "my own")}
    served = [item["id"] for item in drain(client, viewer["headers"], limit=3)]
    assert set(served) == visible and len(served) == len(visible)

    anonymous = [item["id"] for item in drain(client, limit=2)]
    assert set(anonymous) == public | not_for_viewer and len(anonymous) == len(public | not_for_viewer)
    assert not set(anonymous) & hidden_to_all

    # A video hidden after it was queued is skipped when served.
    other = f.make_user(settings)
    shown = page(client, other["headers"], limit=1)["items"][0]["id"]
    later = [vid for vid in public | not_for_viewer if vid != shown]
    for vid in later:
        f.update_video(settings, vid, visibility="private")
    assert page(client, other["headers"], limit=10)["items"] == []


def test_anonymous_viewers_get_trending_and_exploration(client, settings):
    owners = [f.make_user(settings) for _ in range(4)]
    videos = {f.make_video(settings, owners[i % 4]["id"], f"clip {i}") for i in range(7)}
    body = page(client, limit=4, explain=1)
    assert body["mode"] == "cold_start" and len(body["items"]) == 4
    assert body["models"] == {"ranker": None, "collab": None}  # none published: the heuristic ranker
    assert all(set(item["explain"]["sources"]) <= {"trending", "exploration", "following"} for item in body["items"])
    rest = page(client, limit=4, cursor=body["next_cursor"])
    ids = [i["id"] for i in body["items"] + rest["items"]]
    assert set(ids) == videos and len(ids) == 7
    assert rest["next_cursor"] is None


def test_cursor_and_limit_errors(client, settings):
    owners = [f.make_user(settings) for _ in range(3)]
    for i in range(6):
        f.make_video(settings, owners[i % 3]["id"], f"clip {i}")
    alice, bob = f.make_user(settings), f.make_user(settings)
    cursor = page(client, alice["headers"], limit=2)["next_cursor"]
    assert cursor

    def error(params, headers=None):
        response = client.get("/api/v1/feed/for-you", params=params, headers=headers or {})
        return response.status_code, response.json()["error"]

    status, body = error({"cursor": "not a cursor"}, alice["headers"])
    assert status == 400 and body["code"] == "invalid_cursor" and "malformed" in body["message"]
    forged = cursor[:-4] + ("0000" if not cursor.endswith("0000") else "1111")
    status, body = error({"cursor": forged}, alice["headers"])
    assert status == 400 and "not issued by this server" in body["message"]
    status, body = error({"cursor": cursor}, bob["headers"])
    assert status == 400 and "another viewer" in body["message"]
    status, body = error({"cursor": cursor})  # anonymous with a signed-in user's cursor
    assert status == 400 and "another viewer" in body["message"]
    for limit in (0, 51, -1):
        status, body = error({"limit": limit}, alice["headers"])
        assert status == 422 and body["field"] == "limit"
    assert page(client, alice["headers"], limit=2, cursor=cursor)["items"]


class _Garbage:
    def save(self, path):
        Path(path).write_bytes(b"\x00 this is not a model \xff" * 10)


def test_a_corrupt_model_degrades_to_the_fallback_feed(client, settings, caplog):
    from clipfeed.feed.recsys.registry import ModelRegistry

    owners, friend = [f.make_user(settings) for _ in range(4)], f.make_user(settings)
    public = {f.make_video(settings, owners[i]["id"], f"clip {i}") for i in range(4)}
    followed = f.make_video(settings, friend["id"], "from a friend")
    viewer = f.make_user(settings)
    f.follow(settings, viewer["id"], friend["id"])
    registry = ModelRegistry(build_store(settings))
    version, promoted = asyncio.run(registry.publish("ranker", _Garbage(), {"auc": 0.9}, compare_on="auc"))
    assert promoted

    with caplog.at_level(logging.ERROR, logger="clipfeed"):
        body = page(client, viewer["headers"], limit=10, explain=1)
    assert body["mode"] == "fallback"
    assert {item["id"] for item in body["items"]} == public | {followed}
    assert all(set(item["explain"]["sources"]) <= {"trending", "following"} for item in body["items"])
    assert "models" in body["dropped"]
    assert "ranker" not in body["models"]  # unavailable: no version is served
    assert any("ranker" in record.getMessage() and version in record.getMessage() for record in caplog.records)
    # Anonymous viewers too: never a 5xx.
    assert client.get("/api/v1/feed/for-you").status_code == 200




def test_new_uploads_reach_the_feed_through_the_background_catalog_refresh(settings_factory):
    import httpx

    from tests.conftest import LiveServer, wait_for

    settings = settings_factory(feed_catalog_refresh_s=0.2, feed_source_budget_ms=GENEROUS)
    server = LiveServer(settings).start()
    try:
        first_owner, second_owner = f.make_user(settings), f.make_user(settings)
        old = f.make_video(settings, first_owner["id"], "old")
        viewer = f.make_user(settings)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert [i["id"] for i in page(client, viewer["headers"], limit=5)["items"]] == [old]
            new = f.make_video(settings, second_owner["id"], "just uploaded")
            served = wait_for(lambda: page(client, viewer["headers"], limit=5)["items"], timeout=10,
                              interval=0.1, message="the new upload in the feed")
            assert [i["id"] for i in served] == [new]
    finally:
        server.stop()


class _BrokenStore:
    """A feature store whose backend is down: every call fails like a lost Redis connection."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError("feature store backend unreachable")

        return fail


def test_a_feature_store_outage_degrades_to_the_fallback_feed(settings):
    from clipfeed.feed import feature_store as fs
    from tests.conftest import LiveServer

    fs._stores[fs.deployment_key(settings)] = _BrokenStore()  # before the app builds its engine
    owners = [f.make_user(settings) for _ in range(3)]
    videos = {f.make_video(settings, owners[i]["id"], f"clip {i}") for i in range(3)}
    viewer = f.make_user(settings)
    server = LiveServer(settings).start()
    try:
        import httpx

        with httpx.Client(base_url=server.url, timeout=30) as client:
            body = page(client, viewer["headers"], limit=10, explain=1)
            assert body["mode"] == "fallback" and body["dropped"]["feature_store"] == "unavailable"
            assert {item["id"] for item in body["items"]} == videos
            # Events still commit (the row is the truth); the fan-out failure is only logged.
            video = body["items"][0]["id"]
            assert client.post(f"/api/v1/videos/{video}/like", headers=viewer["headers"]).status_code == 200
            assert client.get("/api/v1/feed/for-you").status_code == 200
    finally:
        server.stop()
        fs._stores.pop(fs.deployment_key(settings), None)


def test_events_handled_by_another_process_restale_the_queue(client, settings):
    """Scale-out: the user's events may hit another API process; the queue notices through the
    shared feature store's event count (embedded: one process, the in-process listener)."""
    import time as _time

    from clipfeed.feed import events as feed_events
    from clipfeed.feed.feature_store import feature_store

    owners = [f.make_user(settings) for _ in range(4)]
    for i in range(20):
        f.make_video(settings, owners[i % 4]["id"], f"clip {i}")
    star = owners[0]["id"]
    viewer = f.make_user(settings)
    first = page(client, viewer["headers"], limit=2, explain=1)  # the queue is ranked (cold start)
    assert first["mode"] == "cold_start"
    events = [feed_events.FeedEvent("like", viewer["id"], f"elsewhere{i}", star, _time.time()) for i in range(3)]
    if settings.redis_url:
        for event in events:
            feature_store(settings).apply_user(event)  # as another process would: no local listener
    else:
        feed_events.dispatch(settings, events)
    body = page(client, viewer["headers"], limit=5, explain=1)
    assert body["mode"] == "personalized"
    assert any(item["owner_id"] == star and "affinity" in item["explain"]["sources"] for item in body["items"])


def test_an_event_reranks_the_queue_in_the_background_before_the_next_page(client, settings):
    """The user's events re-rank their queue while they watch: the next page is served from it
    without ranking on the request path, and already reflects the events."""
    from clipfeed.feed import foryou
    from clipfeed.feed.feature_store import deployment_key
    from tests.conftest import wait_for

    platform = topical_platform(settings)
    cats = set(platform["by_topic"]["cats"])
    viewer = f.make_user(settings, "viewer")
    first = page(client, viewer["headers"], limit=3)
    assert first["mode"] == "cold_start"
    engine = foryou._engines[deployment_key(settings)]
    queue = engine.queues[viewer["id"]]
    built = queue.built_at
    for video_id in list(cats)[:3]:
        watch(client, viewer["headers"], video_id, completed=True, like=True)
    # No page asked for: the events alone re-rank the queue (a real background task).
    wait_for(lambda: not queue.stale and queue.built_at > built and queue.mode == "personalized",
             timeout=30, message="the background re-rank")
    reranked_at = queue.built_at

    second = page(client, viewer["headers"], limit=5, explain=1)
    assert second["mode"] == "personalized"
    assert queue.built_at == reranked_at  # served from the background ranking, not re-ranked
    ids = [item["id"] for item in second["items"]]
    assert ids[0] in cats and "affinity" in second["items"][0]["explain"]["sources"]
    assert not {i["id"] for i in first["items"]} & set(ids)



def test_an_event_rescores_a_full_queue_and_is_reflected_in_the_next_page(settings_factory):
    """Once a queue is personalized and holds enough items, the user's events re-score it (the
    queued items plus what their new affinities bring) instead of ranking from every source;
    the new taste still leads the next page, the creator rules hold, nothing seen comes back."""
    import httpx

    from clipfeed.feed import foryou
    from clipfeed.feed.feature_store import deployment_key
    from tests.conftest import LiveServer, wait_for

    settings = settings_factory(feed_catalog_refresh_s=0, feed_source_budget_ms=GENEROUS, feed_exploration_share=0.0,
                                feed_queue_size=40, feed_queue_low_water=5)
    platform = topical_platform(settings, topics=("cats", "dogs", "cars", "food"), per_topic=12)
    cats, dogs = set(platform["by_topic"]["cats"]), set(platform["by_topic"]["dogs"])
    viewer = f.make_user(settings, "viewer")
    server = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for video_id in list(cats)[:3]:
                watch(client, viewer["headers"], video_id, completed=True, like=True)
            first = page(client, viewer["headers"], limit=3)
            assert first["mode"] == "personalized"
            queue = foryou._engines[deployment_key(settings)].queues[viewer["id"]]
            assert queue.ranked_by == "full" and len(queue.items) >= settings.feed_queue_low_water
            built = queue.built_at

            # A new taste, strongly: dogs watched to the end, liked and shared.
            for video_id in list(dogs)[:4]:
                watch(client, viewer["headers"], video_id, completed=True, like=True)
                assert client.post(f"/api/v1/videos/{video_id}/share", json={},
                                   headers=viewer["headers"]).status_code == 200
            wait_for(lambda: not queue.stale and queue.built_at > built, timeout=30, message="the re-score")

            second = page(client, viewer["headers"], limit=6, explain=1)
            ids = [item["id"] for item in second["items"]]
            assert second["mode"] == "personalized"
            assert ids[0] in dogs, second["items"][0]["explain"]
            assert len([vid for vid in ids if vid in dogs]) >= 2
            assert not set(ids) & {i["id"] for i in first["items"]}  # served before: never again
            served = [i["owner_id"] for i in first["items"]] + [i["owner_id"] for i in second["items"]]
            assert respects_creator_rules(served), served
    finally:
        server.stop()


def test_the_queue_of_a_user_gone_idle_is_dropped_and_their_next_page_ranks_afresh(settings_factory):
    import httpx

    from clipfeed.feed import foryou
    from clipfeed.feed.feature_store import deployment_key
    from tests.conftest import LiveServer

    settings = settings_factory(feed_catalog_refresh_s=0, feed_source_budget_ms=GENEROUS, feed_exploration_share=0.0,
                                feed_queue_idle_s=0.0)  # gone idle as soon as another user pages
    topical_platform(settings, per_topic=6)
    first, second = f.make_user(settings, "first"), f.make_user(settings, "second")
    server = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            shown = [item["id"] for item in page(client, first["headers"], limit=4)["items"]]
            queues = foryou._engines[deployment_key(settings)].queues
            assert list(queues) == [first["id"]]
            page(client, second["headers"], limit=4)
            assert list(queues) == [second["id"]]
            # Back after the queue was dropped: ranked afresh, and what was shown stays seen.
            again = [item["id"] for item in page(client, first["headers"], limit=4)["items"]]
            assert again and not set(again) & set(shown)
            assert list(queues) == [first["id"]]
    finally:
        server.stop()


def test_a_newcomers_chosen_topics_fill_their_first_page_until_their_swipes_speak(client, settings):
    """A new user with interests ["dogs"] (no events, follows nobody) gets dog videos on their
    first page, proposed by the affinity source, as many as the topic spread lets one topic have
    (half of every 10); one without interests gets the cold-start mix. Changing the interests
    re-ranks the next first page for the new topic."""
    from clipfeed.feed.reranking import MAX_TAG_PER_WINDOW

    platform = topical_platform(settings)
    dogs, cars = set(platform["by_topic"]["dogs"]), set(platform["by_topic"]["cars"])
    plain, chooser = f.make_user(settings), f.make_user(settings)
    f.update_user(settings, chooser["id"], interests=["dogs"])

    baseline = page(client, plain["headers"], limit=10, explain=1)
    assert baseline["mode"] == "cold_start"
    assert not any("affinity" in item["explain"]["sources"] for item in baseline["items"])
    first = page(client, chooser["headers"], limit=10, explain=1)
    assert first["mode"] == "cold_start"
    picked = [item for item in first["items"] if item["id"] in dogs]
    assert len(picked) == MAX_TAG_PER_WINDOW, [item["id"] for item in first["items"]]
    assert all("affinity" in item["explain"]["sources"] for item in picked)
    assert all(item["id"] in dogs for item in first["items"] if "affinity" in item["explain"]["sources"])

    changed = client.patch("/api/v1/me", json={"interests": ["cars"]}, headers=chooser["headers"])
    assert changed.status_code == 200, changed.text
    again = page(client, chooser["headers"], limit=10, explain=1)
    proposed = [item["id"] for item in again["items"] if "affinity" in item["explain"]["sources"]]
    assert len([v for v in proposed if v in cars]) == MAX_TAG_PER_WINDOW and set(proposed) <= cars, again["items"]
