"""For You tables: the impression log (what a user was shown) and "not interested" marks.

Both are keyed (user_id, video_id): a video is shown to a user at most once by the For You feed
and marked at most once, so inserts are idempotent (ON CONFLICT DO NOTHING)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from clipfeed.db.base import Base, UTCDateTime, utcnow


class Impression(Base):
    __tablename__ = "feed_impressions"
    __table_args__ = (Index("ix_feed_impressions_user_at", "user_id", "created_at"),)

    user_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    video_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NotInterested(Base):
    __tablename__ = "feed_not_interested"

    user_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    video_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    creator_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
