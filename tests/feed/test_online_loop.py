"""The online loop: simulated users with known tastes swipe through the real HTTP API.

A small platform from the simulator (users with latent tastes over topics, creators, videos with
topics, quality and duration, hashtags and sounds) is written into a live server's database. Each
simulated user then watches For You sessions for several rounds, reporting every view, like and
follow through the API exactly as a client would; the behaviour model (`respond`) decides what
they do. Their simulated watch time per session must rise over the rounds (the feed learns from
their swipes within the session and across sessions) and end above what the same users watch
from a trending-only feed, with the same seed.
"""

from __future__ import annotations

import numpy as np
import pytest

from clipfeed.feed import trending
from clipfeed.feed.recsys.online import seed_platform, watch_session
from clipfeed.feed.recsys.simulator import SimConfig, simulate_platform
from tests.feed.factories import run
from tests.feed.test_for_you import GENEROUS

ROUNDS = 4
PAGES_PER_SESSION = 2
PAGE = 10
LIVE_USERS = 8


@pytest.fixture
def settings(settings_factory):
    return settings_factory(feed_catalog_refresh_s=0, feed_source_budget_ms=GENEROUS, likes_per_minute=10_000,
                            follows_per_minute=10_000)


@pytest.mark.slow
def test_watch_time_rises_over_rounds_and_beats_trending(client, settings):
    platform = simulate_platform(SimConfig(seed=11, users=LIVE_USERS + 60, videos=1000, creators=60, topics=10,
                                           sounds=40))
    seeded = run(settings, lambda session: seed_platform(session, settings, platform, live_users=LIVE_USERS,
                                                         organic_users=60))
    trending.recompute(settings)

    def session_watch(u, rng, trending_only):
        session = watch_session(client, platform, seeded, u, rng, trending_only=trending_only,
                                pages=PAGES_PER_SESSION, page_size=PAGE)
        if not trending_only:
            assert set(session.modes) <= {"cold_start", "personalized"}, session.modes
        return session.watched_s, session.expected_s

    baseline = []
    for u in range(LIVE_USERS):
        rng = np.random.default_rng(1000 + u)
        baseline += [session_watch(u, rng, True) for _ in range(ROUNDS)]

    # [round, viewer, (watched, expected)]: the simulated watch time and what the served videos
    # were worth on average (the same feeds without the dice: 8 viewers' sampled means swing
    # ±10 % per round, once enough to hide the rise).
    per_round = np.zeros((ROUNDS, LIVE_USERS, 2))
    for u in range(LIVE_USERS):
        rng = np.random.default_rng(1000 + u)
        for round_no in range(ROUNDS):
            per_round[round_no, u] = session_watch(u, rng, False)
    means = per_round.mean(axis=1)
    trending_mean = np.mean(baseline, axis=0)
    print(f"watch time per session by round (watched, expected): {np.round(means, 1).tolist()}; "
          f"trending-only: {np.round(trending_mean, 1).tolist()}")
    expected = means[:, 1]
    late = means[ROUNDS // 2:].mean(axis=0)  # once the feed has seen a few sessions of swipes
    assert expected[1] > expected[0], means
    # The first session already learns from its first page (its second page is re-ranked from
    # those swipes, content similarity included): the rise is measured against that.
    assert late[1] > expected[0] * 1.1, means
    # Beats the trending-only feed, both as watched and as expected.
    assert np.all(late > trending_mean * 1.1), (means, trending_mean)
