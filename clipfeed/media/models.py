from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clipfeed.db.base import Base, UTCDateTime, new_id, utcnow


class VideoStatus:
    UPLOADING = "uploading"      # tus upload in progress
    PROCESSING = "processing"    # probed and accepted, transcoding (no rung playable yet)
    READY = "ready"              # at least the lowest rung is playable; higher rungs may follow
    REJECTED = "rejected"        # the upload is not an acceptable video (reason stored)
    FAILED = "failed"            # processing failed after retries (reason stored, original kept)
    ALL = (UPLOADING, PROCESSING, READY, REJECTED, FAILED)


class Visibility:
    PUBLIC = "public"
    FOLLOWERS = "followers"
    UNLISTED = "unlisted"
    PRIVATE = "private"
    ALL = (PUBLIC, FOLLOWERS, UNLISTED, PRIVATE)


class VideoOrigin:
    UPLOAD = "upload"            # a creator's upload: the VOD limits apply (max_duration_s, max_upload_bytes)
    LIVE_REPLAY = "live_replay"  # a live stream's recording: its own limits (live_replay_*), same checks otherwise
    ALL = (UPLOAD, LIVE_REPLAY)


class Video(Base):
    __tablename__ = "videos"
    __table_args__ = (
        Index("ix_videos_owner_created", "owner_id", "created_at", "id"),
        Index("ix_videos_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_videos_sound_id", "sound_id"),
        Index("ix_videos_owner_published", "owner_id", "published_at", "id"),  # Following feed
        Index("ix_videos_status_published", "status", "published_at"),  # newest first: catalog, trending fallback
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=VideoStatus.UPLOADING)
    # 0..100 while processing; 100 once every rung is published.
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    caption: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[str] = mapped_column(String(16), default=Visibility.PUBLIC)
    sound_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    original_filename: Mapped[str] = mapped_column(String(255), default="")
    # Set by the server only (never from upload metadata): picks the limits the pipeline applies.
    origin: Mapped[str] = mapped_column(String(16), default=VideoOrigin.UPLOAD, server_default=VideoOrigin.UPLOAD)

    source_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    source_bytes: Mapped[int] = mapped_column(BigInteger, default=0)

    rejection_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    rejection_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    # Probe results and content features.
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    fps: Mapped[float | None] = mapped_column(Float, nullable=True)
    bitrate: Mapped[int | None] = mapped_column(Integer, nullable=True)
    has_audio: Mapped[bool | None] = mapped_column(nullable=True)
    features: Mapped[dict] = mapped_column(JSON, default=dict)

    # Published renditions [{name, width, height, bandwidth, playlist}] and artefact keys.
    renditions: Mapped[list] = mapped_column(JSON, default=list)
    artifacts: Mapped[dict] = mapped_column(JSON, default=dict)

    # Denormalized counters, kept exact by atomic increments beside the row that changes them.
    view_count: Mapped[int] = mapped_column(BigInteger, default=0)
    like_count: Mapped[int] = mapped_column(BigInteger, default=0)
    comment_count: Mapped[int] = mapped_column(BigInteger, default=0)
    share_count: Mapped[int] = mapped_column(BigInteger, default=0)
    # Of view_count: views that reached the end, and skips (left within 2 s). The For You
    # ranker's completion rate is completions / (views - skips), as in its training.
    completion_count: Mapped[int] = mapped_column(BigInteger, default=0)
    skip_count: Mapped[int] = mapped_column(BigInteger, default=0)
    comments_enabled: Mapped[bool] = mapped_column(default=True)
    # Mixing of a reused sound under the original audio (0 = replace, 1 = equal), from upload metadata.
    sound_volume: Mapped[float | None] = mapped_column(Float, nullable=True)

    # Durable job bookkeeping: a worker refreshes heartbeat_at; a stale heartbeat means the
    # worker died and the job is re-enqueued (Huey itself does not redeliver lost tasks).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class VideoContentFeatures(Base):
    """A processed video's content-feature vector (colours, detail, motion, scene cuts and its
    audio's level, spectrum and tempo: `clipfeed.media.content_features`), float32 in that
    module's FEATURE_NAMES order. A narrow table of its own: the For You content index and the
    training job read it for tens of thousands of videos at a time, which the `videos` row's
    JSON columns would make megabytes. `names_version` changes when the names do; readers skip
    vectors of another version (`clipfeed features refresh` writes the current one)."""

    __tablename__ = "video_content_features"

    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True)
    names_version: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VideoContentFeatureFailure(Base):
    """The last failed attempt to refresh a video's content features (`feature_refresh`): when a
    video cannot be measured again (a rung lost from the store, a file ffmpeg rejects), the next
    attempt waits `retry_at`, doubling with each failure, so a broken video neither takes a slot
    of every periodic run nor fills the log every 10 minutes. Removed when a vector is stored;
    a failure under another `names_version` does not hold back the new release's attempt."""

    __tablename__ = "video_content_feature_failures"

    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True)
    names_version: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(String(500))
    retry_at: Mapped[datetime] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Upload(Base):
    """A tus upload. Its state lives here and in the blob, so it survives a server restart."""

    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    video_id: Mapped[str] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    blob_key: Mapped[str] = mapped_column(String(255))
    metadata_: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    # A short lease held while one PATCH streams, so two concurrent PATCHes cannot both append.
    lock_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lock_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Sound(Base):
    """A reusable soundtrack; every processed video's own audio becomes one."""

    __tablename__ = "sounds"

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    source_video_id: Mapped[str | None] = mapped_column(
        ForeignKey("videos.id", ondelete="SET NULL"), nullable=True, unique=True)
    title: Mapped[str] = mapped_column(String(120))
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    blob_key: Mapped[str] = mapped_column(String(255))
    use_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
