"""`clipfeed train` from a real database (SQLite and PostgreSQL): events in, versioned models out,
served only if better; `clipfeed model list / rollback` switch versions."""

import asyncio
from datetime import UTC, datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from clipfeed.accounts.models import User
from clipfeed.cli import app
from clipfeed.feed.recsys.collaborative import CollaborativeModel
from clipfeed.feed.recsys.ranker import LightGBMRanker
from clipfeed.feed.recsys.registry import ModelRegistry
from clipfeed.feed.recsys.simulator import SimConfig, generate_log, simulate_platform
from clipfeed.feed.training import (TrainingSkipped, gate_metric, heuristic_bar, load_training_log,
                                    train_and_publish)
from clipfeed.media.models import Video
from clipfeed.social import tags
from clipfeed.storage import build_store
from tests.feed import factories

SIM = SimConfig(seed=11, users=120, videos=300, creators=40, interactions_per_user=40)


def _load_simulated_platform(settings) -> dict[str, str]:
    """Users, videos (hashtags from their captions) and every simulated interaction as events."""
    platform = simulate_platform(SIM)
    log = generate_log(platform)

    async def people_and_videos(session):
        users = [User(handle=f"sim{i}", display_name=f"sim {i}", password_hash="!") for i in range(SIM.users)]
        creators = [User(handle=f"maker{i}", display_name=f"maker {i}", password_hash="!") for i in range(SIM.creators)]
        session.add_all(users + creators)
        await session.flush()
        videos = []
        for v in range(SIM.videos):
            caption = platform.video_caption[v] + " " + " ".join(f"#{t}" for t in platform.video_hashtags[v])
            video = Video(owner_id=creators[platform.video_creator[v]].id, status="ready", visibility="public",
                          caption=caption, duration_ms=int(platform.video_duration[v] * 1000), width=270, height=480,
                          progress=100.0, renditions=[], artifacts={}, features={},
                          published_at=datetime.fromtimestamp(platform.video_created[v], UTC))
            session.add(video)
            videos.append(video)
        await session.flush()
        for video in videos:
            await tags.sync_video_hashtags(session, video)
        return ([u.id for u in users], [c.id for c in creators], [v.id for v in videos])

    user_ids, creator_ids, video_ids = factories.run(settings, people_and_videos)
    rows = []
    for j in range(len(log)):
        u, v = int(log.user[j][1:]), int(log.item[j][1:])
        base = {"user_id": user_ids[u], "video_id": video_ids[v], "creator_id": creator_ids[platform.video_creator[v]],
                "created_at": datetime.fromtimestamp(log.ts[j], UTC)}
        rows.append({**base, "kind": "skip" if log.flags["skipped"][j] else "view",
                     "watch_ms": int(log.flags["watch_ms"][j]), "completed": bool(log.flags["completed"][j])})
        for flag, kind in (("liked", "like"), ("shared", "share"), ("commented", "comment"), ("followed", "follow")):
            if log.flags[flag][j]:
                rows.append({**base, "kind": kind})
    factories.events(settings, rows)
    return {"interactions": len(log), "events": len(rows), "video_ids": video_ids}


def _env(settings) -> dict[str, str]:
    env = {"CLIPFEED_DATA_DIR": str(settings.data_dir), "CLIPFEED_SECRET_KEY": settings.secret_key,
           "CLIPFEED_QUEUE_NAME": settings.queue_name}
    for name in ("database_url", "database_schema", "redis_url"):
        value = getattr(settings, name)
        if value:
            env[f"CLIPFEED_{name.upper()}"] = value
    return env


def test_train_publishes_versioned_models_from_the_event_log(settings_factory):
    # Future labels: on this small platform (120 users; at 60 the margin was thin enough for the
    # random ids to flip it about once in 15 runs) that ranker beats the heuristic one on its gate
    # by ~40 %, so a learned version is served and can be listed and rolled back. (Outcome labels,
    # the default, learn from users' later views only: here they tie with the heuristic ranker
    # and the gate keeps either; see the parametrized gate test below.)
    settings = settings_factory(feed_ranker_labels="future")
    loaded = _load_simulated_platform(settings)
    data = asyncio.run(load_training_log(settings))
    # one row per (user, video); flags and metadata come from the events and the videos table
    assert len(data) == loaded["interactions"]
    assert data.items is not None and set(data.items) <= set(loaded["video_ids"])
    assert any(m.hashtags for m in data.items.values())
    assert data.flags["liked"].sum() > 0 and data.positive.sum() > 0

    report = asyncio.run(train_and_publish(settings))
    assert set(report.published) == {"collab", "ranker"}
    for outcome in report.published.values():
        assert 0 < outcome["metrics"]["ndcg@20"] <= 1
    assert report.published["collab"]["promoted"] is True  # nothing was served
    # The first learned ranker must beat the heuristic one (served so far) on the same holdout,
    # on the metric its labels call for (NDCG@20 for future labels).
    first = report.published["ranker"]["metrics"]
    gate = gate_metric("ranker", settings)
    assert gate == "ndcg@20"
    assert first[gate] > first[f"heuristic_{gate}"] > 0  # on this platform the learned ranker wins
    assert 0 < first["heuristic_ndcg@20"] <= 1
    # Both rankers order what the holdout users were shown better than chance (recorded, not gated).
    assert 0.5 < first["exposed_auc"] <= 1 and 0.5 < first["heuristic_exposed_auc"] <= 1
    assert report.published["ranker"]["promoted"] is True
    registry = ModelRegistry(build_store(settings), refresh_s=0)

    async def served():
        collab = await registry.current("collab")
        ranker = await registry.current("ranker")
        return collab, ranker

    (collab_version, collab), (ranker_version, ranker) = asyncio.run(served())
    assert isinstance(collab, CollaborativeModel) and isinstance(ranker, LightGBMRanker)
    assert collab_version == report.published["collab"]["version"]
    assert set(collab.item_ids) <= set(loaded["video_ids"])
    assert collab.nearest(collab.user_vector(collab.user_ids[0]), 5)

    # Same data, same seed: the new versions are no better, so the served ones stay.
    again = asyncio.run(train_and_publish(settings))
    for kind, outcome in again.published.items():
        metrics = outcome["metrics"]
        gate = gate_metric(kind, settings)
        better = metrics[gate] > report.published[kind]["metrics"][gate]
        assert outcome["promoted"] is (better and metrics[gate] > (heuristic_bar(gate, metrics) or 0))
    # The periodic job's check: not due yet.
    with pytest.raises(TrainingSkipped, match="min old"):
        asyncio.run(train_and_publish(settings, force=False))

    runner = CliRunner(env=_env(settings))
    listed = runner.invoke(app, ["model", "list", "--kind", "ranker"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert report.published["ranker"]["version"] in listed.output and "ndcg@20" in listed.output

    # A better version is served; rollback returns to the previous one.
    asyncio.run(registry.publish("ranker", ranker, {"ndcg@20": 2.0}, compare_on="ndcg@20"))
    rolled = runner.invoke(app, ["model", "rollback", "--kind", "ranker"], catch_exceptions=False)
    assert rolled.exit_code == 0, rolled.output
    assert asyncio.run(registry.current("ranker"))[0] == ranker_version
    nothing = runner.invoke(app, ["model", "rollback", "--kind", "ranker"])
    assert nothing.exit_code == 1 and "no earlier" in nothing.output
    bad = runner.invoke(app, ["model", "rollback", "--kind", "weights"])
    assert bad.exit_code == 2


def test_train_on_a_sample_of_the_users_still_publishes_scored_models(settings_factory):
    """Fewer sampled users than the platform has: ALS still learns every user, the ranker and
    the holdout metrics come from the sample."""
    settings = settings_factory(feed_training_max_users=15)
    _load_simulated_platform(settings)
    report = asyncio.run(train_and_publish(settings))
    assert set(report.published) == {"collab", "ranker"}
    for outcome in report.published.values():
        assert outcome["metrics"]["holdout_users"] == 15
        assert 0 < outcome["metrics"]["ndcg@20"] <= 1
    assert report.published["collab"]["metrics"]["als_factors"] in (8, 16, 32, 64)  # the grid's pick
    (_, collab), served_ranker = asyncio.run(_served(settings))
    assert len(collab.user_ids) > 15
    # Served only if it beat the heuristic ranker on the sample's holdout (15 users: either way).
    ranker = report.published["ranker"]
    gate = gate_metric("ranker", settings)
    assert ranker["promoted"] is (ranker["metrics"][gate] > heuristic_bar(gate, ranker["metrics"]))
    if ranker["promoted"]:
        assert isinstance(served_ranker[1], LightGBMRanker)
    else:
        assert served_ranker is None


@pytest.mark.parametrize("labels, gate, heuristic", [("outcome", "exposed_auc", "heuristic_exposed_auc"),
                                                     ("future", "ndcg@20", "heuristic_ndcg@20")])
def test_the_ranker_is_gated_on_the_metric_its_labels_call_for(settings_factory, labels, gate, heuristic):
    """Outcome labels (what users were shown, and what they did with it): compared on how the
    ranker orders what the holdout users were shown, as a margin over the heuristic ranker there
    (successive versions have different holdouts). Future labels (what users did later, among
    every candidate): on NDCG@20 over every unseen video."""
    settings = settings_factory(feed_ranker_labels=labels)
    _load_simulated_platform(settings)
    report = asyncio.run(train_and_publish(settings))
    ranker = report.published["ranker"]
    metrics = ranker["metrics"]
    assert 0.5 < metrics["heuristic_exposed_auc"] <= 1 and 0 <= metrics["exposed_auc"] <= 1
    assert metrics["exposed_auc_over_heuristic"] == pytest.approx(metrics["exposed_auc"] - metrics["heuristic_exposed_auc"])
    # served if and only if it beats the heuristic ranker there
    assert ranker["promoted"] is (metrics[gate] > metrics[heuristic])
    index = asyncio.run(ModelRegistry(build_store(settings), refresh_s=0)._read_index("ranker"))
    assert index["versions"][-1]["compare_on"] == gate_metric("ranker", settings)
    compare_on = gate_metric("ranker", settings)
    assert compare_on == ("exposed_auc_over_heuristic" if labels == "outcome" else "ndcg@20")
    # A second training: served only if it also improves on the served version's recorded score.
    second = asyncio.run(train_and_publish(settings)).published["ranker"]
    beats_heuristic = second["metrics"][gate] > second["metrics"][heuristic]
    beats_served = not ranker["promoted"] or second["metrics"][compare_on] > metrics[compare_on]
    assert second["promoted"] is (beats_heuristic and beats_served)
    _, served_ranker = asyncio.run(_served(settings))
    assert (served_ranker is not None) is ranker["promoted"]


async def _served(settings):
    registry = ModelRegistry(build_store(settings), refresh_s=0)
    return await registry.current("collab"), await registry.current("ranker")


def test_train_with_too_few_events_publishes_nothing(settings):
    # The periodic job waits for one training period of history before the first model.
    factories.events(settings, [{"kind": "view", "video_id": "v", "user_id": "u", "created_at": datetime.now(UTC)}])
    with pytest.raises(TrainingSkipped, match="first model waits"):
        asyncio.run(train_and_publish(settings, force=False))
    runner = CliRunner(env=_env(settings))
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 1 and "not trained" in result.output
    assert asyncio.run(ModelRegistry(build_store(settings)).list("ranker")) == []


def test_the_periodic_training_job_is_registered_and_skips_quietly_when_not_due(settings):
    from clipfeed.feed import tasks
    from clipfeed.jobs.queue import PERIODIC

    assert PERIODIC["feed.train_models"].fn is tasks.train_feed_models
    tasks.train_feed_models(settings)  # empty log: nothing to learn, no exception, nothing published
    assert asyncio.run(ModelRegistry(build_store(settings)).list("collab")) == []


def _fold_one_by_one(rows, durations):
    """The per-event fold the columnar loader must agree with, written the plain way."""
    from clipfeed.feed.events import FeedEvent
    from clipfeed.feed.feature_store import event_weight

    pairs = {}
    for r in rows:  # oldest first
        if r["video_id"] not in durations:
            continue
        ev = FeedEvent(kind=r["kind"], user_id=r["user_id"], video_id=r["video_id"], creator_id=None,
                       at=r["created_at"].timestamp(), watch_ms=r.get("watch_ms", 0),
                       duration_ms=durations[r["video_id"]], completed=r.get("completed", False),
                       replay=r.get("replay", False))
        p = pairs.setdefault((r["user_id"], r["video_id"]), {"ts": ev.at, "weight": 0.0, "completed": False,
                                                             "liked": False, "shared": False, "skipped": False})
        p["weight"] += event_weight(ev)
        if ev.kind in ("view", "skip"):
            p["completed"] |= ev.completed
            p["skipped"] |= ev.kind == "skip"
        if ev.kind in ("like", "unlike"):
            p["liked"] = ev.kind == "like"
        if ev.kind == "share":
            p["shared"] = True
    return pairs


def test_the_columnar_loader_folds_events_as_one_by_one(settings):
    from datetime import timedelta

    owner = factories.make_user(settings, "maker")["id"]
    short = factories.make_video(settings, owner, "short #a", duration_ms=8_000)
    long = factories.make_video(settings, owner, "long #b", duration_ms=40_000)
    gone = factories.make_video(settings, owner, "deleted later")
    users = [factories.make_user(settings, f"viewer{i}")["id"] for i in range(3)]
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    rng = np.random.default_rng(3)
    rows = []
    for i in range(400):
        kind = ["view", "view", "skip", "like", "unlike", "share", "comment"][rng.integers(0, 7)]
        rows.append({"kind": kind, "user_id": users[rng.integers(0, 3)],
                     "video_id": [short, long, gone][rng.integers(0, 3)],
                     "watch_ms": int(rng.integers(0, 50_000)) if kind == "view" else 0,
                     "completed": bool(kind == "view" and rng.random() < 0.4),
                     "replay": bool(kind == "view" and rng.random() < 0.1),
                     "created_at": t0 + timedelta(seconds=i * 7)})
    factories.events(settings, rows)
    factories.delete_video(settings, gone)

    data = asyncio.run(load_training_log(settings))
    expected = _fold_one_by_one(rows, {short: 8_000, long: 40_000})
    assert list(zip(data.user.tolist(), data.item.tolist())) == list(expected)  # order of first events
    want = list(expected.values())
    assert np.allclose(data.weight, [max(0.0, p["weight"]) for p in want], atol=1e-5)
    assert np.allclose(data.ts, [p["ts"] for p in want])
    for flag in ("completed", "liked", "shared"):
        assert data.flags[flag].tolist() == [p[flag] for p in want], flag
    assert data.flags["skipped"].tolist() == [p["skipped"] and not p["completed"] for p in want]
    assert data.positive.tolist() == [p["completed"] or p["liked"] for p in want]
    assert 0 < data.flags["liked"].sum() < len(data)  # unlikes undid some likes
    assert set(data.items) == {short, long}


def test_the_served_video_and_creator_features_are_the_ones_the_ranker_was_trained_on(client, settings):
    """Train/serve skew guard: the counters the ranker learned from (the training log's
    LogState, as `clipfeed train` builds it) and the ones it is served (the catalog, with a
    feature store that has counted nothing since it started; the velocity, which only the store
    counts) agree for every video and creator of a platform built over HTTP, and so do the
    whole feature rows of its viewers (their affinities, skips included, and event counts)."""
    from clipfeed.feed.feature_store import VideoCounters, feature_store, load_user, positive_recent
    from clipfeed.feed.content_catalog import build_content, read_served_content
    from clipfeed.feed.recsys.features import FEATURE_NAMES, build_features
    from clipfeed.feed.foryou import creator_states, video_state
    from clipfeed.feed.recsys.pipeline import LogState, Sources
    from clipfeed.feed.sources import load_catalog
    from clipfeed.feed.recsys.content import metadata_index
    from clipfeed.feed.training import _state_options
    from tests.conftest import wait_for

    alice, bob = factories.make_user(settings), factories.make_user(settings)
    videos = [factories.make_video(settings, alice["id"], "a1 #x"), factories.make_video(settings, alice["id"], "a2"),
              factories.make_video(settings, bob["id"], "b1 #x")]
    watched = {"completed": {"watch_ms": 10_000, "completed": True}, "half": {"watch_ms": 5_000},
               "skipped": {"watch_ms": 300}}
    plan = [("completed", "completed", "skipped"), ("half", "completed", "completed"), ("skipped", "half", "completed"),
            ("completed", "skipped", "half")]
    for views in plan:  # one viewer per row: how they watched each video
        viewer = factories.make_user(settings)
        for video, how in zip(videos, views):
            response = client.post(f"/api/v1/videos/{video}/view", json=watched[how], headers=viewer["headers"])
            assert response.status_code == 200, response.text
    follow = client.post(f"/api/v1/users/{alice['id']}/follow", json={"video_id": videos[0]}, headers=viewer["headers"])
    assert follow.status_code == 200, follow.text
    assert client.post(f"/api/v1/videos/{videos[2]}/like", headers=viewer["headers"]).status_code == 200

    log = asyncio.run(load_training_log(settings))
    catalogue = sorted(log.items)
    # The content index `clipfeed train` builds (captions and hashtags here, as the API's).
    content = metadata_index(log.items, catalogue)
    trained = LogState(log, catalogue, sources=Sources(None, None, content), **_state_options())
    rows = np.array([trained.data.item_index[v] for v in videos])

    async def read_catalog(session):
        return await load_catalog(session, settings)

    catalog = factories.run(settings, read_catalog)
    served = [video_state(catalog.videos[v], VideoCounters(), trained.now) for v in videos]
    for learned, serving in zip(trained.video_states(rows), served):
        counted = ("impressions", "views", "completions", "likes")
        assert [getattr(serving, c) for c in counted] == [getattr(learned, c) for c in counted], learned.video_id
    served_creators = creator_states(catalog, {}, [alice["id"], bob["id"]])
    for creator in (alice["id"], bob["id"]):
        learned, serving = trained.creators[creator], served_creators[creator]
        assert (serving.video_count, serving.followers) == (learned.video_count, learned.followers), creator
        assert serving.completion_rate == pytest.approx(learned.completion_rate), creator

    store = feature_store(settings)  # Redis: counted by the stream consumer; the like came last
    wait_for(lambda: (store.videos([videos[2]]).get(videos[2]) or VideoCounters()).likes == 1, timeout=10,
             interval=0.05, message="the events in the store's counters")
    live = store.videos(videos)
    for video, learned in zip(videos, trained.video_states(rows)):
        assert learned.velocity > 0
        assert live[video].velocity_now(trained.now) == pytest.approx(learned.velocity, rel=0.01), video
    # The whole feature rows of every viewer (no collaborative model here): what the store's
    # profile and the served states give, and what training computed, column by column.
    served_content = build_content(*factories.run(settings, lambda session: read_served_content(
        session, catalog, 1000)))  # the API's content index
    served_states = [video_state(catalog.videos[v], live[v], trained.now, served_content.vector(v)) for v in videos]

    async def profile_of(session, user_id):
        return await load_user(session, store, user_id)

    similar = 0.0
    for user_id in sorted(set(log.user.tolist())):
        profile = factories.run(settings, lambda session: profile_of(session, user_id))
        follows = frozenset([alice["id"]]) if user_id == viewer["id"] else frozenset()
        state = profile.to_state(follows)
        state.content_vector = served_content.profile(*positive_recent(state.recent))  # as ForYouEngine.rank
        serving = build_features(state, served_states, served_creators, collab_scores=None,
                                 source_ids=[set()] * len(videos), now=trained.now)
        learned = trained.features(user_id, rows, [set()] * len(videos))
        similar += float(learned[:, FEATURE_NAMES.index("content_sim")].sum())
        differ = [name for j, name in enumerate(FEATURE_NAMES)
                  if not np.allclose(serving[:, j], learned[:, j], rtol=0.01, atol=1e-4)]
        assert differ == [], (user_id, {name: (learned[:, FEATURE_NAMES.index(name)].tolist(),
                                               serving[:, FEATURE_NAMES.index(name)].tolist()) for name in differ})
    assert similar > 0  # the content similarity was compared where it is not 0
