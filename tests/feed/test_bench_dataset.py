"""bench/feed's generated platform at a tiny size: seeded, loaded completely and consistently by
the bulk loaders of both backends (indexes rebuilt, search documents built, counters right), and
readable by the training job."""

import asyncio
import sqlite3
from collections import Counter

import numpy as np
import pytest

from bench.feed_data import BIG_TABLES, FeedDataset, load_postgres, load_sqlite
from clipfeed.feed.training import load_training_log

SIZE = dict(users=300, videos=2_000, interactions=6_000)


def test_the_dataset_is_seeded_and_shaped_like_the_platform():
    a, b, c = FeedDataset(**SIZE, seed=1), FeedDataset(**SIZE, seed=1), FeedDataset(**SIZE, seed=2)
    assert a.video_ids.tolist() == b.video_ids.tolist() and a.events[:50] == b.events[:50]
    assert a.video_ids.tolist() != c.video_ids.tolist()
    assert len(set(a.user_ids.tolist())) == SIZE["users"] and len(set(a.video_ids.tolist())) == SIZE["videos"]
    assert len(set(a.handles)) == SIZE["users"]
    # interactions only on public, ready videos, creator = the video's owner, in time order
    public = set(a.public_ids)
    owner = {v[0]: v[1] for v in a.videos}
    events = list(a.events)
    assert len(events) == SIZE["interactions"]
    assert all(e[2] in public and e[3] == owner[e[2]] for e in events)
    assert np.all(np.diff(-a.ev_age_s) >= 0)
    kinds = Counter(e[0] for e in events)
    assert kinds.most_common(1)[0][0] == "view" and set(kinds) == {"view", "like", "comment", "share", "skip"}
    # popular videos get many more interactions than the median one (Zipf)
    per_video = np.bincount(a.ev_video, minlength=SIZE["videos"])
    assert per_video.max() > 20 * max(1, np.median(per_video[a.public]))
    # follows: unique pairs, nobody follows themselves
    pairs = set(zip(a.follow_src.tolist(), a.follow_dst.tolist()))
    assert len(pairs) == len(a.follow_src) and all(s != d for s, d in pairs)


def _load(settings, data) -> None:
    if settings.database_schema:
        asyncio.run(load_postgres(settings.database_url.replace("+asyncpg", ""), data, settings.database_schema))
    else:
        load_sqlite(settings.resolved_database_url.split(":///", 1)[1], data)


def _query(settings, sql: str) -> list[tuple]:
    if not settings.database_schema:
        con = sqlite3.connect(settings.resolved_database_url.split(":///", 1)[1])
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    async def run():
        import asyncpg

        con = await asyncpg.connect(settings.database_url.replace("+asyncpg", ""),
                                    server_settings={"search_path": settings.database_schema})
        try:
            return [tuple(r) for r in await con.fetch(sql)]
        finally:
            await con.close()
    return asyncio.run(run())


def _indexes(settings) -> set[str]:
    tables = ", ".join(f"'{t}'" for t in BIG_TABLES)
    if settings.database_schema:
        sql = f"SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename IN ({tables})"
    else:
        sql = f"SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN ({tables})"
    return {r[0] for r in _query(settings, sql)}


def test_the_bulk_load_is_complete_and_consistent(settings):
    data = FeedDataset(**SIZE, seed=3)
    before = _indexes(settings)
    _load(settings, data)
    assert _indexes(settings) == before  # dropped for the load, rebuilt after
    counts = {t: _query(settings, f"SELECT count(*) FROM {t}")[0][0]
              for t in ("users", "videos", "interaction_events", "follows", "sounds")}
    assert counts == {"users": SIZE["users"], "videos": SIZE["videos"], "interaction_events": SIZE["interactions"],
                      "follows": len(data.follow_src), "sounds": len(data.sound_ids)}
    # ids follow created_at, as in the append-only log
    stamps = [r[0] for r in _query(settings, "SELECT created_at FROM interaction_events ORDER BY id")]
    assert stamps == sorted(stamps)
    # the database's own search documents exist for exactly the public, ready videos, with their tags
    docs = _query(settings, "SELECT count(*), sum(CASE WHEN hashtags <> '' THEN 1 ELSE 0 END) FROM search_video_docs")
    assert docs[0][0] == len(data.public)
    assert docs[0][1] > 0
    # denormalized counters agree with the rows
    assert _query(settings, "SELECT count(*) FROM users u WHERE follower_count <> "
                            "(SELECT count(*) FROM follows f WHERE f.followee_id = u.id)")[0][0] == 0
    assert _query(settings, "SELECT count(*) FROM hashtags h WHERE video_count <> "
                            "(SELECT count(*) FROM video_hashtags vh WHERE vh.hashtag_id = h.id)")[0][0] == 0
    assert _query(settings, "SELECT count(*) FROM sounds WHERE source_video_id IS NULL")[0][0] == 0

    log = asyncio.run(load_training_log(settings))
    pairs = {(e[1], e[2]) for e in data.events}
    assert len(log) == len(pairs)
    assert log.positive.sum() > 0 and log.items is not None and len(log.items) == len({p[1] for p in pairs})


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_and_empty_logs_generate(n):
    data = FeedDataset(users=5, videos=40, interactions=n, seed=0)
    assert len(data.events) == n and len(list(data.events)) == n
