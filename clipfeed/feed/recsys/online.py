"""The simulator's online half: a simulated platform written into a real deployment's database,
and simulated viewers who swipe through its HTTP API as a client would.

`seed_platform` writes creators, videos (with hashtags and sounds), a few live viewers with
session tokens, and the organic history of the other simulated users as interaction events (what
trending, training and the catalog counters read). `watch_session` is one viewer's session: it
asks for For You (or Trending) pages, lets the behaviour model (`simulator.respond`) decide what
the viewer does with each item, reports every view, like and follow through the API, and returns
the simulated watch time. `tests/feed/test_online_loop.py` and `bench/online_loop.py` use both.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from clipfeed.accounts import service as accounts
from clipfeed.accounts.models import User
from clipfeed.db import utcnow
from clipfeed.feed.recsys.simulator import Platform, expected_watch_ms, generate_log, respond
from clipfeed.media.models import Video
from clipfeed.social import tags
from clipfeed.social.models import InteractionEvent


@dataclass
class SeededPlatform:
    viewer_ids: list[str]   # the live viewers: simulated users 0 .. live_users - 1
    tokens: list[str]
    video_ids: list[str]    # by the simulator's video index

    @property
    def index(self) -> dict[str, int]:
        return {video_id: v for v, video_id in enumerate(self.video_ids)}


async def seed_platform(session, settings, platform: Platform, *, live_users: int, organic_users: int,
                        interactions_per_user: int = 30, organic_accounts: bool = False) -> SeededPlatform:
    """Write the platform in `session` (committed by the caller). Simulated users 0 .. live_users-1
    become accounts with tokens; the next `organic_users` leave their organic history (spread over
    the last day) as events, so trending has something to count — as anonymous views, or with
    `organic_accounts` as accounts of their own (what training learns users from)."""
    now = utcnow()
    suffix = uuid.uuid4().hex[:6]
    creators = [User(handle=f"c{i}x{suffix}", display_name="Creator", password_hash="!")
                for i in range(len(platform.creator_ids))]
    viewers = [User(handle=f"sim{i}x{suffix}", display_name="Sim", password_hash="!") for i in range(live_users)]
    organic = [User(handle=f"org{i}x{suffix}", display_name="Sim", password_hash="!")
               for i in range(organic_users if organic_accounts else 0)]
    session.add_all(creators + viewers + organic)
    await session.flush()
    videos = []
    for v in range(len(platform.video_ids)):
        caption = platform.video_caption[v] + " " + " ".join(f"#{t}" for t in platform.video_hashtags[v])
        video = Video(owner_id=creators[platform.video_creator[v]].id, status="ready", visibility="public",
                      caption=caption, duration_ms=int(platform.video_duration[v] * 1000), width=270,
                      height=480, progress=100.0, renditions=[], artifacts={}, features={},
                      sound_id=platform.video_sound[v],
                      published_at=now - timedelta(hours=float(v % 240) / 2 + 1))
        session.add(video)
        videos.append(video)
    await session.flush()
    for video in videos:
        await tags.sync_video_hashtags(session, video)
    tokens = [await accounts.issue_token(session, settings, user) for user in viewers]

    log = generate_log(platform, interactions_per_user=interactions_per_user)
    index = {vid: i for i, vid in enumerate(platform.video_ids)}
    rows = []
    # The videos' counters as the view and like endpoints keep them (the catalog, the ranker's
    # rates and the exploration pool read them; events written directly do not bump them).
    counts = {video.id: {"view_count": 0, "completion_count": 0, "skip_count": 0, "like_count": 0}
              for video in videos}
    for k in range(len(log)):
        u = int(log.user[k][1:])
        if u < live_users or u >= live_users + organic_users:
            continue
        video = videos[index[log.item[k]]]
        at = now - timedelta(minutes=float(k % 1300))
        who = {"user_id": organic[u - live_users].id} if organic else {}
        rows.append(dict(kind="skip" if log.flags["skipped"][k] else "view", video_id=video.id,
                         creator_id=video.owner_id, watch_ms=int(log.flags["watch_ms"][k]),
                         completed=bool(log.flags["completed"][k]), created_at=at, **who))
        if log.flags["liked"][k]:
            rows.append(dict(kind="like", video_id=video.id, created_at=at, **who))
        tally = counts[video.id]
        tally["view_count"] += 1
        tally["completion_count"] += bool(log.flags["completed"][k])
        tally["skip_count"] += bool(log.flags["skipped"][k])
        tally["like_count"] += bool(log.flags["liked"][k])
    session.add_all(InteractionEvent(**row) for row in rows)
    for video in videos:
        for column, value in counts[video.id].items():
            setattr(video, column, value)
    return SeededPlatform([v.id for v in viewers], tokens, [v.id for v in videos])


@dataclass
class Session:
    watched_s: float    # the simulated watch time (what the dice decided)
    expected_s: float   # what the served items were worth on average (`expected_watch_ms`)
    modes: list[str]    # the mode each page was served in


def watch_session(client, platform: Platform, seeded: SeededPlatform, u: int, rng: np.random.Generator, *,
                  trending_only: bool = False, pages: int = 2, page_size: int = 10,
                  index: dict[str, int] | None = None) -> Session:
    """One session of viewer `u` (an httpx.Client on the deployment): `pages` pages. The
    trending-only baseline only measures: it reports nothing, so it never learns."""
    index = index if index is not None else seeded.index
    headers = {"Authorization": f"Bearer {seeded.tokens[u]}"}
    path = "/api/v1/feed/trending" if trending_only else "/api/v1/feed/for-you"
    total_ms, expected_ms, modes, cursor = 0, 0.0, [], None
    for _ in range(pages):
        params = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, params=params, headers=headers)
        response.raise_for_status()
        body = response.json()
        modes.append(body.get("mode", "trending"))
        for item in body["items"]:
            v = index[item["id"]]
            r = respond(platform, u, v, rng)
            total_ms += r.watch_ms
            expected_ms += float(expected_watch_ms(platform, np.array([u]), np.array([v]))[0])
            if trending_only:
                continue
            duration_ms = int(platform.video_duration[v] * 1000)
            view = {"watch_ms": min(r.watch_ms, duration_ms * (10 if r.replay else 1)), "completed": r.completed,
                    "replay": r.replay}
            client.post(f"/api/v1/videos/{item['id']}/view", json=view, headers=headers).raise_for_status()
            if r.liked:
                client.post(f"/api/v1/videos/{item['id']}/like", headers=headers).raise_for_status()
            if r.followed:
                # 409 when already followed from an earlier video of the creator: fine.
                client.post(f"/api/v1/users/{item['owner_id']}/follow", json={"video_id": item["id"]}, headers=headers)
        cursor = body["next_cursor"]
        if not cursor:
            break
    return Session(total_ms / 1000, expected_ms / 1000, modes)
