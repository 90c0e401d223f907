"""The one contract every CandidateSource passes: it answers within its budget, proposes only
videos the viewer may see, never the same id twice, and an empty list on an empty platform.
Also: run_sources drops a source that overruns its budget or fails, and keeps the others."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from clipfeed.config import Settings
from clipfeed.feed.recsys.collaborative import CollaborativeModel
from clipfeed.feed.recsys.content import ContentIndex, video_text
from clipfeed.feed.sources import (ALL_SOURCES, Candidate, Catalog, SourceContext, VideoMeta, run_sources)

VIEWER, FRIEND, STRANGER, BLOCKED = "viewer", "friend", "stranger", "blocked"
NOW = time.time()


def meta(video_id, creator, *, visibility="public", tags=("cats",), sound="s1", views=0, age_h=1.0):
    return VideoMeta(video_id, creator, visibility, tuple(tags), sound, 10_000, NOW - age_h * 3600, views, 0, 0, 0)


def populated() -> tuple[Catalog, dict]:
    videos = [meta(f"pub{i}", f"creator{i % 5}", tags=("cats",) if i % 2 else ("dogs",), views=i * 10, age_h=i)
              for i in range(40)]
    videos += [meta("friend-public", FRIEND), meta("friend-followers", FRIEND, visibility="followers"),
               meta("stranger-followers", STRANGER, visibility="followers"),
               meta("blocked-public", BLOCKED), meta("own", VIEWER), meta("seen", STRANGER)]
    catalog = Catalog({v.video_id: v for v in videos}, fresh_hours=72, fresh_max_views=50, loaded_at=NOW)
    ids = list(catalog.videos)
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(30)] + [VIEWER] * 5
    pairs = [(u, ids[int(rng.integers(len(ids)))]) for u in users for _ in range(8)]
    collab = CollaborativeModel(factors=8, iterations=5).fit([u for u, _ in pairs], [v for _, v in pairs],
                                                             [1.0] * len(pairs))
    content = ContentIndex().build(ids, [video_text("", catalog.videos[v].hashtags) for v in ids])
    extras = dict(
        follows=frozenset({FRIEND, BLOCKED}), blocked=frozenset({BLOCKED}), exclude=frozenset({"seen"}),
        creator_affinity={"creator1": 3.0, BLOCKED: 5.0, VIEWER: 2.0}, hashtag_affinity={"cats": 2.0},
        sound_affinity={"s1": 1.0},
        recent=[("pub1", 2.0, NOW), ("pub3", 1.5, NOW), ("blocked-public", 3.0, NOW)],
        trending=[(v, 1.0) for v in ("blocked-public", "stranger-followers", "seen", "own", *ids[:20], "no-such-id")],
        collab=collab, content=content)
    return catalog, extras


def context(catalog: Catalog, **extras) -> SourceContext:
    return SourceContext(user_id=VIEWER, catalog=catalog, settings=Settings(), now=NOW, k=50, **extras)


@pytest.fixture(scope="module")
def platform():
    return populated()


@pytest.mark.parametrize("source_cls", ALL_SOURCES, ids=lambda cls: cls.name)
def test_contract_on_a_populated_platform(source_cls, platform):
    catalog, extras = platform
    source = source_cls.from_settings(Settings())
    ctx = context(catalog, **extras)
    asyncio.run(source.candidates(ctx))  # first call may build an ANN index (done once per model)
    started = time.perf_counter()
    result = asyncio.run(source.candidates(ctx))
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert elapsed_ms < source.budget_ms, f"{source.name} took {elapsed_ms:.1f} ms of {source.budget_ms}"
    assert result, f"{source.name} proposed nothing on a populated platform"
    assert all(isinstance(c, Candidate) and c.source == source.name for c in result)
    ids = [c.video_id for c in result]
    assert len(ids) == len(set(ids)), "duplicated ids"
    assert len(ids) <= ctx.k
    forbidden = {"stranger-followers", "blocked-public", "own", "seen", "no-such-id"}
    assert not set(ids) & forbidden, set(ids) & forbidden
    assert all(ctx.allowed(vid) for vid in ids)
    assert all(np.isfinite(c.score) for c in result)


@pytest.mark.parametrize("source_cls", ALL_SOURCES, ids=lambda cls: cls.name)
def test_a_memo_kept_from_earlier_rankings_changes_no_answer(source_cls, platform):
    """SourceContext.memo lives with the viewer's queue from one ranking to the next: with a memo
    an earlier ranking filled, a source answers as it does afresh, also after the exclusions grew
    and after its model was replaced by one whose rows mean other videos."""
    catalog, extras = platform
    source = source_cls.from_settings(Settings())
    memo: dict = {}
    first = asyncio.run(source.candidates(context(catalog, memo=memo, **extras)))
    grown = {**extras, "exclude": extras["exclude"] | {c.video_id for c in first[:5]}}
    again = asyncio.run(source.candidates(context(catalog, memo=memo, **grown)))
    assert again == asyncio.run(source.candidates(context(catalog, **grown)))
    assert not {c.video_id for c in again} & grown["exclude"]
    collab = extras["collab"]
    pairs = [(u, v) for u, v in zip(*_training_pairs(collab)) if v not in {"pub0", "pub2", "pub4"}]
    retrained = CollaborativeModel(factors=8, iterations=5).fit([u for u, _ in pairs], [v for _, v in pairs],
                                                                [1.0] * len(pairs))
    assert retrained.item_ids != collab.item_ids
    swapped = {**grown, "collab": retrained}
    assert (asyncio.run(source.candidates(context(catalog, memo=memo, **swapped)))
            == asyncio.run(source.candidates(context(catalog, **swapped))))


def _training_pairs(collab: CollaborativeModel) -> tuple[list[str], list[str]]:
    """Every (user, item) pair with a positive score in the model, a stand-in training log."""
    users, items = [], []
    for user in collab.user_ids:
        for item, _score in collab.nearest(collab.user_vector(user), 8):
            users.append(user)
            items.append(item)
    return users, items


def test_followers_only_videos_come_from_followed_creators(platform):
    catalog, extras = platform
    from clipfeed.feed.sources import FollowingSource

    ids = {c.video_id for c in asyncio.run(FollowingSource().candidates(context(catalog, **extras)))}
    assert ids == {"friend-public", "friend-followers"}


@pytest.mark.parametrize("source_cls", ALL_SOURCES, ids=lambda cls: cls.name)
def test_contract_on_an_empty_platform(source_cls, platform):
    _catalog, extras = platform
    empty = Catalog({}, fresh_hours=72, fresh_max_views=50)
    source = source_cls.from_settings(Settings())
    assert asyncio.run(source.candidates(context(empty, **extras))) == []
    # And for a viewer nobody knows anything about.
    bare = SourceContext(user_id=None, catalog=empty, settings=Settings(), now=NOW)
    assert asyncio.run(source.candidates(bare)) == []


class _Slow:
    name, budget_ms = "slow", 20.0

    async def candidates(self, ctx):
        await asyncio.sleep(2)
        return [Candidate("pub1", 1.0, self.name)]


class _Busy:
    """Computes without yielding past its budget: cannot be interrupted, is dropped afterwards."""

    name, budget_ms = "busy", 5.0

    async def candidates(self, ctx):
        time.sleep(0.03)
        return [Candidate("pub1", 1.0, self.name)]


class _Failing:
    name, budget_ms = "failing", 50.0

    async def candidates(self, ctx):
        raise RuntimeError("model exploded")


def test_a_slow_or_failing_source_is_dropped_and_the_rest_served(platform, caplog):
    catalog, extras = platform
    from clipfeed.feed.sources import TrendingSource

    started = time.perf_counter()
    results, problems = asyncio.run(run_sources([_Slow(), _Busy(), _Failing(), TrendingSource(50.0)],
                                                context(catalog, **extras)))
    assert time.perf_counter() - started < 1.0  # the slow one was cut at its budget
    assert set(results) == {"trending"} and results["trending"]
    assert problems["slow"] == "timeout" and problems["busy"] == "timeout" and "model exploded" in problems["failing"]
    assert any("slow" in r.getMessage() for r in caplog.records)
