from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from clipfeed.config import Settings
from clipfeed.db.checkpoint import BACKSTOP_PAGES, WalCheckpointer
from clipfeed.db.sqlite_driver import adopt, begin


def _tune_sqlite(dbapi_connection, _record, *, autocheckpoint_pages: int | None = None) -> None:
    adopt(dbapi_connection)  # one aiosqlite thread hop per statement (see sqlite_driver)
    # WAL lets readers proceed while a writer commits; busy_timeout makes writers queue
    # instead of failing with "database is locked" when the API and a worker write at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    if autocheckpoint_pages is not None:  # a WalCheckpointer thread checkpoints (see checkpoint.py)
        cursor.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint_pages)}")
    cursor.close()
    # Take over transaction control from pysqlite (see _begin_immediate).
    dbapi_connection.isolation_level = None


def _begin_immediate(connection) -> None:
    # A deferred SQLite transaction that reads and then writes fails with SQLITE_BUSY when
    # another writer committed in between; BEGIN IMMEDIATE queues writers on busy_timeout
    # instead, which keeps counters and state transitions exact without retry loops.
    begin(connection, "BEGIN IMMEDIATE")


def sqlite_file(url: str) -> str | None:
    """The file behind a SQLite URL; None for other databases and in-memory ones."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def build_engine(settings: Settings, *, pooled: bool = True, read_only: bool = False,
                 autocheckpoint_pages: int | None = None) -> AsyncEngine:
    url = settings.resolved_database_url
    kwargs: dict = {}
    if not pooled:
        kwargs["poolclass"] = NullPool
    else:
        # SQLite too: its readers run side by side under WAL, and the default pool
        # ran dry (5 + 10) under 16 concurrent feed requests on one worker.
        kwargs.update(pool_size=settings.database_pool_size, max_overflow=settings.database_pool_overflow,
                      pool_timeout=settings.database_pool_timeout_s)
        if not url.startswith("sqlite"):
            kwargs["pool_pre_ping"] = True
    if settings.database_schema and not url.startswith("sqlite"):
        kwargs["connect_args"] = {"server_settings": {"search_path": settings.database_schema}}
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", partial(_tune_sqlite, autocheckpoint_pages=autocheckpoint_pages))
        if not read_only:
            event.listen(engine.sync_engine, "begin", _begin_immediate)
        # A read-only engine sends no BEGIN at all: each statement is its own transaction on the
        # latest committed data, as PostgreSQL's default READ COMMITTED gives every read here.
        # A read transaction held a WAL snapshot from its first statement to its end, across
        # every await in between (a page's ranking, its wait for the write lock to record
        # impressions): with two processes serving pages one was always open, so SQLite could
        # never restart the WAL and it grew by ~9 MB/s (to 440 MB in a 50 s benchmark) until
        # every read walked it. A statement's snapshot ends with the statement (a streamed one,
        # when its rows are consumed).
    return engine


class Database:
    """One engine and session factory per process (API) or per job run (worker thread)."""

    def __init__(self, settings: Settings, *, pooled: bool = True):
        self.settings = settings
        # A serving process (pooled) on a SQLite file checkpoints the WAL in a thread, so no
        # request's commit does it; a job run's short-lived engine keeps SQLite's default.
        path = sqlite_file(settings.resolved_database_url) if pooled else None
        self._checkpointer = WalCheckpointer(path) if path else None
        self._autocheckpoint_pages = BACKSTOP_PAGES if path else None
        self.engine = build_engine(settings, pooled=pooled, autocheckpoint_pages=self._autocheckpoint_pages)
        # Services reach the deployment's settings through session.info (e.g. to publish a
        # notification after commit) without every caller threading them through.
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, info={"settings": settings})
        self._pooled = pooled
        self._read_sessions: async_sessionmaker | None = None
        self._read_engine: AsyncEngine | None = None  # SQLite only: PostgreSQL reads on self.engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: committed when the block succeeds, rolled back when it raises.
        Callbacks registered with on_commit() run after a successful commit."""
        async with self.sessions() as session:
            try:
                yield session
            except Exception as exc:
                if getattr(exc, "commit", False):
                    await commit(session)
                else:
                    await session.rollback()
                raise
            await commit(session)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session that only reads, each statement on the latest committed data (READ
        COMMITTED). On SQLite it runs on a second engine that sends no BEGIN: every request's
        BEGIN IMMEDIATE holds the database's one write lock until it commits, so a read-heavy
        request (a For You page) in one would make every other request of every process wait
        for it, and a deferred BEGIN would hold a WAL snapshot for the whole session (see
        build_engine). PostgreSQL needs no such care: it shares the engine."""
        if self._read_sessions is None:
            if self.settings.is_sqlite:
                self._read_engine = build_engine(self.settings, pooled=self._pooled, read_only=True,
                                                 autocheckpoint_pages=self._autocheckpoint_pages)
            self._read_sessions = async_sessionmaker(self._read_engine or self.engine, expire_on_commit=False,
                                                     info={"settings": self.settings})
        async with self._read_sessions() as session:
            async with session.begin():  # ends in a commit: a rollback would expire loaded rows
                yield session

    @property
    def checkpointer(self) -> WalCheckpointer | None:
        return self._checkpointer

    async def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        await self.engine.dispose()
        if self._read_engine is not None:
            await self._read_engine.dispose()


def on_commit(session: AsyncSession, callback) -> None:
    """Run callback() once the surrounding transaction has committed (e.g. enqueue a job
    whose input this transaction writes: the worker must be able to read it)."""
    session.info.setdefault("on_commit", []).append(callback)


async def commit(session: AsyncSession) -> None:
    await session.commit()
    for callback in session.info.pop("on_commit", []):
        result = callback()
        if hasattr(result, "__await__"):
            await result
