"""Feed jobs: the periodic trending recomputation."""

from __future__ import annotations

import logging

from clipfeed.config import Settings
from clipfeed.jobs import periodic

log = logging.getLogger("clipfeed.feed.tasks")


# Reads one snapshot of the last 7 days of events and replaces the trending_entries rows in one
# transaction, so running it twice (or overlapping runs) is harmless. Budget: 10 s at 2M events.
@periodic("trending.recompute", minute="*/5")
def recompute_trending(settings: Settings) -> None:
    from clipfeed.feed import trending

    result = trending.recompute(settings)
    log.info("trending recomputed in %.2fs: %s over %s regions", result.seconds, result.entries, result.regions)


# Runs every 15 minutes but trains only when the newest published model is older than
# CLIPFEED_FEED_TRAINING_PERIOD_MINUTES (crontab schedules are fixed at import; the period is a
# setting). Safe to run twice: each run publishes a new version, served only if it is better.
@periodic("feed.train_models", minute="*/15")
def train_feed_models(settings: Settings) -> None:
    from clipfeed.feed.training import TrainingSkipped, train_and_publish
    from clipfeed.jobs import run_async

    try:
        report = run_async(train_and_publish, settings, False)
    except TrainingSkipped as exc:
        log.info("feed models not trained: %s", exc)
        return
    log.info("feed models trained in %.1fs: %s", report.seconds, report.published)
