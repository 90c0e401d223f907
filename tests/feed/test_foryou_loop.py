"""The For You engine's background rankings share the event loop with the pages: they must hand
the loop back between their CPU stages, and leave the slow one-time builds to threads."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.feed import factories as f
from tests.feed.test_for_you import GENEROUS, topical_platform


@pytest.fixture
def settings(settings_factory):
    return settings_factory(feed_catalog_refresh_s=0, feed_source_budget_ms=GENEROUS, feed_exploration_share=0.0)


def test_work_that_becomes_ready_during_a_background_reranking_runs_before_its_next_stage(settings, monkeypatch):
    """A user's event re-ranks their queue in the background. A page of another user whose
    database answer arrives while that ranking computes must not wait for the whole ranking:
    each stage (counters, features + ranker, diversity) schedules a stand-in for such an answer
    (loop.call_soon) and the stand-in must run before the next stage starts. Asserted on the
    order of events, with no timing: without a yield point between two stages it runs after."""
    from clipfeed.app import create_app
    from clipfeed.feed import foryou
    from clipfeed.feed.feature_store import deployment_key
    from clipfeed.feed.recsys import features

    topical_platform(settings)
    viewer = f.make_user(settings, "viewer")
    log: list[tuple[int, str]] = []  # (ranking task, what), in the order it happened
    tasks: dict[asyncio.Task, int] = {}  # held, so that no task id is reused
    recording = False

    def stage(name, fn):
        def wrapper(*args, **kwargs):
            if recording:
                task = tasks.setdefault(asyncio.current_task(), len(tasks))
                log.append((task, name))
                asyncio.get_running_loop().call_soon(log.append, (task, f"ready during {name}"))
            return fn(*args, **kwargs)
        return wrapper

    async def scenario():
        nonlocal recording
        app = create_app(settings, run_workers=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                first = await client.get("/api/v1/feed/for-you", params={"limit": 2}, headers=viewer["headers"])
                assert first.status_code == 200, first.text
                engine = foryou._engines[deployment_key(settings)]
                await engine.settle()  # a top-up the first page started: not one to record
                monkeypatch.setattr(engine.store, "videos", stage("counters", engine.store.videos))
                monkeypatch.setattr(features, "build_features", stage("features", features.build_features))
                monkeypatch.setattr(foryou, "diversify", stage("diversify", foryou.diversify))
                recording = True
                video = first.json()["items"][0]["id"]
                response = await client.post(f"/api/v1/videos/{video}/view", headers=viewer["headers"],
                                             json={"watch_ms": 10_000, "completed": True, "replay": False})
                assert response.status_code in (200, 201), response.text
                queue = engine.queues[viewer["id"]]
                assert queue.rerank is not None  # the event started the background re-rank
                await engine.settle()
                recording = False

    asyncio.run(scenario())
    # The re-rank (and a top-up the first page may have started) each went through every stage.
    rankings = {task for task, _ in log}
    assert rankings, log
    for task in rankings:
        stages = [what for t, what in log if t == task and not what.startswith("ready")]
        assert stages == ["counters", "features", "diversify"], log
        for name, following in zip(stages, stages[1:]):
            assert log.index((task, f"ready during {name}")) < log.index((task, following)), log


def test_requests_arriving_during_the_first_catalog_load_wait_for_it_instead_of_loading_again(settings_factory,
                                                                                            monkeypatch):
    """The first pages of a process all find no catalog. One loads it; the others wait for that
    load (at 1M videos each loading its own held a catalog per request: 7 GB per worker). The
    load is held open until every request has asked for the catalog, so they all overlap it."""
    from clipfeed.app import create_app
    from clipfeed.feed import sources

    settings = settings_factory(feed_catalog_refresh_s=300, feed_source_budget_ms=GENEROUS,
                                feed_exploration_share=0.0)
    topical_platform(settings, per_topic=4)
    viewers = [f.make_user(settings, f"viewer{i}") for i in range(4)]
    loads, asking = [], set()
    everyone_asked = None
    real_load, real_get = sources.load_catalog, sources.CatalogCache.get

    async def counted_load(session, settings):
        loads.append(1)
        await everyone_asked.wait()
        return await real_load(session, settings)

    async def noted_get(self, settings, db, session):
        asking.add(asyncio.current_task())
        if len(asking) >= len(viewers):
            everyone_asked.set()
        return await real_get(self, settings, db, session)

    monkeypatch.setattr(sources, "load_catalog", counted_load)
    monkeypatch.setattr(sources.CatalogCache, "get", noted_get)

    async def scenario():
        nonlocal everyone_asked
        everyone_asked = asyncio.Event()
        app = create_app(settings, run_workers=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await asyncio.gather(*(client.get("/api/v1/feed/for-you", params={"limit": 3},
                                                         headers=viewer["headers"]) for viewer in viewers))

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * len(viewers), [r.text for r in responses]
    assert all(len(r.json()["items"]) == 3 for r in responses)
    assert len(loads) == 1


def test_the_content_index_is_searchable_when_its_builder_thread_returns():
    """The ANN index over the catalog's text vectors is built by the builder (in a thread), not
    lazily by the first ranking that queries it (seconds at 50k videos, on the event loop)."""
    from clipfeed.feed.content_catalog import build_content, media_rows, newest_ids
    from clipfeed.feed.sources import Catalog, VideoMeta

    videos = {f"v{i}": VideoMeta(f"v{i}", f"c{i % 7}", "public", (f"tag{i % 5}",), None, 10_000, 1e9 + i, 0, 0, 0, 0)
              for i in range(50)}
    ids = newest_ids(Catalog(videos, fresh_hours=72, fresh_max_views=50), 1000)
    index = build_content(ids, {}, [videos[v].hashtags for v in ids], media_rows({}, ids))
    assert index._ann is not None
    nearest = index.nearest(index.vector("v3"), 3)
    assert len(nearest) == 3 and all(int(vid[1:]) % 5 == 3 for vid, _score in nearest)  # the same #tag3


def test_a_catalog_is_assembled_in_steps_with_the_same_indexes(monkeypatch):
    """The background catalog refresh builds its snapshot a chunk of videos per event-loop step
    (at 300k videos the whole build held the loop for seconds), and the result is the snapshot
    the one-go build makes. The loop's turns are counted by a callback that re-schedules itself:
    no timing involved."""
    import gc

    from clipfeed.feed import sources
    from clipfeed.feed.sources import Catalog, VideoMeta

    videos = {f"v{i:03}": VideoMeta(f"v{i:03}", f"c{i % 7}", "public" if i % 4 else "followers", (f"tag{i % 5}",),
                                    f"s{i % 3}" if i % 2 else None, 10_000, 1e9 - i * 60, (i * 37) % 11, i % 3, 0, 0)
              for i in range(100)}  # newest first
    monkeypatch.setattr(sources, "CHUNK", 10)
    turns = []

    async def build():
        loop = asyncio.get_running_loop()

        def tick():
            turns.append(1)
            loop.call_soon(tick)

        loop.call_soon(tick)
        catalog = await Catalog.assemble(videos, fresh_hours=1e9, fresh_max_views=5, newest_first=True)
        return catalog, len(turns)

    stepped, turns_taken = asyncio.run(build())
    assert turns_taken >= 10  # one loop turn per chunk of 10 videos at least
    whole = Catalog(videos, fresh_hours=1e9, fresh_max_views=5)
    for name in ("by_creator", "by_tag", "by_sound", "fresh", "popular"):
        assert getattr(stepped, name) == getattr(whole, name), name
    assert gc.get_threshold()[2] < 1000  # nothing left deferred


def test_full_collections_are_deferred_while_a_catalog_builds_and_restored_after(settings_factory):
    import gc

    from clipfeed.feed.sources import _full_collections_deferred

    before = gc.get_threshold()
    with _full_collections_deferred(settings_factory(feed_catalog_refresh_s=30)):
        with _full_collections_deferred(settings_factory(feed_catalog_refresh_s=30)):  # two deployments
            assert gc.get_threshold()[2] >= 1_000_000
        assert gc.get_threshold()[2] >= 1_000_000
    assert gc.get_threshold() == before


@pytest.mark.parametrize("background", [True, False])
def test_background_work_steps_aside_while_a_page_is_in_flight(monkeypatch, background):
    """A background ranking or catalog build waits at its yield points while a For You page is
    being served (up to BACKGROUND_WAIT_S, lifted here so that only the order matters); the
    page's own ranking (not background) never waits for itself."""
    from clipfeed.feed import sources

    monkeypatch.setattr(sources, "BACKGROUND_WAIT_S", 60.0)
    log: list[str] = []

    async def work():
        sources.in_background.set(background)  # this task's context only
        log.append("stage 1")
        await sources.yield_to_pages()
        log.append("stage 2")

    async def serve_page():
        with sources.page_in_flight():
            task = asyncio.create_task(work())
            for _ in range(50):  # the page's own awaits (its database answers), 50 loop turns
                await asyncio.sleep(0)
            log.append("page served")
        await task

    async def main():
        await serve_page()
        assert sources.pages_in_flight() == 0

    asyncio.run(main())
    if background:
        assert log == ["stage 1", "page served", "stage 2"]
    else:
        assert log == ["stage 1", "stage 2", "page served"]
