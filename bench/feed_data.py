"""The generated platform of bench/feed.py, built with numpy so that the issue's scale (1M videos,
100k users, 10M interactions) generates and loads in minutes on a 2-core machine.

The data has the same shape as bench/social.py's `Dataset` (which bench/feed.py used before and
which still serves the social bench): the same vocabulary and hashtag construction, users with
weighted regions, 40 % of them creators with a Zipf(0.9) share of the uploads, videos with
Zipf-drawn caption words and 0-3 hashtags, 90 % public / 97 % ready, published over 60 days,
Pareto view counts, sounds (10 % originals, 30 % of videos reuse a Zipf-popular one), follows
with a lognormal out-degree towards Zipf-popular creators, and interactions over the last 14
days (70 % Zipf over the public catalogue, 30 % uniform over recent uploads; 86 % views of
which 40 % completed, 9 % likes, 2 % comments, 1.5 % shares, 1.5 % skips) in time order. Only
the random generator differs (numpy's PCG64, seeded per chunk), so the values are not those of
social.py's Python `random` stream.

Memory stays bounded: the platform is held as numpy columns (about 30 bytes per interaction);
Python rows are made one chunk at a time while loading. Loading goes through the raw DBAPI
connection: sqlite3 `executemany` with `journal_mode=OFF` and `synchronous=OFF` (this scratch
database only), PostgreSQL `COPY` (asyncpg, CSV) without per-row foreign-key checks or triggers, the
videos' search documents then built by the database's own function; the secondary indexes of the
big tables (interaction_events, follows; on PostgreSQL also search_video_docs) are dropped before
and rebuilt after the load, then ANALYZE.
"""

from __future__ import annotations

import csv
import functools
import io
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

REGIONS = ["US", "BR", "IN", "ID", "MX", "FR", "DE", "GB", "JP", "NG", "TR", "PH"]
REGION_WEIGHTS = [20, 10, 14, 8, 6, 5, 5, 5, 6, 4, 3, 4]
COMMON_WORDS = ("the my this with when you and day love how to best new watch wait for it part "
                "dance pasta recipe cat dog funny travel music workout makeup tutorial prank life "
                "hack summer beach coffee morning vibes game goal challenge trend duet remix "
                "street food home garden baby guitar piano art drawing skate surf ski fashion").split()
DAY = 86400.0
ID_ALPHABET = np.frombuffer(b"0123456789abcdefghjkmnpqrstvwxyz", dtype=np.uint8)
KINDS = np.array(["view", "like", "comment", "share", "skip"], dtype=object)
SKIP_SHARE = 0.015  # of a video's views, as in the event log
KIND_WEIGHTS = np.array([86, 9, 2, 1.5, 1.5])
VISIBILITIES = np.array(["public", "followers", "unlisted", "private"], dtype=object)
CHUNK = 250_000
# Collaborative signal per event kind (completed views count double), as bench/feed.py always used.
COLLAB_WEIGHTS = {"view": 1.0, "like": 3.0, "share": 4.0, "comment": 2.0, "skip": 0.0}
BIG_TABLES = ("interaction_events", "follows")


def _cdf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    c = np.cumsum(w)
    return c / c[-1]


def _draw(rng: np.random.Generator, cdf: np.ndarray, k: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(k), side="right"), len(cdf) - 1)


def _new_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    codes = ID_ALPHABET[rng.integers(0, len(ID_ALPHABET), size=(n, 16))]
    return np.ascontiguousarray(codes).view("S16").ravel().astype("U16")


def _timestamps(now_us: int, ages_s: np.ndarray, sep: str = " ") -> list[str]:
    """'YYYY-MM-DD HH:MM:SS.ffffff' (SQLite's and SQLAlchemy's text layout) for now - age."""
    stamps = (np.int64(now_us) - (ages_s * 1e6).astype(np.int64)).astype("datetime64[us]")
    text = np.datetime_as_string(stamps, unit="us")  # ...T...
    chars = text.astype("U26").view(np.uint32).reshape(len(text), 26).copy()
    chars[:, 10] = ord(sep)
    return chars.view("U26").ravel().tolist()


class FeedDataset:
    """The platform as numpy columns. Every draw comes from `np.random.default_rng((seed, part,
    chunk))`, so a size and seed always give the same data whatever the chunking of the load."""

    def __init__(self, users: int, videos: int, interactions: int, seed: int = 7):
        self.n_users, self.n_videos, self.n_events = users, videos, interactions
        self.seed = seed
        now = datetime.now(UTC).replace(microsecond=0)
        self.now = now
        self.now_us = int(now.timestamp() * 1_000_000)
        rng = self._rng("vocab")
        self._vocabulary(rng)
        self._users(self._rng("users"))
        self._videos(self._rng("videos"))
        self._follows(self._rng("follows"))
        self._events()

    def _rng(self, part: str, chunk: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, sum(part.encode()) * 1000 + len(part), chunk])

    # -- generation ---------------------------------------------------------------------------

    def _vocabulary(self, rng):
        syllables = [a + b for a in "bcdfghjklmnprstvz" for b in "aeiou"] + ["an", "el", "or", "is", "um"]
        vocab = set(COMMON_WORDS)
        while len(vocab) < 6000:
            vocab.add("".join(syllables[i] for i in rng.integers(0, len(syllables), rng.integers(2, 5))))
        extra = sorted(vocab - set(COMMON_WORDS))
        rng.shuffle(extra)
        self.words = np.array(COMMON_WORDS + extra, dtype=object)
        self.word_cdf = _cdf(len(self.words), 1.0)
        tag_words = self.words[:3000]
        a = rng.choice(tag_words, 2500, replace=False)
        b = rng.choice(tag_words, 2500, replace=False)
        glue = rng.random(2500) < 0.5
        tags = sorted({(x + y if g else x) for x, y, g in zip(a, b, glue)})
        rng.shuffle(tags)
        self.tags = tags
        self.tag_cdf = _cdf(len(tags), 1.1)

    def _users(self, rng):
        n = self.n_users
        self.user_ids = _new_ids(rng, n)
        w1 = self.words[rng.integers(0, len(self.words), n)]
        w2 = self.words[rng.integers(0, len(self.words), n)]
        handles, seen = [], set()
        for i, (a, b) in enumerate(zip(w1, w2)):
            handle = f"{a}_{b}"[:20] + str(i % 1000)
            while handle in seen:
                handle = handle[:20] + str(rng.integers(0, 10))
            seen.add(handle)
            handles.append(handle)
        self.handles = handles
        d1 = self.words[rng.integers(0, len(self.words), n)]
        d2 = self.words[rng.integers(0, len(self.words), n)]
        self.display_names = [f"{a.title()} {b.title()}" for a, b in zip(d1, d2)]
        p = np.array(REGION_WEIGHTS, dtype=np.float64) / sum(REGION_WEIGHTS)
        region = rng.choice(len(REGIONS), n, p=p).astype(np.int8)
        region[rng.random(n) <= 0.05] = -1  # no region
        self.user_region = region
        self.user_age_s = rng.uniform(60 * DAY, 400 * DAY, n)
        self.creators = rng.choice(n, max(1, n * 4 // 10), replace=False).astype(np.int32)
        self.creator_cdf = _cdf(len(self.creators), 0.9)

    def _videos(self, rng):
        n = self.n_videos
        self.video_ids = _new_ids(rng, n)
        self.video_owner = self.creators[_draw(rng, self.creator_cdf, n)]
        roll = rng.random(n)
        self.video_visibility = np.select([roll < 0.90, roll < 0.94, roll < 0.97], [0, 1, 2], 3).astype(np.int8)
        self.video_ready = rng.random(n) < 0.97
        self.video_age_s = rng.uniform(0, 60 * DAY, n)
        views = (rng.pareto(1.2, n) + 1.0) * 50
        self.video_views = views.astype(np.int64)
        self.video_likes = (self.video_views * rng.uniform(0.02, 0.12, n)).astype(np.int64)
        # Completed views: 25-55 %, higher where the like rate is (no draw of its own, so the rest
        # of the platform is the one earlier runs generated from the same seed); skips: SKIP_SHARE.
        like_rate = self.video_likes / np.maximum(self.video_views, 1)
        self.video_completions = (self.video_views * (0.25 + 2.5 * like_rate)).astype(np.int64)
        # Sounds: an original for 10 % of videos (in upload order), then 30 % of videos reuse one.
        original = np.flatnonzero(rng.random(n) < 0.10)
        self.sound_video = original.astype(np.int32)
        self.sound_ids = _new_ids(rng, len(original))
        t1 = self.words[rng.integers(0, len(self.words), len(original))]
        t2 = self.words[rng.integers(0, len(self.words), len(original))]
        self.sound_titles = [f"original sound - {a} {b}" for a, b in zip(t1, t2)]
        self.video_sound = np.full(n, -1, dtype=np.int32)
        if len(original):
            reuse = rng.random(n) < 0.30
            self.video_sound[reuse] = _draw(rng, _cdf(len(original), 1.1), int(reuse.sum()))
        self.video_original_sound = np.full(n, -1, dtype=np.int32)
        self.video_original_sound[original] = np.arange(len(original), dtype=np.int32)
        self.public = np.flatnonzero(self.video_ready & (self.video_visibility == 0)).astype(np.int32)
        rng.shuffle(self.public)  # popularity order

    def _follows(self, rng):
        n, creators = self.n_users, self.creators
        degree = np.minimum(len(creators) - 1, np.maximum(1, rng.lognormal(3.4, 1.0, n).astype(np.int64)))
        follower = np.repeat(np.arange(n, dtype=np.int64), degree)
        followee = creators[_draw(rng, self.creator_cdf, len(follower))].astype(np.int64)
        keep = follower != followee
        # Unique pairs, ordered like the primary key (follower id, followee id) for a fast load.
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(self.user_ids)] = np.arange(n)
        by_rank = np.argsort(self.user_ids)
        code = np.unique(rank[follower[keep]] * n + rank[followee[keep]])
        self.follow_src = by_rank[code // n].astype(np.int32)
        self.follow_dst = by_rank[code % n].astype(np.int32)
        self.follow_age_s = rng.uniform(0, 50 * DAY, len(code))

    def _events(self):
        """Interactions over the last 14 days, generated a chunk at a time, sorted by time."""
        total, public = self.n_events, self.public
        if total and not len(public):
            raise ValueError("no public ready video to interact with")
        recent = public[self.video_age_s[public] < 14 * DAY]
        if not len(recent):
            recent = public
        popular_cdf = _cdf(len(public), 1.0) if len(public) else None
        kind_p = KIND_WEIGHTS / KIND_WEIGHTS.sum()
        n_popular = int(total * 0.7)
        user = np.empty(total, np.int32)
        video = np.empty(total, np.int32)
        kind = np.empty(total, np.int8)
        watch = np.zeros(total, np.int32)
        completed = np.zeros(total, bool)
        age = np.empty(total, np.float64)
        for chunk, start in enumerate(range(0, total, 1_000_000)):
            rng = self._rng("events", chunk)
            end = min(total, start + 1_000_000)
            k = end - start
            pos = np.arange(start, end)
            pop = pos < n_popular
            vids = np.empty(k, np.int32)
            vids[pop] = public[_draw(rng, popular_cdf, int(pop.sum()))]
            vids[~pop] = recent[rng.integers(0, len(recent), int((~pop).sum()))]
            video[start:end] = vids
            user[start:end] = rng.integers(0, self.n_users, k)
            kinds = rng.choice(len(KINDS), k, p=kind_p).astype(np.int8)
            kind[start:end] = kinds
            views = kinds == 0
            watch[start:end] = np.where(views, rng.integers(500, 15001, k), 0)
            completed[start:end] = views & (rng.random(k) < 0.4)
            age[start:end] = rng.uniform(0, 1, k) * np.minimum(14 * DAY, self.video_age_s[vids])
        order = np.argsort(-age, kind="stable")  # an append-only log: ids follow created_at
        self.ev_user, self.ev_video, self.ev_kind = user[order], video[order], kind[order]
        self.ev_watch, self.ev_completed, self.ev_age_s = watch[order], completed[order], age[order]

    # -- views used by the measurements ------------------------------------------------------

    @functools.cached_property
    def users(self) -> list[tuple]:
        """(id, handle, display name, region, created_at) per user, as bench/social.py's rows."""
        return [(uid, h, d, REGIONS[r] if r >= 0 else None, self.now - timedelta(seconds=a))
                for uid, h, d, r, a in zip(self.user_ids.tolist(), self.handles, self.display_names,
                                           self.user_region.tolist(), self.user_age_s.tolist())]

    @property
    def videos(self) -> _Rows:
        """(id, owner id, status, caption (not kept: ""), visibility) per video, made on access."""
        def rows(start, end):
            n = end - start
            return list(zip(self.video_ids[start:end].tolist(), self.user_ids[self.video_owner[start:end]].tolist(),
                            np.where(self.video_ready[start:end], "ready", "processing").tolist(), [""] * n,
                            VISIBILITIES[self.video_visibility[start:end]].tolist()))
        return _Rows(self.n_videos, rows)

    @property
    def events(self) -> _Rows:
        """(kind, user id, video id, creator id) per interaction in time order, made on access."""
        def rows(start, end):
            v = self.ev_video[start:end]
            return list(zip(KINDS[self.ev_kind[start:end]].tolist(), self.user_ids[self.ev_user[start:end]].tolist(),
                            self.video_ids[v].tolist(), self.user_ids[self.video_owner[v]].tolist()))
        return _Rows(self.n_events, rows)

    @property
    def public_ids(self) -> list[str]:
        return self.video_ids[self.public].tolist()

    def collab_triples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user ids, video ids, weights) of the interactions for the collaborative model."""
        per_kind = np.array([COLLAB_WEIGHTS[k] for k in KINDS], dtype=np.float32)
        w = per_kind[self.ev_kind] * np.where(self.ev_completed, 2.0, 1.0).astype(np.float32)
        return self.user_ids[self.ev_user], self.video_ids[self.ev_video], w

    # -- rows for the loaders, one chunk at a time -----------------------------------------

    def _captions(self, start: int, end: int) -> tuple[list[str], list[tuple[int, int]]]:
        rng = self._rng("captions", start // CHUNK)
        k = end - start
        n_words = rng.integers(4, 13, k)
        words = self.words[_draw(rng, self.word_cdf, int(n_words.sum()))]
        n_tags = rng.integers(0, 4, k)
        tags = _draw(rng, self.tag_cdf, int(n_tags.sum()))
        captions, links = [], []
        w0 = t0 = 0
        for i in range(k):
            chosen = list(dict.fromkeys(tags[t0:t0 + n_tags[i]].tolist()))
            t0 += n_tags[i]
            captions.append(" ".join(words[w0:w0 + n_words[i]]) + "".join(f" #{self.tags[t]}" for t in chosen))
            w0 += n_words[i]
            links.extend((start + i, t + 1) for t in chosen)  # hashtag ids are 1-based
        return captions, links

    def video_chunks(self, sep: str = " ") -> Iterator[tuple[list[tuple], list[tuple]]]:
        """(video rows, (video id, hashtag id) rows) per chunk. A video row: id, owner, status,
        caption, visibility, sound id, artifacts JSON, published (text), views, likes, comments,
        shares, completions, skips."""
        for start in range(0, self.n_videos, CHUNK):
            end = min(self.n_videos, start + CHUNK)
            captions, links = self._captions(start, end)
            stamps = _timestamps(self.now_us, self.video_age_s[start:end], sep)
            ids = self.video_ids[start:end].tolist()
            owners = self.user_ids[self.video_owner[start:end]].tolist()
            sound = self.video_sound[start:end]
            sound_ids = [self.sound_ids[s] if s >= 0 else None for s in sound.tolist()]
            original = self.video_original_sound[start:end].tolist()
            likes = self.video_likes[start:end]
            completions = self.video_completions[start:end]
            rows = [(vid, owner, "ready" if ready else "processing", caption, VISIBILITIES[vis], sid,
                     f'{{"sound_id": "{self.sound_ids[o]}"}}' if o >= 0 else "{}", stamp, views, lk,
                     int(lk * 0.1), int(lk * 0.05), done, int(views * SKIP_SHARE))
                    for vid, owner, ready, caption, vis, sid, o, stamp, views, lk, done in zip(
                        ids, owners, self.video_ready[start:end].tolist(), captions,
                        self.video_visibility[start:end].tolist(), sound_ids, original, stamps,
                        self.video_views[start:end].tolist(), likes.tolist(), completions.tolist())]
            yield rows, [(ids[v - start], t) for v, t in links]

    def event_chunks(self, sep: str = " ") -> Iterator[list[tuple]]:
        """interaction_events rows: kind, user, video, creator, watch_ms, completed, replay,
        region, viewer_key, created_at (text)."""
        regions = np.array(REGIONS + [None], dtype=object)
        for start in range(0, self.n_events, CHUNK):
            end = min(self.n_events, start + CHUNK)
            u, v = self.ev_user[start:end], self.ev_video[start:end]
            yield list(zip(KINDS[self.ev_kind[start:end]].tolist(), self.user_ids[u].tolist(),
                           self.video_ids[v].tolist(), self.user_ids[self.video_owner[v]].tolist(),
                           self.ev_watch[start:end].tolist(), self.ev_completed[start:end].tolist(),
                           [False] * (end - start), regions[self.user_region[u]].tolist(), [None] * (end - start),
                           _timestamps(self.now_us, self.ev_age_s[start:end], sep)))

    def follow_chunks(self, sep: str = " ") -> Iterator[list[tuple]]:
        for start in range(0, len(self.follow_src), CHUNK):
            end = min(len(self.follow_src), start + CHUNK)
            yield list(zip(self.user_ids[self.follow_src[start:end]].tolist(),
                           self.user_ids[self.follow_dst[start:end]].tolist(),
                           _timestamps(self.now_us, self.follow_age_s[start:end], sep)))

    def user_rows(self, sep: str = " ") -> list[tuple]:
        """id, handle, display name, region, created_at (text), follower and following counts."""
        followers = np.bincount(self.follow_dst, minlength=self.n_users)
        following = np.bincount(self.follow_src, minlength=self.n_users)
        return [(uid, h, d, REGIONS[r] if r >= 0 else None, t, a, b)
                for uid, h, d, r, t, a, b in zip(self.user_ids.tolist(), self.handles, self.display_names,
                                                 self.user_region.tolist(),
                                                 _timestamps(self.now_us, self.user_age_s, sep),
                                                 followers.tolist(), following.tolist())]

    def sound_rows(self, sep: str = " ") -> list[tuple]:
        """id, owner, source video, title, created_at (text)."""
        v = self.sound_video
        return list(zip(self.sound_ids.tolist(), self.user_ids[self.video_owner[v]].tolist(),
                        self.video_ids[v].tolist(), self.sound_titles,
                        _timestamps(self.now_us, self.video_age_s[v], sep)))


class _Rows(Sequence):
    """A read-only sequence whose rows are made on access, a block at a time."""

    def __init__(self, n: int, rows):
        self._n, self._rows = n, rows

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            return self._rows(start, max(start, stop))[::step] if step > 0 else [self[j] for j in range(start, stop, step)]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._rows(i, i + 1)[0]

    def __iter__(self):
        for start in range(0, self._n, CHUNK):
            yield from self._rows(start, min(self._n, start + CHUNK))


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------

VIDEO_COLUMNS = ("id, owner_id, status, progress, caption, visibility, sound_id, original_filename, source_bytes,"
                 " features, renditions, artifacts, attempts, created_at, updated_at, published_at, view_count,"
                 " like_count, comment_count, share_count, comments_enabled, duration_ms, width, height, completion_count,"
                 " skip_count")
HASHTAG_COUNTS = ("UPDATE hashtags SET video_count = (SELECT count(*) FROM video_hashtags vh"
                  " WHERE vh.hashtag_id = hashtags.id)")
EVENT_COLUMNS = ["kind", "user_id", "video_id", "creator_id", "watch_ms", "completed", "replay", "region",
                 "viewer_key", "created_at"]


def _log(timings: dict, name: str, started: float) -> float:
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + now - started
    return now


def load_sqlite(path: str, data: FeedDataset) -> dict[str, float]:
    """Bulk-load into the migrated SQLite database at `path`; returns seconds per step."""
    timings: dict[str, float] = {}
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=OFF")   # a scratch bench database: no rollback journal,
        con.execute("PRAGMA synchronous=OFF")    # no fsync while loading
        con.execute("PRAGMA foreign_keys=OFF")   # bulk order: tags and sounds before their videos
        con.execute("PRAGMA cache_size=-262144")  # 256 MB
        con.execute("PRAGMA temp_store=MEMORY")
        marks = ",".join("?" * len(BIG_TABLES))
        indexes = con.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                              f" AND tbl_name IN ({marks})", BIG_TABLES).fetchall()
        for name, _sql in indexes:
            con.execute(f'DROP INDEX "{name}"')
        t = time.perf_counter()
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO users (id, handle, display_name, password_hash, bio, region, role, created_at,"
            " follower_count, following_count, video_count) VALUES (?, ?, ?, '!', '', ?, 'user', ?, ?, ?, 0)",
            data.user_rows())
        con.executemany("INSERT INTO sounds (id, owner_id, source_video_id, title, duration_ms, blob_key, use_count,"
                        " created_at) VALUES (?, ?, ?, ?, 15000, '', 0, ?)", data.sound_rows())
        stamp = _timestamps(data.now_us, np.zeros(1))[0]
        con.executemany("INSERT INTO hashtags (id, tag, video_count, created_at) VALUES (?, ?, 0, ?)",
                        [(i + 1, tag, stamp) for i, tag in enumerate(data.tags)])
        t = _log(timings, "users, sounds, hashtags", t)
        for rows, links in data.video_chunks():
            # Hashtag links first: the search trigger on videos reads them.
            con.executemany("INSERT INTO video_hashtags (video_id, hashtag_id) VALUES (?, ?)", links)
            con.executemany(
                f"INSERT INTO videos ({VIDEO_COLUMNS}) VALUES (?, ?, ?, 100, ?, ?, ?, '', 0, '{{}}', '[]', ?, 0,"
                f" ?8, ?8, CASE WHEN ?3 = 'ready' THEN ?8 END, ?, ?, ?, ?, 1, 15000, 720, 1280, ?, ?)", rows)
        t = _log(timings, "videos (+ search triggers)", t)
        for rows in data.follow_chunks():
            con.executemany("INSERT INTO follows (follower_id, followee_id, created_at) VALUES (?, ?, ?)", rows)
        t = _log(timings, "follows", t)
        for rows in data.event_chunks():
            con.executemany(f"INSERT INTO interaction_events ({', '.join(EVENT_COLUMNS)})"
                            f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute(HASHTAG_COUNTS)
        con.execute("COMMIT")
        t = _log(timings, "interaction_events", t)
        for _name, sql in indexes:
            con.execute(sql)
        t = _log(timings, "indexes", t)
        con.execute("ANALYZE")
        con.execute("INSERT INTO search_videos_fts(search_videos_fts) VALUES ('optimize')")
        con.execute("INSERT INTO search_users_fts(search_users_fts) VALUES ('optimize')")
        con.execute("PRAGMA journal_mode=WAL")  # what the application runs with
        _log(timings, "analyze", t)
    finally:
        con.close()
    return timings


def _csv(rows: Sequence[tuple]) -> bytes:
    """CSV for COPY: None and '' are both an empty field, read as NULL except in the columns the
    COPY names in FORCE_NOT_NULL."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


async def load_postgres(dsn: str, data: FeedDataset, schema: str | None = None, *,
                        search_docs: bool = True) -> dict[str, float]:
    """Bulk-load with COPY into the migrated PostgreSQL database `dsn` (asyncpg DSN).
    `search_docs=False` leaves the videos' search documents unbuilt (the For You feed does not
    read them; at 1M videos they are most of the load's time)."""
    import asyncpg

    timings: dict[str, float] = {}
    con = await asyncpg.connect(dsn, server_settings={"search_path": schema} if schema else None)
    try:
        await con.execute("SET maintenance_work_mem = '1GB'")
        await con.execute("SET synchronous_commit = off")
        indexes = await con.fetch(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema()"
            " AND i.tablename = ANY($1::text[]) AND NOT EXISTS (SELECT 1 FROM pg_constraint c"
            " WHERE c.conname = i.indexname AND c.connamespace = current_schema()::regnamespace)",
            [*BIG_TABLES, "search_video_docs"])

        async def copy(table: str, columns: list[str], rows: Sequence[tuple], not_null: Sequence[str] = ()) -> None:
            if rows:
                await con.copy_to_table(table, source=io.BytesIO(_csv(rows)), columns=columns, format="csv",
                                        force_not_null=list(not_null) or None)

        t = time.perf_counter()
        async with con.transaction():
            for row in indexes:
                await con.execute(f'DROP INDEX "{row["indexname"]}"')
            await copy("users", ["id", "handle", "display_name", "password_hash", "bio", "region", "role",
                                 "created_at", "follower_count", "following_count", "video_count"],
                       [(u[0], u[1], u[2], "!", "", u[3], "user", u[4] + "+00", u[5], u[6], 0)
                        for u in data.user_rows()], not_null=["bio"])
            sounds = data.sound_rows()
            await copy("sounds", ["id", "owner_id", "title", "duration_ms", "blob_key", "use_count", "created_at"],
                       [(s[0], s[1], s[3], 15000, "", 0, s[4] + "+00") for s in sounds], not_null=["blob_key"])
            stamp = _timestamps(data.now_us, np.zeros(1))[0] + "+00"
            await copy("hashtags", ["id", "tag", "video_count", "created_at"],
                       [(i + 1, tag, 0, stamp) for i, tag in enumerate(data.tags)])
            await con.execute("SELECT setval(pg_get_serial_sequence('hashtags', 'id'), $1)", len(data.tags) + 1)
            t = _log(timings, "users, sounds, hashtags", t)
            # Generated rows are consistent by construction: no foreign-key checks or per-row
            # triggers while copying; the videos' search documents are built once at the end by the
            # database's own function (one call per video instead of one per video and per tag).
            await con.execute("SET session_replication_role = replica")
            for rows, links in data.video_chunks():
                await copy("videos", [c.strip() for c in VIDEO_COLUMNS.split(",")],
                           [(v[0], v[1], v[2], 100.0, v[3], v[4], v[5], "", 0, "{}", "[]", v[6], 0, v[7] + "+00",
                             v[7] + "+00", v[7] + "+00" if v[2] == "ready" else None, v[8], v[9], v[10], v[11],
                             True, 15000, 720, 1280, v[12], v[13]) for v in rows], not_null=["original_filename"])
                await copy("video_hashtags", ["video_id", "hashtag_id"], links)
            # Sounds point at their source videos once those exist (foreign key).
            await con.execute("CREATE TEMP TABLE bench_sound_src (id varchar(16), video_id varchar(16)) ON COMMIT DROP")
            await copy("bench_sound_src", ["id", "video_id"], [(s[0], s[2]) for s in sounds])
            await con.execute("UPDATE sounds SET source_video_id = b.video_id FROM bench_sound_src b WHERE b.id = sounds.id")
            await con.execute(HASHTAG_COUNTS)
            t = _log(timings, "videos", t)
            for rows in data.follow_chunks():
                await copy("follows", ["follower_id", "followee_id", "created_at"],
                           [(a, b, c + "+00") for a, b, c in rows])
            t = _log(timings, "follows", t)
            for rows in data.event_chunks():
                await copy("interaction_events", EVENT_COLUMNS, [r[:9] + (r[9] + "+00",) for r in rows])
            await con.execute("SET session_replication_role = origin")
            t = _log(timings, "interaction_events", t)
            if search_docs:
                await con.execute("SELECT count(search_refresh_video(id)) FROM videos"
                                  " WHERE status = 'ready' AND visibility = 'public'")
                t = _log(timings, "video search documents", t)
            for row in indexes:
                await con.execute(row["indexdef"])
            t = _log(timings, "indexes", t)
        await con.execute("VACUUM ANALYZE")
        _log(timings, "analyze", t)
    finally:
        await con.close()
    return timings
