"""WAL checkpoints for a serving SQLite database, off the requests' path.

SQLite's default moves the WAL back into the database file inside whichever commit finds it
over 1000 pages (~4 MB): that commit then writes and syncs megabytes before it returns. At 1M
videos those were the slowest pages beside a background re-rank (commits of 20-23 ms while the
page around them took 25-32 ms). Here one thread per serving process runs a PASSIVE checkpoint
every ``INTERVAL_S``: it never takes a lock a writer waits for, it copies what no reader still
needs, and the commits' own automatic checkpoint stays only as a backstop (``BACKSTOP_PAGES``)
should the thread fall far behind.

The same thread keeps SQLite's planner statistics current (``statistics.py``): it checks every
``STATISTICS_INTERVAL_S``, the first time at its first pass.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time

from clipfeed.db.statistics import refresh_statistics

log = logging.getLogger(__name__)

INTERVAL_S = 0.5
# The commits' automatic checkpoint, kept as a backstop: ~40 MB of WAL at 4 KB pages.
BACKSTOP_PAGES = 10_000
_ANOTHER_CHECKPOINT = ("locked", "busy")  # another process's checkpointer is running: skip a turn
STATISTICS_INTERVAL_S = 300.0
# ANALYZE writes: it may wait this long for a request's write transaction, never for long.
STATISTICS_BUSY_MS = 2000


class WalCheckpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection every ``interval_s``."""

    def __init__(self, path: str, interval_s: float = INTERVAL_S,
                 statistics_interval_s: float = STATISTICS_INTERVAL_S):
        self.path = path
        self.interval_s = interval_s
        self.statistics_interval_s = statistics_interval_s
        # The last pass's (busy, WAL frames, frames checkpointed), as SQLite reports them.
        self.last: tuple[int, int, int] | None = None
        self.analyzed: list[str] = []  # the tables whose statistics this thread took, in order
        self._statistics_due = 0.0
        self._passes = 0
        self._pass_done = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clipfeed-wal-checkpoint", daemon=True)
        self._thread.start()

    def wait_for_pass(self, timeout: float = 10.0) -> bool:
        """Wait until a pass that started after this call has finished (False on timeout)."""
        with self._pass_done:
            # The pass running now may have started before the caller's last commit.
            target = self._passes + 2
            return self._pass_done.wait_for(lambda: self._passes >= target or self._stopping.is_set(), timeout)

    def stop(self) -> None:
        self._stopping.set()
        with self._pass_done:
            self._pass_done.notify_all()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        reported = False
        try:
            while not self._stopping.is_set():
                try:
                    if connection is None and os.path.exists(self.path):  # never create the file
                        connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
                    if connection is not None:
                        self.last = tuple(connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
                        if time.monotonic() >= self._statistics_due:
                            self._statistics_due = time.monotonic() + self.statistics_interval_s
                            self._refresh_statistics(connection)
                except sqlite3.Error as exc:
                    if not any(word in str(exc).lower() for word in _ANOTHER_CHECKPOINT) and not reported:
                        # Once: the commits' backstop still bounds the WAL, so serving goes on.
                        log.warning("WAL checkpoint of %s failed (commits will checkpoint instead): %s",
                                    self.path, exc)
                        reported = True
                with self._pass_done:
                    self._passes += 1
                    self._pass_done.notify_all()
                self._stopping.wait(self.interval_s)
        finally:
            if connection is not None:
                connection.close()

    def _refresh_statistics(self, connection: sqlite3.Connection) -> None:
        connection.execute(f"PRAGMA busy_timeout = {STATISTICS_BUSY_MS}")
        try:
            tables = refresh_statistics(connection)
        except sqlite3.Error as exc:  # e.g. writers kept the lock: the next turn tries again
            log.info("planner statistics of %s not refreshed: %s", self.path, exc)
            return
        finally:
            connection.execute("PRAGMA busy_timeout = 0")
        if tables:
            self.analyzed += tables
            log.info("planner statistics of %s refreshed: %s", self.path, ", ".join(tables))
