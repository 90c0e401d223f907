"""Accounts: registration, password login with throttling, opaque session tokens."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from datetime import date, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import LoginAttempt, SessionToken, User
from clipfeed.config import Settings
from clipfeed.db.base import utcnow
from clipfeed.errors import Conflict, NotFound, RateLimited, Unauthorized, ValidationFailed

HANDLE_RE = re.compile(r"^[a-z0-9._]{3,24}$")
MIN_PASSWORD = 8
MIN_AGE_YEARS = 13

_hasher = PasswordHasher()
# Verifying against this keeps "unknown handle" as slow as "wrong password" (no user enumeration).
_DUMMY_HASH = _hasher.hash("clipfeed-timing-equaliser")


def normalize_handle(raw: str) -> str:
    handle = raw.strip().lstrip("@").lower()
    if not HANDLE_RE.match(handle):
        raise ValidationFailed(
            "handle must be 3-24 characters of a-z, 0-9, '.' and '_'", field="handle")
    return handle


def _age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def get_user(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    return user


async def issue_token(session: AsyncSession, settings: Settings, user: User) -> str:
    token = secrets.token_urlsafe(32)
    session.add(SessionToken(token_hash=hash_token(token), user_id=user.id,
                             expires_at=utcnow() + timedelta(days=settings.session_ttl_days)))
    await session.flush()
    return token


async def register(session: AsyncSession, settings: Settings, *, handle: str, password: str,
                   display_name: str | None, birth_date: date | None,
                   interests: list[str] | None = None) -> tuple[User, str]:
    from clipfeed.accounts.profiles import normalize_interests

    handle = normalize_handle(handle)
    chosen = normalize_interests(interests)
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed(f"password must be at least {MIN_PASSWORD} characters", field="password")
    if birth_date is not None:
        today = utcnow().date()
        if birth_date > today:
            raise ValidationFailed("birth_date is in the future", field="birth_date")
        if _age_on(birth_date, today) < MIN_AGE_YEARS:
            raise ValidationFailed(f"you must be at least {MIN_AGE_YEARS} to use clipfeed",
                                   code="too_young", field="birth_date")
    name = (display_name or "").strip() or handle
    if await session.scalar(select(User.id).where(User.handle == handle)):
        raise Conflict("that handle is taken", code="handle_taken")
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    user = User(handle=handle, display_name=name, password_hash=password_hash, birth_date=birth_date,
                interests=chosen)
    session.add(user)
    await session.flush()
    return user, await issue_token(session, settings, user)


async def _check_throttle(session: AsyncSession, settings: Settings, scopes: list[str]) -> None:
    since = utcnow() - timedelta(seconds=settings.login_window_seconds)
    for scope in scopes:
        count, oldest = (await session.execute(
            select(func.count(), func.min(LoginAttempt.attempted_at))
            .where(LoginAttempt.scope == scope, LoginAttempt.attempted_at > since))).one()
        if count >= settings.login_attempts:
            retry = (oldest + timedelta(seconds=settings.login_window_seconds) - utcnow()).total_seconds()
            raise RateLimited("too many login attempts; try again later", retry_after=int(retry) + 1)


async def login(session: AsyncSession, settings: Settings, *, handle: str, password: str,
                client_ip: str) -> tuple[User, str]:
    handle_key = handle.strip().lstrip("@").lower()[:64]
    scopes = [f"handle:{handle_key}", f"ip:{client_ip}"]
    await _check_throttle(session, settings, scopes)
    user = await session.scalar(select(User).where(User.handle == handle_key))
    try:
        await asyncio.to_thread(_hasher.verify, user.password_hash if user else _DUMMY_HASH, password)
        ok = user is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        for scope in scopes:
            session.add(LoginAttempt(scope=scope))
        await session.flush()
        raise Unauthorized("wrong handle or password", code="invalid_credentials", commit=True)
    # Clean the slate for this handle once its owner proves who they are.
    await session.execute(delete(LoginAttempt).where(LoginAttempt.scope == scopes[0]))
    return user, await issue_token(session, settings, user)


async def logout(session: AsyncSession, token: str) -> None:
    await session.execute(delete(SessionToken).where(SessionToken.token_hash == hash_token(token)))


# Token -> user in one round trip, on a statement built once: every signed-in request runs it, and
# two ORM gets (token row, then user) or a freshly built query cost ~0.5 ms more per request. Not
# cached across requests, so a logout (the row deleted) or an expiry takes effect at once in every
# process.
_USER_FOR_TOKEN = (select(User).join(SessionToken, SessionToken.user_id == User.id)
                   .where(SessionToken.token_hash == bindparam("token_hash"),
                          SessionToken.expires_at > bindparam("now", type_=SessionToken.expires_at.type)))


async def user_for_token(session: AsyncSession, token: str) -> User | None:
    return await session.scalar(_USER_FOR_TOKEN, {"token_hash": hash_token(token), "now": utcnow()})


async def purge_old_login_attempts(session: AsyncSession, settings: Settings) -> None:
    cutoff = utcnow() - timedelta(seconds=settings.login_window_seconds)
    await session.execute(delete(LoginAttempt).where(LoginAttempt.attempted_at < cutoff))
