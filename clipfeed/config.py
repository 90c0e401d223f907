"""Settings: the only place defaults live. Everything reads a Settings instance, never the environment."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLIPFEED_", env_file=None, extra="ignore")

    # Where the embedded shape keeps its SQLite file, job queue and local blobs.
    data_dir: Path = Path("./data")
    # sqlite+aiosqlite:///... (default, inside data_dir) or postgresql+asyncpg://...
    database_url: str | None = None
    # PostgreSQL schema to live in (search_path); lets several deployments or test runs share a database.
    database_schema: str | None = None
    # Connections per engine and process: kept open, extra under load, and how long a request
    # waits for one before it is answered 503 "busy" (rather than queueing without bound).
    database_pool_size: int = 10
    database_pool_overflow: int = 10
    database_pool_timeout_s: float = 30.0
    # Set to use Redis for jobs (and, later, events, caches and rate limits).
    redis_url: str | None = None
    # file:///path (default: data_dir/blobs). The BlobStore protocol fits S3; only LocalStore ships now.
    storage_url: str | None = None
    # Names the job queue; lets tests and several deployments share one Redis.
    queue_name: str = "clipfeed"

    host: str = "127.0.0.1"
    port: int = 8000
    # Used to build absolute URLs (share links, tus Location). Empty: derived from the request.
    public_base_url: str = ""
    # Browser origins allowed to call the API with credentials. Never "*".
    cors_origins: list[str] = Field(default_factory=list)
    # Secret for signed media URLs; generated once into data_dir when left empty.
    secret_key: str = ""
    session_ttl_days: int = 30
    cookie_secure: bool = False

    # In-process job consumer started by `clipfeed serve` (embedded shape).
    run_workers: bool = True
    worker_threads: int = 1
    # A job whose heartbeat is older than this is considered lost (worker killed) and re-run.
    job_lease_seconds: int = 120
    job_retries: int = 2

    # Login throttling: attempts per window, per handle and per IP.
    login_attempts: int = 10
    login_window_seconds: int = 300

    # Per-user write limits (per minute), answered 429 with Retry-After.
    comments_per_minute: int = 30
    likes_per_minute: int = 120
    follows_per_minute: int = 60
    shares_per_minute: int = 60

    # Upload limits.
    max_upload_bytes: int = 200 * MB
    upload_expiry_hours: int = 24
    min_duration_s: float = 1.0
    max_duration_s: float = 60.0
    max_dimension: int = 4096
    max_fps: float = 120.0

    # Transcoding.
    ffmpeg_path: str | None = None
    x264_preset: str = "veryfast"
    ffmpeg_timeout_s: float = 900.0
    # Cap on everything one job may write: a hostile file cannot fill the disk.
    max_output_bytes: int = 2048 * MB
    # Videos whose content-feature vector is missing or of an older NAMES_VERSION are measured
    # again in the background, at most this many every 10 minutes (0: only `clipfeed features
    # refresh` does it).
    content_features_refresh_per_run: int = 20

    # Media delivery.
    signed_url_ttl_seconds: int = 3600

    # --- For You feed (online serving; see clipfeed/feed/foryou.py) --------------------------
    # Ranked ids kept per user; refilled in the background when fewer than the low-water mark remain.
    feed_queue_size: int = 100
    feed_queue_low_water: int = 30
    # A user's queue is dropped once they have sent no page for this long (their next page ranks
    # afresh): queues are held per process, and each full garbage collection walks every item.
    feed_queue_idle_s: float = 1800.0
    # Time budget of each candidate source (ms); one that overruns is dropped for that request.
    feed_source_budget_ms: dict[str, float] = Field(default_factory=lambda: {
        "following": 15.0, "collaborative": 15.0, "content": 15.0, "trending": 10.0,
        "affinity": 10.0, "exploration": 10.0})
    # Share of every refill reserved for fresh uploads with few impressions (new creators are seen).
    feed_exploration_share: float = 0.1
    # Fresh = published within this many hours and shown fewer than this many times.
    feed_exploration_hours: float = 72.0
    feed_exploration_max_views: int = 50
    # Final score = sum of weight x predicted head (completion, like, share, follow).
    feed_score_weights: dict[str, float] = Field(default_factory=lambda: {
        "completion": 1.0, "like": 2.0, "share": 3.0, "follow": 4.0})
    # Signed-in users with fewer interactions than this get the cold-start feed.
    feed_cold_start_events: int = 3
    # Videos held in the in-memory candidate pools (the most recent ones) and their refresh period.
    feed_catalog_size: int = 200_000
    feed_catalog_refresh_s: float = 30.0
    # Content-based retrieval indexes at most this many catalog videos (built in the background).
    feed_content_index_max: int = 50_000

    # --- For You models (training and registry; see clipfeed/feed/training.py) ----------------
    # Key prefix of the model registry in the blob store (versions, metrics, artifacts).
    feed_model_prefix: str = "models"
    # The periodic job retrains when the newest published model is older than this.
    feed_training_period_minutes: int = 360
    # Below this many user events there is nothing worth learning: training is skipped.
    feed_training_min_events: int = 200
    # Only the most recent events are read (bounds training time and memory).
    feed_training_max_events: int = 5_000_000
    # Share of each user's latest interactions held out to score (and gate) a new model.
    feed_training_holdout: float = 0.2
    # The ranker's training set, the ALS tuning and the holdout metrics use at most this many
    # users (a seeded sample; ALS itself still trains on every interaction). A few thousand
    # users' labels are plenty for LightGBM, and scoring every user costs tens of ms each.
    feed_training_max_users: int = 3_000
    # What the learned ranker's labels are: "outcome" — only what users were shown, labelled by
    # what they did with it (P(completion | shown)), gated on exposed AUC; "future" — a user's
    # candidates at a past cut, labelled by what they did later (unexposed candidates negative,
    # so it also learns what they will be shown), gated on holdout NDCG@20. The README's "What
    # the ranker learns" (bench/ranker_objectives.py, bench/online_loop.py) compares them.
    feed_ranker_labels: Literal["outcome", "future"] = "outcome"
    # --- Live streams and chat (clipfeed/live) ---
    # Host that encoders (OBS) reach for RTMP ingest; empty: the host of the API request.
    live_public_host: str = ""
    # A publish claim whose heartbeat is older than this is stale (its ingest died); a new publish may take it.
    live_claim_ttl_s: int = 60
    # A viewer (playlist poll or chat socket) counts until this long after they were last seen.
    live_viewer_ttl_s: int = 30
    # Chat: at most live_chat_rate messages per live_chat_window_s per user (moderators included).
    live_chat_rate: int = 5
    live_chat_window_s: int = 10
    live_chat_max_chars: int = 500
    live_chat_backlog: int = 50
    # Longest slow-mode interval a streamer may set, and longest timeout a moderator may give.
    live_chat_max_slow_mode_s: int = 600
    live_chat_max_timeout_s: int = 7 * 24 * 3600
    # Words no chat accepts (lower-case, matched as whole words); streamers add their own.
    live_chat_banned_words: list[str] = Field(default_factory=list)
    # Chat messages queued for one client that stopped reading (beyond its TCP buffers) before it is
    # disconnected (1013) to rejoin with ?after=<last id>; the room never waits for it.
    live_chat_client_queue: int = 1000

    # --- Live ingest: RTMP server, LL-HLS packager, playback (clipfeed/live/rtmp, ingest, packager) ---
    # The app runs the RTMP server in its event loop when true. `clipfeed serve` turns it on (unless
    # --no-ingest); `clipfeed ingest` runs it alone. Off by default so an app built for tests or
    # tools binds no extra port (tests set it with rtmp_port=0: any free port, see app.state.ingest).
    rtmp_enabled: bool = False
    rtmp_host: str = "127.0.0.1"
    rtmp_port: int = 1935
    # Per-connection limits: a silent client is dropped, a publishing session ends after
    # rtmp_max_session_s, a publisher above rtmp_max_kbps (averaged) is disconnected.
    rtmp_idle_timeout_s: float = 15.0
    rtmp_max_session_s: float = 4 * 3600.0
    rtmp_max_kbps: int = 25_000
    rtmp_max_connections: int = 64
    # Addresses of nginx RTMP edges (deploy/nginx-rtmp.conf) allowed to push streams their
    # on_publish hook already authorized to the application "relay" (no second key claim).
    rtmp_relay_from: list[str] = Field(default_factory=list)
    # Source video is passed through (no re-encode) when it is H.264 no larger than this
    # (long x short edge); otherwise it is re-encoded to live_top_short_edge.
    live_passthrough_max_long_edge: int = 1920
    live_passthrough_max_short_edge: int = 1080
    live_top_short_edge: int = 720
    # The rung for weak networks, encoded from the start of every stream (0: none).
    live_low_short_edge: int = 360
    live_low_video_kbps: int = 600
    # Scaling rule: once a stream has live_scale_viewers viewers it gains a middle rung (the
    # master playlist lists it for every new player).
    live_scale_viewers: int = 50
    live_scale_short_edge: int = 540
    live_scale_video_kbps: int = 1400
    # How often a publishing session refreshes its claim, checks that the stream was not ended
    # and applies the scaling rule.
    live_ingest_check_s: float = 5.0
    live_x264_preset: str = "veryfast"
    # LL-HLS: parts of ~live_part_s (ffmpeg cuts a fragment once this much is buffered; the
    # declared PART-TARGET is live_part_target_s), segments of >= live_segment_s that start on a
    # keyframe (publishers should send a keyframe every 1 s; a segment is cut without one after
    # live_max_segment_s, which is also EXT-X-TARGETDURATION), a sliding window of
    # live_window_segments segments (older files are deleted a window later).
    live_part_s: float = 0.25
    live_part_target_s: float = 0.334
    live_segment_s: float = 1.0
    live_max_segment_s: float = 2.0
    live_window_segments: int = 10
    # Playlist blocking reload (_HLS_msn/_HLS_part) waits at most this long.
    live_block_timeout_s: float = 6.0
    # The recording of one publish session (raw FLV) stops growing at this size.
    live_max_recording_bytes: int = 4096 * MB
    # Where the ingest writes LL-HLS files and recordings: a local disk of the ingest node, never the
    # blob store (parts are ~0.25 s, written 4x/s per rung, deleted a window later; an object-store
    # PUT per part would eat the latency budget). Only the finished recording goes to the blob store
    # (as the replay's source). Default: data_dir/live.
    live_dir: Path | None = None
    # A recording becomes a replay video whatever the VOD limits (max_duration_s, max_upload_bytes):
    # replays have their own duration cap, size cap (live_max_recording_bytes), transcode time
    # (ffmpeg_timeout_s, or live_replay_timeout_factor x the recording's duration when longer) and
    # output cap. Every other check of an upload applies (sniff, probe, decode, dimensions, fps).
    # Default: a publish session's longest run (rtmp_max_session_s, 4 h) plus slack for timestamps
    # that do not start at 0, so no recording the ingest accepted is refused as a replay.
    live_replay_max_s: float = 4 * 3600.0 + 300.0
    live_replay_timeout_factor: float = 3.0
    live_replay_max_output_bytes: int = 32 * 1024 * MB
    # Shared secret the nginx RTMP module's on_publish/on_publish_done hooks must send (?secret=);
    # empty: the hooks are disabled (404).
    live_hook_secret: str = ""

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard(cls, origins: list[str]) -> list[str]:
        if "*" in origins:
            raise ValueError("CLIPFEED_CORS_ORIGINS must list origins; '*' cannot be used with credentials")
        return origins

    @cached_property
    def resolved_data_dir(self) -> Path:
        path = self.data_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the plain forms people paste and pick the async drivers.
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+asyncpg://" + url.split("://", 1)[1]
            elif url.startswith("sqlite:///"):
                url = "sqlite+aiosqlite:///" + url.split(":///", 1)[1]
            return url
        return f"sqlite+aiosqlite:///{self.resolved_data_dir / 'clipfeed.sqlite3'}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def resolved_live_dir(self) -> Path:
        return (self.live_dir.expanduser().resolve() if self.live_dir else self.resolved_data_dir / "live")

    @property
    def blob_root(self) -> Path:
        if self.storage_url:
            if not self.storage_url.startswith("file://"):
                raise ValueError("only file:// storage is available in this build")
            return Path(self.storage_url[len("file://"):])
        return self.resolved_data_dir / "blobs"

    @cached_property
    def signing_key(self) -> bytes:
        if self.secret_key:
            return self.secret_key.encode()
        key_file = self.resolved_data_dir / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(48))
            key_file.chmod(0o600)
        return key_file.read_text().strip().encode()


def load_settings(**overrides) -> Settings:
    return Settings(**overrides)
