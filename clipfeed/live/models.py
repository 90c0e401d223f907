"""Live tables: streams, and the chat's durable state (moderators, bans, emotes, recent messages).

Moderators, bans and emotes belong to the *channel* (the streamer, ``channel_id`` = the owner's
user id), not to one stream: a streamer appoints a moderator once, and a ban outlives the
broadcast it was issued in, as on every streaming site viewers know.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clipfeed.db.base import Base, UTCDateTime, new_id, utcnow


class LiveStatus:
    IDLE = "idle"    # created (or the publisher disconnected); waiting for the encoder
    LIVE = "live"    # an encoder is publishing right now
    ENDED = "ended"  # the creator ended it: no publish is accepted any more
    ALL = (IDLE, LIVE, ENDED)


class LiveStream(Base):
    __tablename__ = "live_streams"
    __table_args__ = (
        Index("ix_live_streams_owner_created", "owner_id", "created_at"),
        Index("ix_live_streams_status_started", "status", "started_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(140), default="")
    # Same values and meaning as a video's visibility (public, followers, unlisted, private).
    visibility: Mapped[str] = mapped_column(String(16), default="public")
    status: Mapped[str] = mapped_column(String(8), default=LiveStatus.IDLE)
    # SHA-256 of the secret stream key: the key itself is shown once (start, rotate) and never stored.
    stream_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The publish claim: set atomically by authorize_publish, cleared by publish_ended. A claim
    # whose heartbeat is older than settings.live_claim_ttl_s is stale (ingest process died).
    publishing: Mapped[bool] = mapped_column(Boolean, default=False)
    publish_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    peak_viewers: Mapped[int] = mapped_column(Integer, default=0)
    # The latest publish session's recording, imported as a normal video of the streamer.
    replay_video_id: Mapped[str | None] = mapped_column(
        ForeignKey("videos.id", ondelete="SET NULL"), nullable=True)
    # Chat settings: seconds a non-moderator waits between two messages (0 = off), and the
    # streamer's own banned words on top of the deployment's list.
    slow_mode_s: Mapped[int] = mapped_column(Integer, default=0)
    banned_words: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # last time it went live
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ChatModerator(Base):
    __tablename__ = "live_moderators"

    channel_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChatBan(Base):
    """A ban (expires_at NULL) or a timeout (expires_at set) from one channel's chat."""

    __tablename__ = "live_chat_bans"

    channel_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    by_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StreamerEmote(Base):
    """A streamer's own emote, ``:name:`` in their chat; a small image in the blob store."""

    __tablename__ = "live_emotes"
    __table_args__ = (Index("uq_live_emotes_channel_name", "channel_id", "name", unique=True),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=new_id)
    channel_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32))
    blob_key: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChatMessage(Base):
    """Accepted chat messages, so a joining viewer gets the last ones and moderators can delete."""

    __tablename__ = "live_chat_messages"
    __table_args__ = (Index("ix_live_chat_messages_stream_id", "stream_id", "id"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True)  # time-ordered (see chat_service)
    stream_id: Mapped[str] = mapped_column(ForeignKey("live_streams.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    # The frame viewers receive (author, badges, parts), stored as sent.
    frame: Mapped[dict] = mapped_column(JSON)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
