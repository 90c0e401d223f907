"""Media jobs: thin wrappers that call the pipeline and upload services."""

from __future__ import annotations

import logging

from clipfeed.config import Settings
from clipfeed.jobs import job, periodic, run_async, sweeper

log = logging.getLogger("clipfeed.media.tasks")


@job("media.process_video", retries=2, retry_delay=2, priority=10, time_limit_s=900)
def process_video(settings: Settings, video_id: str) -> None:
    # time_limit_s documents an upload's budget (ffmpeg_timeout_s); a live replay may take up to
    # live_replay_timeout_factor x its duration (pipeline.limits_for).
    # Idempotent: claims the video first; a finished or already-claimed video is a no-op.
    from clipfeed.media import pipeline

    run_async(pipeline.process_video, settings, video_id)


@sweeper("media.recover_stale", every_s=lambda settings: max(1.0, settings.job_lease_seconds / 2))
def recover_stale(settings: Settings, queue) -> None:
    from clipfeed.media import pipeline

    for video_id in run_async(pipeline.recover_stale, settings):
        log.warning("re-enqueueing %s: its worker stopped heart-beating", video_id)
        queue.enqueue("media.process_video", video_id)


@periodic("media.refresh_content_features", minute="*/10")
def refresh_content_features(settings: Settings) -> None:
    """After an upgrade that changes the content features, every video's vector is stale: the
    worker measures them again a few at a time (newest first, which the feed serves first), so
    nobody has to remember `clipfeed features refresh`. A handful per run keeps the CPU for uploads;
    a video that fails waits longer before each retry, so it is not logged every run."""
    if settings.content_features_refresh_per_run <= 0:
        return
    from clipfeed.db import Database
    from clipfeed.media.feature_refresh import refresh_content_features as refresh
    from clipfeed.storage import build_store

    async def run():
        db = Database(settings, pooled=False)
        try:
            return await refresh(settings, db, build_store(settings), limit=settings.content_features_refresh_per_run)
        finally:
            await db.dispose()

    report = run_async(run)
    if report.refreshed or report.failed:
        log.info("content features: refreshed %s, failed %s, skipped %s in %.1f s", report.refreshed, report.failed,
                 report.skipped, report.elapsed_s)


@periodic("uploads.cleanup_expired", minute="*/15")
def cleanup_expired_uploads(settings: Settings) -> None:
    from clipfeed.db import Database
    from clipfeed.media.uploads import cleanup_expired_uploads as cleanup
    from clipfeed.storage import build_store

    async def run() -> int:
        db = Database(settings, pooled=False)
        try:
            return await cleanup(db, build_store(settings))
        finally:
            await db.dispose()

    removed = run_async(run)
    if removed:
        log.info("removed %s expired uploads", removed)
