"""SQLite's planner statistics, kept current on a serving database.

SQLite chooses indexes from ``sqlite_stat1``, which only ``ANALYZE`` writes. Without it every
index on a column is guessed to be selective: a database that grew from the demo content without
ever being analyzed answered a For You page's ``id IN (...) AND status = 'ready'`` by walking
every ready video through the status index instead of looking the 20 ids up (measured: 2 s per
page at 1M videos; 8 ms at 50k, 0.09 ms once analyzed). A table is analyzed again when it has no statistics yet and holds
``MIN_ROWS``, or has grown ``GROWTH`` times past the row count its statistics were taken at.
``PRAGMA analysis_limit`` bounds the work to ~``ANALYSIS_LIMIT`` entries per index (0.3 s for the
videos and two 10M-row event tables), at the price of estimates that are coarse but of the right
order. PostgreSQL keeps its own statistics (autovacuum): nothing here applies to it.
"""

from __future__ import annotations

import sqlite3

MIN_ROWS = 500
GROWTH = 2.0
ANALYSIS_LIMIT = 100_000


def stale_tables(connection: sqlite3.Connection) -> list[str]:
    """The indexed tables whose statistics are missing or were taken at under 1/GROWTH of
    their size now (the size is ``max(rowid)``: one index probe, not a count)."""
    indexed = [name for (name,) in connection.execute(
        "SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = 'index' AND tbl_name NOT LIKE 'sqlite_%'"
        " ORDER BY tbl_name")]
    analyzed: dict[str, int] = {}
    if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
        for table, stat in connection.execute("SELECT tbl, stat FROM sqlite_stat1"):
            rows = int(str(stat).split()[0]) if stat else 0
            analyzed[table] = max(analyzed.get(table, 0), rows)
    stale = []
    for table in indexed:
        try:
            rows = connection.execute(f'SELECT max(rowid) FROM "{table}"').fetchone()[0] or 0
        except sqlite3.OperationalError:  # a WITHOUT ROWID table: none in the schema today
            continue
        if rows >= MIN_ROWS and (table not in analyzed or rows >= GROWTH * max(1, analyzed[table])):
            stale.append(table)
    return stale


def refresh_statistics(connection: sqlite3.Connection) -> list[str]:
    """ANALYZE the stale tables; returns their names. ANALYZE writes: it waits for the write
    lock as long as the connection's busy timeout allows, and raises if that runs out."""
    tables = stale_tables(connection)
    if tables:
        connection.execute(f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}")
        for table in tables:
            connection.execute(f'ANALYZE "{table}"')
    return tables
