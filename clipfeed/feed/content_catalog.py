"""The content index the For You feed serves from: what the newest videos say (caption, hashtags)
and how they look and sound (the media vectors the upload pipeline stores), read from the
database for the catalog's videos. `clipfeed train` reads the same inputs for its own index
(training.py), so the ranker learns the content similarity it is served.

The catalog snapshot keeps neither captions nor media vectors (a million videos' captions would
be most of its memory): they are read here once per catalog snapshot, for the newest
`feed_content_index_max` videos only.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import text

from clipfeed.feed.recsys.content import ContentIndex, TextVectorCache, served_index

READ_CHUNK = 500  # ids per IN (...) list: SQLite's default variable limit is far above, PostgreSQL's plans stay cheap


def newest_ids(catalog, limit: int) -> list[str]:
    """The catalog's `limit` newest videos, newest first."""
    metas = sorted(catalog.videos.values(), key=lambda m: -m.published_at)[:limit]
    return [m.video_id for m in metas]


def media_rows(found: dict[str, tuple[int, bytes]], video_ids: list[str]) -> np.ndarray:
    """[len(video_ids), len(FEATURE_NAMES)] float32 from stored (names_version, vector) pairs: a
    NaN row where a video has none, or one of another names version (its features meant other
    things), or one that is not finite."""
    from clipfeed.media.content_features import FEATURE_NAMES, NAMES_VERSION

    out = np.full((len(video_ids), len(FEATURE_NAMES)), np.nan, dtype=np.float32)
    for row, video_id in enumerate(video_ids):
        stored = found.get(video_id)
        if stored is None or stored[0] != NAMES_VERSION:
            continue
        vector = np.frombuffer(stored[1], dtype="<f4")
        if vector.shape[0] == len(FEATURE_NAMES) and np.isfinite(vector).all():
            out[row] = vector
    return out


async def read_content_inputs(conn, video_ids: list[str]) -> tuple[dict[str, str], np.ndarray]:
    """(caption by video id, media rows in `video_ids` order) — `conn` an AsyncSession or an
    AsyncConnection (the training job reads on a connection of its own)."""
    captions: dict[str, str] = {}
    stored: dict[str, tuple[int, bytes]] = {}
    for start in range(0, len(video_ids), READ_CHUNK):
        chunk = video_ids[start:start + READ_CHUNK]
        marks = ", ".join(f":v{i}" for i in range(len(chunk)))
        params = {f"v{i}": v for i, v in enumerate(chunk)}
        for video_id, caption in (await conn.execute(
                text(f"SELECT id, caption FROM videos WHERE id IN ({marks})"), params)).all():
            captions[video_id] = caption or ""
        for video_id, version, vector in (await conn.execute(text(
                f"SELECT video_id, names_version, vector FROM video_content_features WHERE video_id IN ({marks})"),
                params)).all():
            stored[video_id] = (version, bytes(vector))
    return captions, media_rows(stored, video_ids)


def build_content(video_ids: list[str], captions: dict[str, str], hashtags: list, media: np.ndarray,
                  text_cache: TextVectorCache | None = None) -> ContentIndex | None:
    """The served index with its ANN structure built now (seconds at 50k videos: the caller runs
    this in a thread, not lazily in the first ranking on the event loop). `text_cache`: the
    previous build's text vectors, reused where a video's text is unchanged."""
    index = served_index(video_ids, [captions.get(v, "") for v in video_ids], hashtags, media, text_cache)
    return index.prepare() if index is not None else None


async def read_served_content(session, catalog, limit: int) -> tuple[list[str], dict[str, str], list, np.ndarray]:
    """What `build_content` needs for the catalog's newest `limit` videos."""
    ids = newest_ids(catalog, limit)
    captions, media = await read_content_inputs(session, ids)
    return ids, captions, [catalog.videos[v].hashtags for v in ids], media
