"""The data layer's transactions: what they lock on SQLite, where one database file serves every
process and holds a single write lock."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import pytest
from sqlalchemy import text

from clipfeed.db import Database
from clipfeed.db.migrate import upgrade
from tests.conftest import make_settings


@pytest.fixture
def sqlite_settings(tmp_path):
    settings = make_settings("sqlite", tmp_path / "data")
    upgrade(settings)
    return settings


def _other_process(settings) -> sqlite3.Connection:
    """A plain connection to the same file that never waits for a lock (as another process)."""
    path = settings.resolved_database_url.split(":///", 1)[1]
    return sqlite3.connect(path, timeout=0, isolation_level=None)


def _beside_another_process(settings, scenario) -> None:
    """Run `await scenario(db, other)`: a Database and a plain connection to the same file."""
    other = _other_process(settings)

    async def main():
        db = Database(settings)
        try:
            await scenario(db, other)
        finally:
            await db.dispose()

    try:
        asyncio.run(main())
    finally:
        other.close()


def test_a_read_session_leaves_the_write_lock_free_and_reads_what_is_committed(sqlite_settings):
    async def scenario(db, other):
        async with db.read() as session:
            before = await session.scalar(text("SELECT count(*) FROM hashtags"))
            # Another writer goes ahead while the read is open (no "database is locked")...
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO hashtags (tag, video_count, created_at) VALUES ('written-meanwhile', 0, '2026-01-01 00:00:00')")
            other.execute("COMMIT")
            # ...and the next statement reads it (READ COMMITTED, as on PostgreSQL).
            assert await session.scalar(text("SELECT count(*) FROM hashtags")) == before + 1

    _beside_another_process(sqlite_settings, scenario)


def test_an_open_read_session_lets_the_wal_restart(sqlite_settings):
    """A read session holds no WAL snapshot between its statements: under steady traffic some
    read is always open, and a snapshot held by it kept SQLite from ever restarting the WAL."""
    wal = sqlite_settings.resolved_database_url.split(":///", 1)[1] + "-wal"

    async def scenario(db, other):
        db.checkpointer.stop()  # this test's own TRUNCATE checkpoint must not meet the thread's
        async with db.read() as session:
            await session.scalar(text("SELECT count(*) FROM hashtags"))
            for n in range(50):
                other.execute("INSERT INTO hashtags (tag, video_count, created_at) VALUES (?, 0, '2026-01-01')",
                              (f"wal-{n}",))
            assert os.path.getsize(wal) > 0
            busy, _frames, _done = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
            assert os.path.getsize(wal) == 0
            assert await session.scalar(text("SELECT count(*) FROM hashtags WHERE tag LIKE 'wal-%'")) == 50

    _beside_another_process(sqlite_settings, scenario)


def test_a_serving_database_checkpoints_the_wal_in_a_thread_not_in_the_requests_commits(sqlite_settings):
    """SQLite's automatic checkpoint runs inside the commit that crosses 1000 WAL pages and
    makes that request wait for megabytes of writes; a serving Database leaves the WAL to its
    checkpointer thread (the commits' checkpoint stays only as a far-off backstop)."""
    blob_pages, commits = 100, 15  # 1500 pages: past SQLite's default of 1000

    async def write(db) -> None:
        async with db.transaction() as session:
            await session.execute(text("CREATE TABLE IF NOT EXISTS scratch (b BLOB)"))
        for _ in range(commits):
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO scratch VALUES (zeroblob(:n))"), {"n": blob_pages * 4096})

    async def scenario(db, other):
        db.checkpointer.stop()  # first: the commits alone
        await write(db)
        # Every frame the commits wrote is still in the WAL: none of them checkpointed it (a
        # checkpoint at 1000 pages would have let the next commit restart the WAL from frame 0).
        busy, frames, _done = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames >= blob_pages * commits

    _beside_another_process(sqlite_settings, scenario)

    async def with_the_thread(db, other):
        await write(db)
        assert await asyncio.to_thread(db.checkpointer.wait_for_pass)
        busy, frames, done = db.checkpointer.last
        assert busy == 0 and frames > 0 and done == frames  # the thread moved all of it

    _beside_another_process(sqlite_settings, with_the_thread)


def test_a_write_transaction_holds_the_write_lock_from_its_first_statement(sqlite_settings):
    async def scenario(db, other):
        async with db.transaction() as session:
            await session.scalar(text("SELECT count(*) FROM hashtags"))
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free again once it committed
        other.execute("ROLLBACK")

    _beside_another_process(sqlite_settings, scenario)


def test_a_write_transaction_that_starts_with_a_streamed_read_holds_the_write_lock(sqlite_settings):
    async def scenario(db, other):
        async with db.transaction() as session:
            connection = await session.connection()
            result = await connection.stream(text("SELECT tag FROM hashtags"))
            await result.fetchall()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")

    _beside_another_process(sqlite_settings, scenario)


def test_a_request_that_finds_every_connection_busy_gets_503_busy_and_the_next_one_is_served(settings_factory):
    # Overload must not look like a bug (500) nor queue without bound: with the read pool held
    # (one connection, no overflow), a feed request waits database_pool_timeout_s, then 503.
    from contextlib import AsyncExitStack

    from starlette.testclient import TestClient

    from clipfeed.app import create_app

    settings = settings_factory(database_pool_size=1, database_pool_overflow=0, database_pool_timeout_s=0.3)
    app = create_app(settings, run_workers=False)
    with TestClient(app) as http:
        token = http.post("/api/v1/auth/register", json={"handle": "waiting", "password": "correct horse 42"}
                          ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        held = AsyncExitStack()

        async def hold_the_read_connection():
            session = await held.enter_async_context(app.state.db.read())
            await session.execute(text("SELECT 1"))  # a session checks a connection out on first use

        http.portal.call(hold_the_read_connection)
        busy = http.get("/api/v1/feed/following", headers=headers)
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"]["code"] == "busy" and busy.headers["retry-after"] == "1"
        http.portal.call(held.aclose)
        served = http.get("/api/v1/feed/following", headers=headers)
        assert served.status_code == 200, served.text


def test_sqlite_statements_take_one_thread_hop_and_only_open_transactions_roll_back(sqlite_settings, monkeypatch):
    """aiosqlite runs every call in the connection's thread; a statement is one such call (rows
    included), and a connection returned to the pool after its commit needs none."""
    import aiosqlite.core
    from sqlalchemy.exc import IntegrityError

    hops = []
    run_in_thread = aiosqlite.core.Connection._execute

    async def counted(self, fn, *args, **kwargs):
        hops.append(getattr(fn, "__name__", repr(fn)))
        return await run_in_thread(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    row = "INSERT INTO hashtags (tag, video_count, created_at) VALUES (:tag, 0, '2026-01-01 00:00:00')"

    async def main():
        db = Database(sqlite_settings)
        try:
            async with db.read() as session:  # connects (the PRAGMAs, SQL functions) first
                await session.execute(text("SELECT 1"))
            hops.clear()
            async with db.read() as session:
                assert (await session.execute(text("SELECT 1, 'a' UNION ALL SELECT 2, 'b'"))).all() == [(1, "a"), (2, "b")]
                assert await session.scalar(text("SELECT count(*) FROM hashtags WHERE tag LIKE 'hop%'")) == 0
            # Two statements, each its own transaction (a read sends no BEGIN): nothing to commit,
            # and no rollback when the pool takes the connection back.
            assert hops == ["_run_statement", "_run_statement"], hops
            async with db.read():
                pass  # no statement: nothing to end
            assert len(hops) == 2, hops
            async with db.transaction() as session:
                await session.execute(text(row), [{"tag": "hop1"}, {"tag": "hop2"}])  # executemany
                returned = await session.scalar(text(row.replace(":tag", "'hop3'") + " RETURNING tag"))
                assert returned == "hop3"
            with pytest.raises(IntegrityError):
                async with db.transaction() as session:
                    await session.execute(text(row), {"tag": "hop4"})
                    await session.execute(text(row), {"tag": "hop1"})  # duplicate: the whole unit rolls back
            async with db.read() as session:
                tags = (await session.scalars(text("SELECT tag FROM hashtags WHERE tag LIKE 'hop%' ORDER BY tag"))).all()
            assert tags == ["hop1", "hop2", "hop3"]
        finally:
            await db.dispose()

    asyncio.run(main())


def _add_videos(settings, count: int, start: int = 0) -> None:
    """`count` ready public videos of one creator, written as another process would."""
    other = _other_process(settings)
    try:
        other.execute("INSERT OR IGNORE INTO users (id, handle, display_name, password_hash, bio, role, created_at)"
                      " VALUES ('creator', 'creator', 'Creator', 'x', '', 'user', '2026-01-01 00:00:00')")
        other.executemany(
            "INSERT INTO videos (id, owner_id, status, progress, caption, visibility, original_filename,"
            " source_bytes, features, renditions, artifacts, attempts, created_at, updated_at, published_at)"
            " VALUES (?, 'creator', 'ready', 100, '', 'public', 'clip.mp4', 1, '{}', '[]', '{}', 0,"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
            [(f"v{i:06d}",) for i in range(start, start + count)])
    finally:
        other.close()


def _page_lookup_plan(settings) -> str:
    """SQLite's plan for the visibility query every For You page runs (20 ids, signed in)."""
    from sqlalchemy.dialects import sqlite

    from clipfeed.feed.reranking import _visible_statement

    statement = _visible_statement(True).params(video_ids=[f"v{i:06d}" for i in range(20)], viewer_id="viewer")
    sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    other = _other_process(settings)
    try:
        return " | ".join(row[-1] for row in other.execute("EXPLAIN QUERY PLAN " + sql))
    finally:
        other.close()


def test_a_serving_database_analyzes_tables_that_grew_without_statistics(sqlite_settings):
    """Never analyzed, SQLite guesses every index selective: a page's 20 ids were found by
    walking every ready video through the status index. The serving Database's thread takes
    the statistics (once per doubling of a table), and the ids are looked up by key."""
    from clipfeed.db.statistics import MIN_ROWS, stale_tables

    _add_videos(sqlite_settings, MIN_ROWS + 100)
    assert "USING INDEX ix_videos_status" in _page_lookup_plan(sqlite_settings)  # the guess

    async def scenario(db, other):
        assert await asyncio.to_thread(db.checkpointer.wait_for_pass)
        assert "videos" in db.checkpointer.analyzed
        assert stale_tables(other) == []  # taken once, not at every pass

    _beside_another_process(sqlite_settings, scenario)
    plan = _page_lookup_plan(sqlite_settings)
    assert "videos USING INDEX sqlite_autoindex_videos_1 (id=?)" in plan and "ix_videos_status" not in plan

    other = _other_process(sqlite_settings)
    try:
        _add_videos(sqlite_settings, MIN_ROWS, start=MIN_ROWS + 100)  # not yet twice the size
        assert "videos" not in stale_tables(other)
        _add_videos(sqlite_settings, 200, start=2 * MIN_ROWS + 100)
        assert "videos" in stale_tables(other)
    finally:
        other.close()
