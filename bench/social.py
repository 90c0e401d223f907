"""Social benchmark: Following feed and search latency, like/comment write throughput, trending
recompute time, on generated data (default: the issue's 10k users / 200k videos / 2M interactions).

    python bench/social.py [--users N --videos N --interactions N] [--postgres] [--keep DIR]

Data is bulk-loaded (executemany on SQLite, COPY on PostgreSQL) with the database's own search
triggers firing, so the indexes are built exactly as in production. Latencies are server-side:
the service call inside its transaction (no HTTP, no JSON), measured with the application's own
engine and session factory. Writes go through the same service functions as the API (likes and
comments with their counters, events and notifications), each in its own transaction, 16 in
flight at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sqlite3
import string
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sqlalchemy import select, text  # noqa: E402

from bench._harness import print_table  # noqa: E402
from clipfeed.accounts.models import User  # noqa: E402
from clipfeed.config import Settings  # noqa: E402
from clipfeed.db import Database  # noqa: E402
from clipfeed.db.migrate import upgrade  # noqa: E402

from bench.feed_data import COMMON_WORDS, DAY, REGION_WEIGHTS, REGIONS  # noqa: E402 (one platform shape for both benches)

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def sqlite_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def new_id(rng: random.Random) -> str:
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    return "".join(rng.choice(alphabet) for _ in range(16))


def zipf_cum(n: int, s: float = 1.05) -> list[float]:
    total, out = 0.0, []
    for i in range(n):
        total += 1.0 / (i + 1) ** s
        out.append(total)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

class Dataset:
    def __init__(self, users: int, videos: int, interactions: int, seed: int = 7):
        rng = random.Random(seed)
        self.rng = rng
        now = datetime.now(UTC)
        self.now = now
        syllables = [a + b for a in "bcdfghjklmnprstvz" for b in "aeiou"] + ["an", "el", "or", "is", "um"]
        vocab = set(COMMON_WORDS)
        while len(vocab) < 6000:
            vocab.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
        self.words = COMMON_WORDS + sorted(vocab - set(COMMON_WORDS))
        rng.shuffle(self.words[len(COMMON_WORDS):])
        word_cum = zipf_cum(len(self.words), 1.0)
        tag_words = self.words[:3000]
        self.tags = sorted({(a + b if rng.random() < 0.5 else a) for a, b in
                            zip(rng.sample(tag_words, 2500), rng.sample(tag_words, 2500))})
        rng.shuffle(self.tags)
        tag_cum = zipf_cum(len(self.tags), 1.1)

        # Users: handles from words, regions weighted.
        self.users = []
        handles = set()
        for i in range(users):
            handle = f"{rng.choice(self.words)}_{rng.choice(self.words)}"[:20] + str(i % 1000)
            while handle in handles:
                handle = handle[:20] + rng.choice(string.digits)
            handles.add(handle)
            region = rng.choices(REGIONS, REGION_WEIGHTS)[0] if rng.random() > 0.05 else None
            created = now - timedelta(seconds=rng.uniform(60 * DAY, 400 * DAY))
            self.users.append((new_id(rng), handle, f"{rng.choice(self.words).title()} {rng.choice(self.words).title()}",
                               region, created))
        user_ids = [u[0] for u in self.users]
        creators = rng.sample(user_ids, max(1, users * 4 // 10))
        creator_cum = zipf_cum(len(creators), 0.9)

        # Sounds: originals of 10 % of videos; 30 % of videos reuse a popular one.
        self.videos = []
        self.video_tags: list[tuple[str, int]] = []
        self.sounds = []
        tag_ids = {tag: i + 1 for i, tag in enumerate(self.tags)}
        owners = rng.choices(creators, cum_weights=creator_cum, k=videos)
        for i in range(videos):
            vid = new_id(rng)
            words = rng.choices(self.words, cum_weights=word_cum, k=rng.randint(4, 12))
            tags = list(dict.fromkeys(rng.choices(self.tags, cum_weights=tag_cum, k=rng.randint(0, 3))))
            caption = " ".join(words) + "".join(f" #{t}" for t in tags)
            roll = rng.random()
            visibility = ("public" if roll < 0.90 else "followers" if roll < 0.94
                          else "unlisted" if roll < 0.97 else "private")
            status = "ready" if rng.random() < 0.97 else "processing"
            published = now - timedelta(seconds=rng.uniform(0, 60 * DAY))
            views = int(rng.paretovariate(1.2) * 50)
            likes = int(views * rng.uniform(0.02, 0.12))
            self.videos.append([vid, owners[i], status, caption, visibility, None, {}, published,
                                views, likes, int(likes * 0.1), int(likes * 0.05)])
            for tag in tags:
                self.video_tags.append((vid, tag_ids[tag]))
            if rng.random() < 0.10:
                sid = new_id(rng)
                self.sounds.append((sid, owners[i], vid, f"original sound - {rng.choice(self.words)} "
                                    f"{rng.choice(self.words)}", published))
                self.videos[-1][6] = {"sound_id": sid}
        sound_cum = zipf_cum(len(self.sounds), 1.1) if self.sounds else []
        for video in self.videos:
            if self.sounds and rng.random() < 0.30:
                video[5] = rng.choices(self.sounds, cum_weights=sound_cum)[0][0]

        # Follows: lognormal out-degree, targets Zipf over creators.
        self.follows = []
        for uid, *_ in self.users:
            k = min(len(creators) - 1, max(1, int(rng.lognormvariate(3.4, 1.0))))
            for target in set(rng.choices(creators, cum_weights=creator_cum, k=k)):
                if target != uid:
                    self.follows.append((uid, target, now - timedelta(seconds=rng.uniform(0, 50 * DAY))))

        # Interactions over the last 14 days: popular videos all along, plus recent uploads.
        public = [v for v in self.videos if v[2] == "ready" and v[4] == "public"]
        rng.shuffle(public)
        popular_cum = zipf_cum(len(public), 1.0)
        recent = [v for v in public if (now - v[7]).total_seconds() < 14 * DAY] or public
        user_region = {u[0]: u[3] for u in self.users}
        kinds, kind_weights = ["view", "like", "comment", "share", "skip"], [86, 9, 2, 1.5, 1.5]
        n_popular = int(interactions * 0.7)
        picks = (rng.choices(public, cum_weights=popular_cum, k=n_popular)
                 + rng.choices(recent, k=interactions - n_popular))
        viewers = rng.choices(user_ids, k=interactions)
        chosen_kinds = rng.choices(kinds, kind_weights, k=interactions)
        self.events = []
        for video, viewer, kind in zip(picks, viewers, chosen_kinds):
            earliest = max(0.0, (now - video[7]).total_seconds())
            age = rng.uniform(0, min(14 * DAY, earliest))
            self.events.append((kind, viewer, video[0], video[1], rng.randint(500, 15000) if kind == "view" else 0,
                                kind == "view" and rng.random() < 0.4, False, user_region[viewer], None,
                                now - timedelta(seconds=age)))
        # An append-only log: rows arrive in time order (ids follow created_at).
        self.events.sort(key=lambda e: e[9])
        self.public_ids = [v[0] for v in public]


def load_sqlite(settings: Settings, data: Dataset) -> None:
    path = settings.resolved_database_url.split(":///", 1)[1]
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA foreign_keys=OFF")  # bulk order: tags and sounds before their videos
    with con:
        con.executemany(
            "INSERT INTO users (id, handle, display_name, password_hash, bio, region, role, created_at,"
            " follower_count, following_count, video_count) VALUES (?, ?, ?, '!', '', ?, 'user', ?, 0, 0, 0)",
            [(u[0], u[1], u[2], u[3], sqlite_ts(u[4])) for u in data.users])
        con.executemany("INSERT INTO sounds (id, owner_id, source_video_id, title, duration_ms, blob_key, use_count,"
                        " created_at) VALUES (?, ?, ?, ?, 15000, '', 0, ?)",
                        [(s[0], s[1], s[2], s[3], sqlite_ts(s[4])) for s in data.sounds])
        con.executemany("INSERT INTO hashtags (id, tag, video_count, created_at) VALUES (?, ?, 0, ?)",
                        [(i + 1, t, sqlite_ts(data.now)) for i, t in enumerate(data.tags)])
        con.executemany("INSERT INTO video_hashtags (video_id, hashtag_id) VALUES (?, ?)", data.video_tags)
        con.executemany(
            "INSERT INTO videos (id, owner_id, status, progress, caption, visibility, sound_id, original_filename,"
            " source_bytes, features, renditions, artifacts, attempts, created_at, updated_at, published_at,"
            " view_count, like_count, comment_count, share_count, comments_enabled, duration_ms, width, height)"
            " VALUES (?, ?, ?, 100, ?, ?, ?, '', 0, '{}', '[]', ?, 0, ?, ?, ?, ?, ?, ?, ?, 1, 15000, 720, 1280)",
            [(v[0], v[1], v[2], v[3], v[4], v[5], json.dumps(v[6]), sqlite_ts(v[7]), sqlite_ts(v[7]),
              sqlite_ts(v[7]) if v[2] == "ready" else None, v[8], v[9], v[10], v[11]) for v in data.videos])
        con.executemany("INSERT INTO follows (follower_id, followee_id, created_at) VALUES (?, ?, ?)",
                        [(a, b, sqlite_ts(t)) for a, b, t in data.follows])
        con.execute("UPDATE users SET follower_count = (SELECT count(*) FROM follows WHERE followee_id = users.id),"
                    " following_count = (SELECT count(*) FROM follows WHERE follower_id = users.id)")
        con.execute("UPDATE hashtags SET video_count = (SELECT count(*) FROM video_hashtags WHERE hashtag_id = hashtags.id)")
        con.executemany(
            "INSERT INTO interaction_events (kind, user_id, video_id, creator_id, watch_ms, completed, replay, region,"
            " viewer_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [e[:9] + (sqlite_ts(e[9]),) for e in data.events])
    con.execute("ANALYZE")
    con.execute("INSERT INTO search_videos_fts(search_videos_fts) VALUES ('optimize')")
    con.execute("INSERT INTO search_users_fts(search_users_fts) VALUES ('optimize')")
    con.commit()
    con.close()


async def load_postgres(settings: Settings, data: Dataset) -> None:
    import asyncpg

    con = await asyncpg.connect(PG_URL.replace("+asyncpg", ""),
                                server_settings={"search_path": settings.database_schema})
    schema = settings.database_schema
    try:
        async with con.transaction():
            await con.copy_records_to_table("users", schema_name=schema, columns=[
                "id", "handle", "display_name", "password_hash", "bio", "region", "role", "created_at",
                "follower_count", "following_count", "video_count"],
                records=[(u[0], u[1], u[2], "!", "", u[3], "user", u[4], 0, 0, 0) for u in data.users])
            await con.copy_records_to_table("sounds", schema_name=schema, columns=[
                "id", "owner_id", "source_video_id", "title", "duration_ms", "blob_key", "use_count", "created_at"],
                records=[(s[0], s[1], None, s[3], 15000, "", 0, s[4]) for s in data.sounds])
            await con.copy_records_to_table("hashtags", schema_name=schema, columns=["id", "tag", "video_count", "created_at"],
                                            records=[(i + 1, t, 0, data.now) for i, t in enumerate(data.tags)])
            await con.execute("SELECT setval(pg_get_serial_sequence('hashtags', 'id'), $1)", len(data.tags) + 1)
            await con.copy_records_to_table("videos", schema_name=schema, columns=[
                "id", "owner_id", "status", "progress", "caption", "visibility", "sound_id", "original_filename",
                "source_bytes", "features", "renditions", "artifacts", "attempts", "created_at", "updated_at",
                "published_at", "view_count", "like_count", "comment_count", "share_count", "comments_enabled",
                "duration_ms", "width", "height"],
                records=[(v[0], v[1], v[2], 100.0, v[3], v[4], v[5], "", 0, "{}", "[]", json.dumps(v[6]), 0, v[7], v[7],
                          v[7] if v[2] == "ready" else None, v[8], v[9], v[10], v[11], True, 15000, 720, 1280)
                         for v in data.videos])
            await con.copy_records_to_table("video_hashtags", schema_name=schema, columns=["video_id", "hashtag_id"],
                                            records=data.video_tags)
            await con.executemany("UPDATE sounds SET source_video_id = $2 WHERE id = $1",
                                  [(s[0], s[2]) for s in data.sounds])
            await con.copy_records_to_table("follows", schema_name=schema, columns=["follower_id", "followee_id", "created_at"],
                                            records=data.follows)
            await con.execute("UPDATE users SET follower_count = f.n FROM (SELECT followee_id, count(*) n FROM follows "
                              "GROUP BY followee_id) f WHERE f.followee_id = users.id")
            await con.execute("UPDATE users SET following_count = f.n FROM (SELECT follower_id, count(*) n FROM follows "
                              "GROUP BY follower_id) f WHERE f.follower_id = users.id")
            await con.copy_records_to_table("interaction_events", schema_name=schema, columns=[
                "kind", "user_id", "video_id", "creator_id", "watch_ms", "completed", "replay", "region", "viewer_key",
                "created_at"], records=data.events)
        await con.execute("VACUUM ANALYZE")
    finally:
        await con.close()


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------

def search_queries(data: Dataset, n: int) -> list[str]:
    rng = random.Random(11)
    cum = zipf_cum(len(data.words), 0.8)
    queries = []
    for i in range(n):
        word = rng.choices(data.words, cum_weights=cum)[0]
        kind = i % 10
        if kind < 4:
            queries.append(word)                                            # one word
        elif kind < 6:
            queries.append(f"{word} {rng.choices(data.words, cum_weights=cum)[0]}")  # two words
        elif kind < 8:
            queries.append(word[:max(3, len(word) - 2)])                    # a prefix (typing)
        elif kind == 8 and len(word) >= 5:
            pos = rng.randrange(2, len(word))
            queries.append(word[:pos] + rng.choice("aeiou") + word[pos:])   # a typo (insertion)
        else:
            queries.append("#" + rng.choice(data.tags[:500]))               # a hashtag
    return queries


async def timed(fn, *args) -> float:
    started = time.perf_counter()
    await fn(*args)
    return (time.perf_counter() - started) * 1000


async def measure(settings: Settings, data: Dataset, samples: int) -> dict:
    from clipfeed.feed import trending
    from clipfeed.feed.following import following_feed
    from clipfeed.search import service as search
    from clipfeed.social import comments, interactions

    db = Database(settings)
    rng = random.Random(3)
    results: dict = {}
    try:
        async with db.transaction() as session:
            followers = [row[0] for row in (await session.execute(
                text("SELECT DISTINCT follower_id FROM follows"))).all()]
            sample_ids = rng.sample(followers, min(samples, len(followers)))
            viewers = {u.id: u for u in (await session.scalars(
                select(User).where(User.id.in_(sample_ids)))).all()}
        # Warm-up (page cache, statement caches).
        for uid in sample_ids[:20]:
            async with db.transaction() as session:
                await following_feed(session, viewers[uid], limit=20, cursor=None)

        feed_ms = []
        for uid in sample_ids:
            async with db.transaction() as session:
                started = time.perf_counter()
                _, cursor = await following_feed(session, viewers[uid], limit=20, cursor=None)
                feed_ms.append((time.perf_counter() - started) * 1000)
            if cursor:
                async with db.transaction() as session:
                    started = time.perf_counter()
                    await following_feed(session, viewers[uid], limit=20, cursor=cursor)
                    feed_ms.append((time.perf_counter() - started) * 1000)
        results["feed"] = feed_ms

        queries = search_queries(data, samples * 2)
        for q in queries[:20]:
            async with db.transaction() as session:
                await search.search_videos(session, None, q, limit=20, cursor=None)
        search_ms, empty = [], 0
        for i, q in enumerate(queries):
            viewer = viewers[sample_ids[i % len(sample_ids)]] if i % 2 else None
            async with db.transaction() as session:
                started = time.perf_counter()
                found, _ = await search.search_videos(session, viewer, q, limit=20, cursor=None)
                search_ms.append((time.perf_counter() - started) * 1000)
            empty += not found
        results["search"] = search_ms
        results["search_empty"] = empty
        user_ms = []
        for i in range(samples):
            handle = data.users[rng.randrange(len(data.users))][1]
            q = handle[:rng.randint(3, len(handle))]
            async with db.transaction() as session:
                started = time.perf_counter()
                await search.search_users(session, None, q, limit=20, cursor=None)
                user_ms.append((time.perf_counter() - started) * 1000)
        results["users"] = user_ms

        # Writes: likes and comments through the services, one transaction each, 16 in flight.
        likers = list(viewers.values())
        pairs = list({(rng.choice(likers).id, rng.choice(data.public_ids)) for _ in range(samples * 6)})
        by_id = {u.id: u for u in likers}
        semaphore = asyncio.Semaphore(16)

        async def like(uid: str, vid: str):
            async with semaphore:
                async with db.transaction() as session:
                    await interactions.like(session, vid, by_id[uid])

        async def comment(uid: str, vid: str):
            async with semaphore:
                async with db.transaction() as session:
                    await comments.create_comment(session, vid, by_id[uid], text="so good #bench", parent_id=None)

        for name, fn, work in (("like", like, pairs), ("comment", comment, pairs[: len(pairs) // 2])):
            started = time.perf_counter()
            outcomes = await asyncio.gather(*(fn(uid, vid) for uid, vid in work), return_exceptions=True)
            elapsed = time.perf_counter() - started
            failures = [o for o in outcomes if isinstance(o, Exception)]
            results[name] = (len(work) - len(failures), elapsed, failures[:1])

        runs = []
        for _ in range(2):
            result = await trending.recompute_async(settings)
            runs.append(result)
        results["trending"] = runs
    finally:
        await db.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--videos", type=int, default=200_000)
    parser.add_argument("--interactions", type=int, default=2_000_000)
    parser.add_argument("--samples", type=int, default=300, help="users / queries sampled per measurement")
    parser.add_argument("--postgres", action="store_true", help=f"PostgreSQL ({PG_URL}) in a scratch schema")
    parser.add_argument("--keep", type=Path, default=None, help="data directory to keep (default: a temp dir)")
    parser.add_argument("--schema", default=None,
                        help="with --postgres: use (and keep) this schema instead of a scratch one")
    parser.add_argument("--reuse", action="store_true",
                        help="measure the database already in --keep / --schema (same size flags)")
    parser.add_argument("--seconds", type=int, default=0, help="ignored (shared CLI flag)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.keep or Path(tmp) / "data"
        values = dict(data_dir=data_dir, secret_key="bench")
        schema = None
        if args.postgres:
            schema = args.schema or f"bench_{uuid.uuid4().hex[:8]}"
            if not args.reuse:
                asyncio.run(_pg(f'CREATE SCHEMA "{schema}"'))
            values.update(database_url=PG_URL, database_schema=schema)
        settings = Settings(**values)
        try:
            started = time.perf_counter()
            upgrade(settings)
            data = Dataset(args.users, args.videos, args.interactions)
            generated = time.perf_counter() - started
            started = time.perf_counter()
            if args.reuse:
                pass
            elif args.postgres:
                asyncio.run(load_postgres(settings, data))
            else:
                load_sqlite(settings, data)
            loaded = time.perf_counter() - started
            print(f"generated in {generated:.1f}s, loaded in {loaded:.1f}s: {len(data.users)} users, "
                  f"{len(data.videos)} videos, {len(data.follows)} follows, {len(data.events)} interactions, "
                  f"{len(data.video_tags)} hashtag links, {len(data.sounds)} sounds")
            results = asyncio.run(measure(settings, data, args.samples))
        finally:
            if schema and not args.schema:
                asyncio.run(_pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    backend = "PostgreSQL" if args.postgres else "SQLite"
    feed, found, users = results["feed"], results["search"], results["users"]
    likes, like_s, like_err = results["like"]
    comments_n, comment_s, comment_err = results["comment"]
    runs = results["trending"]
    slowest = max(run.seconds for run in runs)
    rows = [
        ["Following page p50 / p99", f"{percentile(feed, 50):.1f} / {percentile(feed, 99):.1f} ms", "p99 <= 30 ms",
         "ok" if percentile(feed, 99) <= 30 else "MISSED"],
        ["Video search p50 / p99", f"{percentile(found, 50):.1f} / {percentile(found, 99):.1f} ms", "p99 <= 30 ms",
         "ok" if percentile(found, 99) <= 30 else "MISSED"],
        ["User search p50 / p99", f"{percentile(users, 50):.1f} / {percentile(users, 99):.1f} ms", "(reported)", ""],
        ["Likes (16 in flight)", f"{likes / like_s:.0f} /s", "(reported)", f"{likes} ok" + (f", {like_err}" if like_err else "")],
        ["Comments (16 in flight)", f"{comments_n / comment_s:.0f} /s", "(reported)",
         f"{comments_n} ok" + (f", {comment_err}" if comment_err else "")],
        ["Trending recompute", " / ".join(f"{run.seconds:.2f} s" for run in runs), "<= 10 s",
         "ok" if slowest <= 10 else "MISSED"],
    ]
    print_table(f"bench/social on {backend}: {args.users} users, {args.videos} videos, {args.interactions} "
                f"interactions ({len(feed)} feed pages, {len(found)} searches of which {results['search_empty']} "
                f"empty; trending entries {runs[-1].entries}, {runs[-1].regions} regions)",
                ["measure", "result", "goal", ""], rows)


async def _pg(sql: str) -> None:
    import asyncpg

    con = await asyncpg.connect(PG_URL.replace("+asyncpg", ""))
    try:
        await con.execute(sql)
    finally:
        await con.close()


if __name__ == "__main__":
    main()
