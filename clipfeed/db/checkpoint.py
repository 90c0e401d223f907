"""WAL checkpoints for a serving SQLite database, off the requests' path.

SQLite's default moves the WAL back into the database file inside whichever commit finds it
over 1000 pages (~4 MB): that commit then writes and syncs megabytes before it returns. At 1M
videos those were the slowest pages beside a background re-rank (commits of 20-23 ms while the
page around them took 25-32 ms). Here one thread per serving process runs a PASSIVE checkpoint
every ``INTERVAL_S``: it never takes a lock a writer waits for, it copies what no reader still
needs, and the commits' own automatic checkpoint stays only as a backstop (``BACKSTOP_PAGES``)
should the thread fall far behind.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

log = logging.getLogger(__name__)

INTERVAL_S = 0.5
# The commits' automatic checkpoint, kept as a backstop: ~40 MB of WAL at 4 KB pages.
BACKSTOP_PAGES = 10_000
_ANOTHER_CHECKPOINT = ("locked", "busy")  # another process's checkpointer is running: skip a turn


class WalCheckpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection every ``interval_s``."""

    def __init__(self, path: str, interval_s: float = INTERVAL_S):
        self.path = path
        self.interval_s = interval_s
        # The last pass's (busy, WAL frames, frames checkpointed), as SQLite reports them.
        self.last: tuple[int, int, int] | None = None
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
