"""Search jobs: pruning the PostgreSQL typo vocabulary of words no document contains any more."""

from __future__ import annotations

import logging

from clipfeed.config import Settings
from clipfeed.jobs import periodic, run_async

log = logging.getLogger("clipfeed.search.tasks")


# Safe to run twice: it only deletes vocabulary words absent from every document. SQLite needs
# nothing (its fts5vocab view is always exact).
@periodic("search.prune_terms", hour="4", minute="17")
def prune_terms(settings: Settings) -> None:
    if settings.is_sqlite:
        return
    from clipfeed.search.service import prune_terms as prune

    removed = run_async(prune, settings)
    if removed:
        log.info("pruned %s stale search terms", removed)
