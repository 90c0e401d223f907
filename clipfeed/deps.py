"""FastAPI dependencies as Annotated aliases, so routers stay one-liners."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts import service as accounts
from clipfeed.accounts.models import User
from clipfeed.config import Settings as SettingsModel
from clipfeed.db import Database
from clipfeed.errors import Unauthorized
from clipfeed.jobs import JobQueue
from clipfeed.ratelimit import RateLimiter
from clipfeed.storage import BlobStore

SESSION_COOKIE = "clipfeed_session"


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    db: Database = request.app.state.db
    async with db.transaction() as session:
        yield session


# The dependencies are coroutines even where they do not await: FastAPI runs a plain `def`
# dependency in the thread pool, a hop that cost ~0.1-0.3 ms of CPU per dependency per request.
async def _settings(request: Request) -> SettingsModel:
    return request.app.state.settings


async def _store(request: Request) -> BlobStore:
    return request.app.state.store


async def _db(request: Request) -> Database:
    return request.app.state.db


async def _jobs(request: Request) -> JobQueue:
    return request.app.state.jobs


async def _limiter(request: Request) -> RateLimiter:
    return request.app.state.limiter


def request_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.cookies.get(SESSION_COOKIE) or None


async def user_from_request(request: Request, db: Database) -> User | None:
    """Resolve the caller in a short transaction of its own (used where a request must not hold
    a transaction open, e.g. while a tus PATCH streams its body)."""
    token = request_token(request)
    if not token:
        return None
    async with db.transaction() as session:
        return await accounts.user_for_token(session, token)


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    db: Database = request.app.state.db
    async with db.read() as session:
        yield session


async def _optional_user(request: Request, session: Annotated[AsyncSession, Depends(_session, scope="function")]) -> User | None:
    token = request_token(request)
    return await accounts.user_for_token(session, token) if token else None


async def _optional_reader(request: Request,
                           session: Annotated[AsyncSession, Depends(_read_session, scope="function")]) -> User | None:
    token = request_token(request)
    return await accounts.user_for_token(session, token) if token else None


async def _current_user(user: Annotated[User | None, Depends(_optional_user)]) -> User:
    if user is None:
        raise Unauthorized("sign in to do this (missing or expired token)")
    return user


async def _current_reader(user: Annotated[User | None, Depends(_optional_reader)]) -> User:
    if user is None:
        raise Unauthorized("sign in to do this (missing or expired token)")
    return user


class Page:
    def __init__(self, limit: int, cursor: str | None):
        self.limit = limit
        self.cursor = cursor


async def _pagination(limit: Annotated[int, Query(ge=1, le=100)] = 20, cursor: Annotated[str | None, Query(max_length=200)] = None) -> Page:
    return Page(limit, cursor)


Session = Annotated[AsyncSession, Depends(_session, scope="function")]
Settings = Annotated[SettingsModel, Depends(_settings)]
Store = Annotated[BlobStore, Depends(_store)]
Db = Annotated[Database, Depends(_db)]
Jobs = Annotated[JobQueue, Depends(_jobs)]
OptionalUser = Annotated[User | None, Depends(_optional_user)]
# For routes that only read (or write in short transactions of their own, through Db): the
# session and the caller come from Database.read(), which takes no write lock on SQLite.
ReadSession = Annotated[AsyncSession, Depends(_read_session, scope="function")]
OptionalReader = Annotated[User | None, Depends(_optional_reader)]
CurrentUser = Annotated[User, Depends(_current_user)]
CurrentReader = Annotated[User, Depends(_current_reader)]
Pagination = Annotated[Page, Depends(_pagination)]
Limiter = Annotated[RateLimiter, Depends(_limiter)]
