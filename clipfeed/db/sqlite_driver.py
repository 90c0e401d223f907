"""SQLite through aiosqlite with one thread hop per statement.

aiosqlite runs each sqlite3 call in the connection's own thread; SQLAlchemy's adapter makes four
such calls per statement (open a cursor, execute, fetch, close) and one more for the pool's
rollback when a connection comes back already committed. Each call is a round trip between the
event loop and that thread (a queue put, a GIL hand-off, a wake-up of the loop): a For You page
made 22 of them, about a third of its CPU time. Here a statement is one call that does all four
steps in the thread, a transaction's BEGIN goes along with its first statement, and a connection
with no transaction open skips the rollback: 5 round trips per page.

The connection keeps SQLAlchemy's adapter for everything else (commit, close, terminate, errors);
only its cursor and its rollback change. It uses two documented-in-code internals of aiosqlite
(`Connection._execute`, which queues a function for the connection's thread, and `_conn`), as
SQLAlchemy's own adapter does; `tests/test_database.py` covers it on every supported version.
"""

from __future__ import annotations

import collections
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection
from sqlalchemy.util.concurrency import await_


def _run_statement(connection, operation: str, parameters, begin: str | None = None) -> tuple:
    """In aiosqlite's thread: the whole statement, rows included, in one call (after the
    transaction's BEGIN when this is its first statement)."""
    cursor = connection.cursor()
    try:
        if begin:
            cursor.execute(begin)
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else ()
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _run_many(connection, operation: str, seq_of_parameters, begin: str | None = None) -> tuple:
    cursor = connection.cursor()
    try:
        if begin:
            cursor.execute(begin)
        cursor.executemany(operation, seq_of_parameters)
        return None, (), cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor:
    """A DBAPI cursor whose statements run in one call in aiosqlite's thread; the rows are held
    here (as SQLAlchemy's adapter holds them too: it fetched everything at execute)."""

    server_side = False

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection):
        self._adapt_connection = adapt_connection
        self.description = None
        self.rowcount = -1
        self.lastrowid = None
        self.arraysize = 1
        self._rows: collections.deque = collections.deque()

    async def _call(self, function, operation, parameters):
        aio = self._adapt_connection._connection
        async with self._adapt_connection._execute_mutex:
            begin = _take_pending_begin(aio)
            return await aio._execute(function, aio._conn, operation, parameters, begin)

    def execute(self, operation: str, parameters: Any = None) -> None:
        try:
            self.description, rows, self.rowcount, self.lastrowid = await_(
                self._call(_run_statement, operation, parameters))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self._rows = collections.deque(rows)

    def executemany(self, operation: str, seq_of_parameters) -> None:
        try:
            self.description, _rows, self.rowcount, self.lastrowid = await_(
                self._call(_run_many, operation, seq_of_parameters))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self._rows = collections.deque()

    def setinputsizes(self, *inputsizes) -> None:
        pass

    def fetchone(self):
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list:
        rows = self._rows
        return [rows.popleft() for _ in range(min(size or self.arraysize, len(rows)))]

    def fetchall(self) -> list:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def __iter__(self):
        while self._rows:
            yield self._rows.popleft()

    async def _async_soft_close(self) -> None:
        pass  # nothing is open in the thread between statements

    def close(self) -> None:
        self._rows.clear()


# The BEGIN a transaction has asked for and not yet sent, kept on the aiosqlite connection (the
# adapter has fixed slots). Sent with the first statement; a transaction that ran no statement
# ends without a round trip.
_PENDING_BEGIN = "_clipfeed_pending_begin"


def _take_pending_begin(aio) -> str | None:
    begin = getattr(aio, _PENDING_BEGIN, None)
    if begin is not None:
        setattr(aio, _PENDING_BEGIN, None)
    return begin


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    def begin_with_next_statement(self, sql: str) -> None:
        setattr(self._connection, _PENDING_BEGIN, sql)

    def commit(self) -> None:
        if _take_pending_begin(self._connection) is not None:
            return  # the transaction never started: nothing to commit
        if not self._in_transaction():
            return  # a read-only engine's statements commit themselves: no hop to pay
        super().commit()

    def _in_transaction(self) -> bool:
        # Read from the loop's thread: safe, the connection is idle between statements.
        raw = self._connection._connection
        return raw is not None and raw.in_transaction

    def cursor(self, server_side: bool = False):
        if server_side:
            # Streamed results keep SQLAlchemy's cursor (it fetches in batches): the transaction's
            # BEGIN, if still pending, must go first on its own.
            begin = _take_pending_begin(self._connection)
            if begin is not None:
                aio = self._connection
                try:
                    await_(aio._execute(_run_statement, aio._conn, begin, None))
                except Exception as error:
                    self._handle_exception(error)
            return super().cursor(server_side=True)
        return OneHopCursor(self)

    def rollback(self) -> None:
        # The pool "resets" every connection it gets back with a rollback, most of them already
        # committed: with no transaction open there is nothing to roll back (and no hop to pay).
        _take_pending_begin(self._connection)
        if not self._in_transaction():
            return
        super().rollback()


def begin(connection, sql: str) -> None:
    """Start a transaction with `sql` (BEGIN, BEGIN IMMEDIATE) on a SQLAlchemy Connection: sent
    with its first statement on a OneHopConnection, at once on any other."""
    dbapi_connection = connection.connection.dbapi_connection
    if isinstance(dbapi_connection, OneHopConnection):
        dbapi_connection.begin_with_next_statement(sql)
    else:
        connection.exec_driver_sql(sql)


def adopt(dbapi_connection) -> None:
    """Turn SQLAlchemy's aiosqlite connection into a OneHopConnection (same slots: only the
    methods change). Called from the engine's "connect" event."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = OneHopConnection
