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
