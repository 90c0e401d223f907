"""Account housekeeping jobs."""

from __future__ import annotations

from clipfeed.config import Settings
from clipfeed.jobs import periodic, run_async


@periodic("accounts.purge_login_attempts", minute="7", hour="*")
def purge_login_attempts(settings: Settings) -> None:
    from clipfeed.accounts import service
    from clipfeed.db import Database

    async def run() -> None:
        db = Database(settings, pooled=False)
        try:
            async with db.transaction() as session:
                await service.purge_old_login_attempts(session, settings)
        finally:
            await db.dispose()

    run_async(run)
