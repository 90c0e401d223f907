"""Recompute the content-feature vectors of videos processed earlier: those processed before the
features existed, and every video once a release bumps `NAMES_VERSION` (readers skip a vector of
another version, so until it is recomputed the video is placed by its caption alone).

Measured as the processing job measures it (`pipeline.Processor._content_features`): the lowest
published rung joined into one file, the job's timeout, its audio decision, so a refreshed vector
is the one re-processing the video would store. Only the segments of that rung's first
`ANALYSE_MAX_S` seconds are fetched from the blob store, into a private scratch folder; no
transaction is open while ffmpeg runs.

A video that fails is tried again later, not at every run: its next attempt waits
`retry_delay(attempts)` (1 h, doubling, at most a week), so one broken video neither fills the
log every 10 minutes nor takes a slot of each periodic run. `retry_failed` ignores the wait.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, func, or_, select

from clipfeed.config import Settings
from clipfeed.db import Database
from clipfeed.db.base import utcnow
from clipfeed.media import keys
from clipfeed.media.content_features import NAMES_VERSION, extract_content_features
from clipfeed.media.ladder import RUNG_INIT, RUNG_PLAYLIST
from clipfeed.media.models import Video, VideoContentFeatureFailure, VideoContentFeatures, VideoStatus
from clipfeed.media.pipeline import (VideoGone, join_rung, limits_for, load_for_update, rung_segments,
                                     store_content_features)
from clipfeed.storage import BlobStore

log = logging.getLogger("clipfeed.media.feature_refresh")

PAGE = 200  # candidate ids per query
FIRST_RETRY = timedelta(hours=1)
LONGEST_RETRY = timedelta(days=7)


def retry_delay(attempts: int) -> timedelta:
    """How long a video waits after its `attempts`-th failed refresh: 1 h, 2 h, 4 h, ... a week."""
    return min(FIRST_RETRY * 2 ** min(max(attempts - 1, 0), 16), LONGEST_RETRY)


class Outcome:
    REFRESHED = "refreshed"
    FAILED = "failed"    # logged; the video keeps its stale vector (or none); retried after `retry_delay`
    SKIPPED = "skipped"  # deleted, or no longer ready, before its turn came: nothing to measure


@dataclass
class RefreshReport:
    refreshed: int = 0
    failed: int = 0
    skipped: int = 0
    waiting: int = 0  # stale videos left for later: their last attempt failed and their retry is not due
    elapsed_s: float = 0.0


class _Skip(Exception):
    """This video is no longer one to refresh."""


def _stale_videos():
    # Finished videos only: a ready video whose higher rungs are still encoding gets its vector
    # when its job finishes, in the current version.
    return (select(Video.id, Video.created_at)
            .outerjoin(VideoContentFeatures, VideoContentFeatures.video_id == Video.id)
            .outerjoin(VideoContentFeatureFailure, VideoContentFeatureFailure.video_id == Video.id)
            .where(Video.status == VideoStatus.READY, Video.progress >= 100,
                   or_(VideoContentFeatures.video_id.is_(None), VideoContentFeatures.names_version != NAMES_VERSION)))


def _retry_due(now: datetime):
    """No failure of this release's features waits: never failed, failed under another
    NAMES_VERSION (the new release may measure it), or the wait is over."""
    return or_(VideoContentFeatureFailure.video_id.is_(None),
               VideoContentFeatureFailure.names_version != NAMES_VERSION,
               VideoContentFeatureFailure.retry_at <= now)


def _refreshable(retry_failed: bool, now: datetime):
    return _stale_videos() if retry_failed else _stale_videos().where(_retry_due(now))


async def count_stale_videos(db: Database, *, retry_failed: bool = False) -> int:
    """How many ready videos lack a content-feature vector of the current NAMES_VERSION and would
    be refreshed now (with `retry_failed`, also those waiting for a retry)."""
    async with db.read() as session:
        return await session.scalar(select(func.count()).select_from(_refreshable(retry_failed, utcnow()).subquery()))


async def count_waiting_videos(db: Database) -> int:
    """How many stale videos wait for the retry of a failed refresh."""
    async with db.read() as session:
        return await session.scalar(select(func.count()).select_from(
            _stale_videos().where(~_retry_due(utcnow())).subquery()))


async def _stale_video_ids(db: Database, limit: int | None, retry_failed: bool) -> AsyncIterator[str]:
    """Newest first: the For You content index covers the newest videos (`content_catalog.newest_ids`),
    so a run cut short by `limit` restores the vectors that are served first. Keyset pages, each
    read in a short session: a video that fails stays stale, and the cursor moves past it."""
    last = None
    remaining = limit
    now = utcnow()  # one instant for the run: a failure recorded during it is not retried in it
    while remaining is None or remaining > 0:
        query = _refreshable(retry_failed, now)
        if last is not None:
            query = query.where(or_(Video.created_at < last.created_at,
                                    and_(Video.created_at == last.created_at, Video.id < last.id)))
        size = PAGE if remaining is None else min(PAGE, remaining)
        async with db.read() as session:
            rows = (await session.execute(query.order_by(Video.created_at.desc(), Video.id.desc()).limit(size))).all()
        for row in rows:
            yield row.id
        if len(rows) < size:
            return
        last = rows[-1]
        if remaining is not None:
            remaining -= len(rows)


async def refresh_content_features(settings: Settings, db: Database, store: BlobStore, *, limit: int | None = None,
                                   retry_failed: bool = False,
                                   on_video: Callable[[str, str, str | None], None] | None = None) -> RefreshReport:
    """Recompute the vector of each ready video that lacks one of the current NAMES_VERSION (at
    most `limit`, newest first), one video at a time. A video's failure is logged, counted and
    recorded for a later retry (`retry_delay`), never the end of the run; videos still waiting
    for theirs are left out unless `retry_failed`. `on_video(video_id, outcome, reason)` hears
    of each (`Outcome`)."""
    started = time.monotonic()
    report = RefreshReport()
    scratch = settings.resolved_data_dir / "work"
    scratch.mkdir(parents=True, exist_ok=True)
    async for video_id in _stale_video_ids(db, limit, retry_failed):
        reason = None
        try:
            await _refresh(settings, db, store, video_id, scratch)
            outcome = Outcome.REFRESHED
        except _Skip as exc:
            outcome, reason = Outcome.SKIPPED, str(exc)
        except Exception as exc:  # noqa: BLE001 - one video's failure never ends the run
            log.warning("video %s: content features not refreshed", video_id, exc_info=True)
            outcome, reason = Outcome.FAILED, f"{type(exc).__name__}: {exc}"
            await _record_failure(db, video_id, reason)
        setattr(report, outcome, getattr(report, outcome) + 1)
        if on_video is not None:
            on_video(video_id, outcome, reason)
    if not retry_failed:
        report.waiting = await count_waiting_videos(db)
    report.elapsed_s = time.monotonic() - started
    return report


async def _record_failure(db: Database, video_id: str, reason: str) -> None:
    """Push this video's next attempt back (`retry_delay`). Best effort: if even this write
    fails, the video is simply tried again at the next run, as before the table existed."""
    try:
        async with db.transaction() as session:
            if await session.get(Video, video_id) is None:
                return  # deleted meanwhile: nothing will be retried
            failure = await session.get(VideoContentFeatureFailure, video_id, with_for_update=True)
            if failure is None:
                failure = VideoContentFeatureFailure(video_id=video_id, attempts=0)
                session.add(failure)
            elif failure.names_version != NAMES_VERSION:
                failure.attempts = 0  # a new release's first failure waits as long as any first one
            failure.names_version = NAMES_VERSION
            failure.attempts += 1
            failure.last_error = reason[:500]
            failure.failed_at = utcnow()
            failure.retry_at = failure.failed_at + retry_delay(failure.attempts)
    except Exception:  # noqa: BLE001 - bookkeeping never ends the run
        log.warning("video %s: its failed refresh was not recorded", video_id, exc_info=True)


async def _refresh(settings: Settings, db: Database, store: BlobStore, video_id: str, scratch: Path) -> None:
    async with db.read() as session:
        video = await session.get(Video, video_id)
    if video is None:
        raise _Skip("deleted")
    if video.status != VideoStatus.READY:
        raise _Skip(f"now {video.status}")
    if not video.renditions:
        raise ValueError("no published rung")
    lowest = min(video.renditions, key=lambda rendition: rendition["width"] * rendition["height"])
    duration_s = (video.duration_ms or 0) / 1000  # 0 (unknown): the features analyse up to ANALYSE_MAX_S
    # mkdtemp: a folder of our own (mode 0700), gone with whatever ffmpeg left in it.
    with tempfile.TemporaryDirectory(prefix=f"features-{video_id}-", dir=scratch) as workdir:
        rung_dir = await _fetch_rung(store, video_id, lowest["name"], Path(workdir) / "rung")
        clip = await asyncio.to_thread(join_rung, rung_dir, Path(workdir) / "content_input.mp4")
        # has_audio as the job decided it (the source's audio, or a reused sound) and saved it.
        content = await asyncio.to_thread(
            extract_content_features, clip, Path(workdir), duration_s=duration_s, has_audio=bool(video.has_audio),
            timeout_s=limits_for(settings, video.origin).timeout_s(settings, duration_s), ffmpeg=settings.ffmpeg_path)
    try:
        async with db.transaction() as session:
            await store_content_features(session, await load_for_update(session, video_id), content)
    except VideoGone:
        raise _Skip("deleted meanwhile") from None


async def _fetch_rung(store: BlobStore, video_id: str, rung: str, rung_dir: Path) -> Path:
    """A local copy of the part of a published rung that `join_rung` reads."""
    rung_dir.mkdir()
    playlist = await store.read_all(keys.hls_key(video_id, f"{rung}/{RUNG_PLAYLIST}"))
    (rung_dir / RUNG_PLAYLIST).write_bytes(playlist)
    for name in [RUNG_INIT, *rung_segments(playlist.decode())]:
        if Path(name).name != name or name.startswith("."):  # names come from a playlist: stay in the folder
            raise ValueError(f"unexpected segment name {name!r}")
        with open(rung_dir / name, "wb") as part:
            async for chunk in store.read(keys.hls_key(video_id, f"{rung}/{name}")):
                part.write(chunk)
    return rung_dir
