"""The content source over real HTTP: videos that look and sound like what the viewer completed
(their stored media vectors), or say the same things (captions), come first among its candidates."""

from __future__ import annotations

import numpy as np
import pytest

from clipfeed.media.content_features import FEATURE_NAMES, NAMES_VERSION
from clipfeed.media.models import VideoContentFeatures
from tests.feed import factories as f
from tests.feed.test_for_you import GENEROUS, page, watch

DIM = len(FEATURE_NAMES)


@pytest.fixture
def settings(settings_factory):
    # Rows inserted straight into the database: the catalog (and its content index) is read again
    # for every ranking.
    return settings_factory(feed_catalog_refresh_s=0, feed_source_budget_ms=GENEROUS, feed_exploration_share=0.0)


def store_vector(settings, video_id: str, vector: np.ndarray, version: int = NAMES_VERSION) -> None:
    async def work(session):
        session.add(VideoContentFeatures(video_id=video_id, names_version=version,
                                         vector=np.asarray(vector, dtype="<f4").tobytes()))

    f.run(settings, work)


def content_scores(client, viewer) -> dict[str, float]:
    body = page(client, viewer["headers"], limit=50, explain=1)
    assert body["mode"] == "personalized", body
    return {item["id"]: item["explain"]["parts"]["source_content"] for item in body["items"]
            if "content" in item["explain"]["sources"]}


def test_videos_that_look_and_sound_alike_are_the_content_sources_nearest(client, settings):
    """Two styles of video with nothing in common in their words or creators (each video its own
    creator, the same neutral caption): a viewer who completed three of style A gets every other
    style-A video scored above every style-B one by the content source. A video stored with a
    vector of another names version counts as having none."""
    rng = np.random.default_rng(7)
    style = {"a": rng.normal(size=DIM), "b": rng.normal(size=DIM)}
    videos = {}
    for name in ("a", "b"):
        for i in range(8):
            owner = f.make_user(settings)
            video_id = f.make_video(settings, owner["id"], "a short clip")
            store_vector(settings, video_id, style[name] + 0.1 * rng.normal(size=DIM))
            videos[video_id] = name
    stale_owner = f.make_user(settings)
    stale = f.make_video(settings, stale_owner["id"], "a short clip")
    store_vector(settings, stale, style["a"], version=NAMES_VERSION + 1)
    viewer = f.make_user(settings)
    watched = [v for v, name in videos.items() if name == "a"][:3]
    for video_id in watched:
        watch(client, viewer["headers"], video_id, completed=True, like=True)

    scores = content_scores(client, viewer)
    alike = [scores[v] for v, name in videos.items() if name == "a" and v in scores]
    unlike = [scores[v] for v, name in videos.items() if name == "b" and v in scores]
    assert len(alike) == 5 and len(unlike) == 8, scores
    assert min(alike) > max(unlike), (sorted(alike), sorted(unlike))
    # Text alone places the stale-version video: the same caption as all the others, so no nearer
    # than a style-B one (it would be nearest of all with its vector read).
    assert scores[stale] < min(alike), (scores[stale], sorted(alike))


def test_captions_place_videos_without_media_vectors(client, settings):
    """Videos processed before media vectors existed (no row) still have their words: the
    caption, not only the hashtags, is embedded."""
    viewer = f.make_user(settings)
    about = {}
    for topic in ("sourdough bread baking", "mountain bike trail"):
        for i in range(6):
            owner = f.make_user(settings)
            about[f.make_video(settings, owner["id"], f"{topic} day {i}")] = topic
    watched = [v for v, topic in about.items() if topic.startswith("sourdough")][:3]
    for video_id in watched:
        watch(client, viewer["headers"], video_id, completed=True, like=True)

    scores = content_scores(client, viewer)
    bread = [scores[v] for v, topic in about.items() if topic.startswith("sourdough") and v in scores]
    bikes = [scores[v] for v, topic in about.items() if topic.startswith("mountain") and v in scores]
    assert len(bread) == 3 and len(bikes) == 6, scores
    assert min(bread) > max(bikes), (sorted(bread), sorted(bikes))


def test_a_catalog_refresh_embeds_only_new_or_edited_texts_and_builds_the_same_index():
    """The text vectors of the previous build are reused by video id and text: the second build
    of an unchanged catalog embeds nothing, an edited caption and a new video are embedded, and
    the index equals one built from scratch."""
    from clipfeed.feed.recsys.content import TextVectorCache, served_index

    ids = [f"v{i}" for i in range(30)]
    captions = [f"clip number {i} about {'cats' if i % 2 else 'cars'}" for i in range(30)]
    hashtags = [(f"tag{i % 4}",) for i in range(30)]
    media = np.full((30, DIM), np.nan, dtype=np.float32)
    media[::3] = np.random.default_rng(1).normal(size=(10, DIM))
    cache = TextVectorCache()
    served_index(ids, captions, hashtags, media, cache)
    assert cache.embedded == 30
    again = served_index(ids, captions, hashtags, media, cache)
    assert cache.embedded == 0
    np.testing.assert_array_equal(again.vectors, served_index(ids, captions, hashtags, media).vectors)

    captions[5] = "an edited caption"
    grown_ids, grown_captions = ids + ["v30"], captions + ["a new upload"]
    grown_tags, grown_media = hashtags + [("tag9",)], np.vstack([media, np.full((1, DIM), np.nan, np.float32)])
    refreshed = served_index(grown_ids, grown_captions, grown_tags, grown_media, cache)
    assert cache.embedded == 2
    np.testing.assert_array_equal(refreshed.vectors, served_index(grown_ids, grown_captions, grown_tags, grown_media).vectors)
