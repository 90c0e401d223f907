from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from clipfeed.db.base import Base, UTCDateTime, new_id, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=new_id)
    # Handles are stored lower-case, so uniqueness is case-insensitive on every database.
    handle: Mapped[str] = mapped_column(String(24), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    birth_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    bio: Mapped[str] = mapped_column(String(280), default="")
    region: Mapped[str | None] = mapped_column(String(8), nullable=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    follower_count: Mapped[int] = mapped_column(Integer, default=0)
    following_count: Mapped[int] = mapped_column(Integer, default=0)
    video_count: Mapped[int] = mapped_column(Integer, default=0)
    # Topics the user chose (hashtags, stored normalized): the For You feed proposes them to a
    # newcomer before their own swipes say anything (accounts/profiles.py: normalize_interests).
    interests: Mapped[list] = mapped_column(JSON, default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SessionToken(Base):
    """An opaque bearer/cookie token. Only its SHA-256 is stored, so a leaked table logs no one in."""

    __tablename__ = "session_tokens"
    __table_args__ = (Index("ix_session_tokens_user_id", "user_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoginAttempt(Base):
    """Failed logins, counted per handle and per IP to throttle password guessing."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_scope_at", "scope", "attempted_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(80))  # "handle:<h>" or "ip:<addr>"
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
