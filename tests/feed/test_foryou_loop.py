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


def test_the_content_index_is_searchable_when_its_builder_thread_returns():
    """The ANN index over the catalog's text vectors is built by the builder (in a thread), not
    lazily by the first ranking that queries it (seconds at 50k videos, on the event loop)."""
    from clipfeed.feed.foryou import _build_content
    from clipfeed.feed.sources import Catalog, VideoMeta

    videos = {f"v{i}": VideoMeta(f"v{i}", f"c{i % 7}", "public", (f"tag{i % 5}",), None, 10_000, 1e9 + i, 0, 0, 0, 0)
              for i in range(50)}
    index = _build_content(Catalog(videos, fresh_hours=72, fresh_max_views=50), 1000)
    assert index._ann is not None
    nearest = index.nearest(index.vector("v3"), 3)
    assert len(nearest) == 3 and all(int(vid[1:]) % 5 == 3 for vid, _score in nearest)  # the same #tag3
