"""Settings: the only place defaults live. Everything reads a Settings instance, never the environment."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path

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

    # Media delivery.
    signed_url_ttl_seconds: int = 3600

    # --- For You feed (online serving; see clipfeed/feed/foryou.py) --------------------------
    # Ranked ids kept per user; refilled in the background when fewer than the low-water mark remain.
    feed_queue_size: int = 100
    feed_queue_low_water: int = 30
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
