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

import uuid
from datetime import timedelta

import numpy as np
import pytest

from clipfeed.accounts import service as accounts
from clipfeed.accounts.models import User
from clipfeed.db import utcnow
from clipfeed.feed import trending
from clipfeed.feed.recsys.simulator import SimConfig, generate_log, respond, simulate_platform
from clipfeed.media.models import Video
from clipfeed.social import tags
from clipfeed.social.models import InteractionEvent
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


def build(settings, platform, organic_users: int):
    """Creators, videos (ready, with hashtags), live users with tokens, and the organic history
    of the other simulated users as interaction events (what trending is computed from)."""
    now = utcnow()

    async def work(session):
        creators = []
        for i, _ in enumerate(platform.creator_ids):
            user = User(handle=f"c{i}x{uuid.uuid4().hex[:6]}", display_name="Creator", password_hash="!")
            session.add(user)
            creators.append(user)
        viewers = []
        for i in range(LIVE_USERS):
            user = User(handle=f"sim{i}x{uuid.uuid4().hex[:6]}", display_name="Sim", password_hash="!")
            session.add(user)
            viewers.append(user)
        await session.flush()
        video_ids = []
        for v, _ in enumerate(platform.video_ids):
            caption = platform.video_caption[v] + " " + " ".join(f"#{t}" for t in platform.video_hashtags[v])
            video = Video(owner_id=creators[platform.video_creator[v]].id, status="ready", visibility="public",
                          caption=caption, duration_ms=int(platform.video_duration[v] * 1000), width=270,
                          height=480, progress=100.0, renditions=[], artifacts={}, features={},
                          sound_id=platform.video_sound[v],
                          published_at=now - timedelta(hours=float(v % 240) / 2 + 1))
            session.add(video)
            await session.flush()
            await tags.sync_video_hashtags(session, video)
            video_ids.append(video.id)
        tokens = [await accounts.issue_token(session, settings, user) for user in viewers]
        # Organic history of the other simulated users, in the last day.
        log = generate_log(platform, interactions_per_user=30)
        index = {vid: i for i, vid in enumerate(platform.video_ids)}
        rows = []
        for k in range(len(log)):
            u = int(log.user[k][1:])
            if u < LIVE_USERS or u >= LIVE_USERS + organic_users:
                continue
            v = index[log.item[k]]
            kind = "skip" if log.flags["skipped"][k] else "view"
            at = now - timedelta(minutes=float(k % 1300))
            rows.append(dict(kind=kind, video_id=video_ids[v], creator_id=creators[platform.video_creator[v]].id,
                             watch_ms=int(log.flags["watch_ms"][k]), completed=bool(log.flags["completed"][k]),
                             created_at=at))
            if log.flags["liked"][k]:
                rows.append(dict(kind="like", video_id=video_ids[v], created_at=at))
        for row in rows:
            session.add(InteractionEvent(**row))
        return [v.id for v in viewers], tokens, video_ids

    return run(settings, work)


def session_watch(client, platform, u: int, headers: dict, index: dict, rng, *, trending_only: bool) -> float:
    """One session: PAGES_PER_SESSION pages; returns the simulated watch time (seconds)."""
    total_ms = 0
    cursor = None
    for _ in range(PAGES_PER_SESSION):
        params = {"limit": PAGE}
        if cursor:
            params["cursor"] = cursor
        path = "/api/v1/feed/trending" if trending_only else "/api/v1/feed/for-you"
        response = client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        if not trending_only:
            assert body["mode"] in ("cold_start", "personalized"), body["mode"]
        for item in body["items"]:
            v = index[item["id"]]
            r = respond(platform, u, v, rng)
            total_ms += r.watch_ms
            if trending_only:
                continue  # the baseline only measures; it does not learn
            view = {"watch_ms": min(r.watch_ms, int(platform.video_duration[v] * 1000) * (10 if r.replay else 1)),
                    "completed": r.completed, "replay": r.replay}
            assert client.post(f"/api/v1/videos/{item['id']}/view", json=view, headers=headers).status_code == 200
            if r.liked:
                assert client.post(f"/api/v1/videos/{item['id']}/like", headers=headers).status_code == 200
            if r.followed:
                client.post(f"/api/v1/users/{item['owner_id']}/follow", json={"video_id": item["id"]}, headers=headers)
        cursor = body["next_cursor"]
        if not cursor:
            break
    return total_ms / 1000


@pytest.mark.slow
def test_watch_time_rises_over_rounds_and_beats_trending(client, settings):
    platform = simulate_platform(SimConfig(seed=11, users=LIVE_USERS + 60, videos=500, creators=60, topics=10,
                                           sounds=40))
    viewer_ids, tokens, video_ids = build(settings, platform, organic_users=60)
    trending.recompute(settings)
    index = {vid: i for i, vid in enumerate(video_ids)}
    headers = [{"Authorization": f"Bearer {token}"} for token in tokens]

    baseline = []
    for u in range(LIVE_USERS):
        rng = np.random.default_rng(1000 + u)
        baseline += [session_watch(client, platform, u, headers[u], index, rng, trending_only=True)
                     for _ in range(ROUNDS)]

    per_round = np.zeros((ROUNDS, LIVE_USERS))
    for u in range(LIVE_USERS):
        rng = np.random.default_rng(1000 + u)
        for round_no in range(ROUNDS):
            per_round[round_no, u] = session_watch(client, platform, u, headers[u], index, rng, trending_only=False)
    means = per_round.mean(axis=1)
    trending_mean = float(np.mean(baseline))
    print(f"watch time per session by round: {np.round(means, 1).tolist()}; trending-only: {trending_mean:.1f}")
    late = means[ROUNDS // 2:].mean()  # once the feed has seen a few sessions of swipes
    assert means[1] > means[0], means
    # The first session already learns from its first page (its second page is re-ranked from
    # those swipes, content similarity included): the rise is measured against that.
    assert late > means[0] * 1.1, means
    assert late > trending_mean * 1.1, (means, trending_mean)
