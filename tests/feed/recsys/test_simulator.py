"""The simulator is deterministic by seed and its behaviour model follows affinity and quality."""

import numpy as np
import pytest

from clipfeed.feed.recsys.simulator import (SimConfig, completion_probability, expected_watch_ms, generate_log,
                                            ground_truth, respond, respond_many, simulate_platform)

SMALL = SimConfig(seed=3, users=60, videos=300, creators=60, interactions_per_user=30)


def test_same_seed_same_platform_and_log():
    a, b = simulate_platform(SMALL), simulate_platform(SMALL)
    assert a.video_hashtags == b.video_hashtags and np.array_equal(a.user_taste, b.user_taste)
    la, lb = generate_log(a), generate_log(b)
    assert np.array_equal(la.user, lb.user) and np.array_equal(la.item, lb.item)
    assert np.array_equal(la.ts, lb.ts) and np.array_equal(la.weight, lb.weight)
    other = generate_log(simulate_platform(SimConfig(**{**SMALL.__dict__, "seed": 4})))
    assert not (len(other) == len(la) and np.array_equal(other.item, la.item))


def test_log_is_chronological_per_user_and_distinct_per_user():
    log = generate_log(simulate_platform(SMALL))
    for u in set(log.user.tolist()):
        mask = log.user == u
        assert np.all(np.diff(log.ts[mask]) >= 0)
        assert len(set(log.item[mask].tolist())) == mask.sum()
    assert log.items is not None and set(log.item.tolist()) <= set(log.items)
    # skips are views shorter than 2 s; completions are never skips
    assert np.all(log.flags["watch_ms"][log.flags["skipped"]] < 2000)
    assert not np.any(log.flags["skipped"] & log.flags["completed"])


def test_completion_follows_affinity():
    platform = simulate_platform(SMALL)
    users = np.repeat(np.arange(60), 300)
    videos = np.tile(np.arange(300), 60)
    affinity = platform.affinity(users, videos)
    rng = np.random.default_rng(0)
    response = respond_many(platform, users, videos, rng)
    high, low = affinity > np.quantile(affinity, 0.8), affinity < np.quantile(affinity, 0.2)
    assert response["completed"][high].mean() > 2 * response["completed"][low].mean()
    assert response["skipped"][low].mean() > response["skipped"][high].mean()
    # likes, shares and follows happen only after a completion
    for name in ("liked", "shared", "followed", "commented"):
        assert not np.any(response[name] & ~response["completed"])
    # the probability itself rises with affinity
    p = completion_probability(platform, users, videos)
    assert np.corrcoef(p, affinity)[0, 1] > 0.5


def test_single_respond_matches_the_model():
    platform = simulate_platform(SMALL)
    rng = np.random.default_rng(1)
    r = respond(platform, 0, 0, rng, now=0.0)
    duration_ms = platform.video_duration[0] * 1000
    assert (r.skipped and r.watch_ms < 2000) or r.completed or (2000 <= r.watch_ms <= duration_ms)
    assert not (r.liked and not r.completed)


def test_expected_watch_is_the_mean_of_the_sampled_watch():
    platform = simulate_platform(SMALL)
    # The shortest and longest videos (the partial watch's 2 s floor bites on short ones) for a
    # few users: each pair sampled many times.
    order = np.argsort(platform.video_duration)
    videos = np.concatenate([order[:3], order[-3:]])
    users = np.arange(4)
    pairs_u, pairs_v = np.repeat(users, len(videos)), np.tile(videos, len(users))
    draws = 20_000
    response = respond_many(platform, np.repeat(pairs_u, draws), np.repeat(pairs_v, draws), np.random.default_rng(2))
    sampled = response["watch_ms"].reshape(len(pairs_u), draws)
    expected = expected_watch_ms(platform, pairs_u, pairs_v)
    standard_error = sampled.std(axis=1) / np.sqrt(draws)
    assert np.all(np.abs(sampled.mean(axis=1) - expected) < 4 * standard_error + 1.0), (sampled.mean(axis=1), expected)
    # For one video, the viewers who match it better are expected to watch it longer.
    everyone = np.arange(len(platform.user_ids))
    one_video = np.full(len(everyone), videos[-1])
    watch = expected_watch_ms(platform, everyone, one_video)
    assert np.corrcoef(np.argsort(np.argsort(watch)),
                       np.argsort(np.argsort(completion_probability(platform, everyone, one_video))))[0, 1] > 0.95


def test_ground_truth_scores_a_list_by_what_its_viewers_get():
    platform = simulate_platform(SMALL)
    users = platform.user_ids[:20]
    everyone = np.arange(len(platform.video_ids))

    def top(u: int, score) -> list[str]:
        return [platform.video_ids[v] for v in np.argsort(-score(np.full(len(everyone), u), everyone))[:20]]

    best_completion = {user: top(u, lambda a, b: completion_probability(platform, a, b)) for u, user in enumerate(users)}
    best_watch = {user: top(u, lambda a, b: expected_watch_ms(platform, a, b)) for u, user in enumerate(users)}
    worst = {user: top(u, lambda a, b: -completion_probability(platform, a, b)) for u, user in enumerate(users)}
    by_completion, by_watch, bad = (ground_truth(platform, recs, 20) for recs in (best_completion, best_watch, worst))
    assert by_completion["completion@20"] > by_watch["completion@20"] > bad["completion@20"]
    assert by_watch["watch_s@20"] > by_completion["watch_s@20"] > bad["watch_s@20"]
    # the metric is per user: a user's list is only scored for that user
    one = {users[0]: best_completion[users[0]]}
    assert ground_truth(platform, one, 20)["completion@20"] == pytest.approx(
        completion_probability(platform, np.zeros(20, dtype=int),
                               np.array([platform.video_ids.index(v) for v in one[users[0]]])).mean())


def test_media_vectors_follow_topics_and_change_nothing_else():
    from dataclasses import replace

    from clipfeed.feed.recsys.content import metadata_index
    from clipfeed.media.content_features import FEATURE_NAMES

    plain = simulate_platform(SMALL)
    dressed = simulate_platform(replace(SMALL, media_signal=1.0, untagged_share=0.5))
    assert plain.video_media is None and all(m.media is None for m in plain.item_meta().values())
    # The options draw from a stream of their own: same users, videos and behaviour, same log.
    a, b = generate_log(plain), generate_log(dressed)
    assert np.array_equal(a.item, b.item) and np.array_equal(a.weight, b.weight)
    assert np.array_equal(plain.video_topics, dressed.video_topics)

    media = dressed.video_media
    assert media.shape == (300, len(FEATURE_NAMES)) and np.isfinite(media).all()
    # A video's nearest neighbour by its media vector shares its main topic far more often than chance.
    unit = media / np.linalg.norm(media, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    main = dressed.video_topics.argmax(axis=1)
    same_topic = float((main[similarity.argmax(axis=1)] == main).mean())
    chance = float(((np.bincount(main) / len(main)) ** 2).sum())
    assert same_topic > 3 * chance

    untagged = [v for v, meta in dressed.item_meta().items() if not meta.hashtags and not meta.caption]
    assert 0.4 < len(untagged) / 300 < 0.6
    # Untagged videos still get a place in the content index: by how they look and sound.
    index = metadata_index(b.items, b.all_items)
    assert set(untagged) <= set(index.ids)
    assert np.linalg.norm(index.vectors[[index.index_of[v] for v in untagged]], axis=1).min() > 0
