"""Shared fixtures: settings per backend, a real uvicorn server, an HTTP client, users.

Backends: SQLite + SQLite-backed Huey always; PostgreSQL + Redis-backed Huey when reachable,
and always under CI=true, where an unreachable server is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn

from clipfeed.app import create_app
from clipfeed.config import Settings
from clipfeed.db import Database
from clipfeed.db.migrate import upgrade

PG_URL = os.environ.get("CLIPFEED_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CLIPFEED_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _backends() -> list[str]:
    if IN_CI or (_reachable("127.0.0.1", 5432) and _reachable("127.0.0.1", 6379)):
        return ["sqlite", "postgres"]
    return ["sqlite"]


def pytest_report_header(config):
    return f"clipfeed backends: {', '.join(_backends())} (CI={IN_CI})"


def _pg_exec(sql: str) -> None:
    import asyncpg

    async def run():
        conn = await asyncpg.connect(PG_URL.replace("+asyncpg", ""))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _flush_redis_queue(name: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"huey*{name}*"):
        client.delete(key)
    client.close()


@pytest.fixture(params=_backends())
def backend(request) -> str:
    return request.param


def make_settings(backend: str, data_dir: Path, **overrides) -> Settings:
    """Settings for one isolated clipfeed: its own data dir, schema and queue name."""
    suffix = uuid.uuid4().hex[:10]
    values: dict = dict(data_dir=data_dir, queue_name=f"test-{suffix}", secret_key="test-secret",
                        login_window_seconds=60, job_lease_seconds=5)
    if backend == "postgres":
        if not (_reachable("127.0.0.1", 5432) and _reachable("127.0.0.1", 6379)):
            pytest.fail("CI=true: PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) must be reachable")
        schema = f"t_{suffix}"
        _pg_exec(f'CREATE SCHEMA "{schema}"')
        values.update(database_url=PG_URL, database_schema=schema, redis_url=REDIS_URL)
    values.update(overrides)
    return Settings(**values)


def drop_backend(settings: Settings) -> None:
    if settings.database_schema:
        _pg_exec(f'DROP SCHEMA IF EXISTS "{settings.database_schema}" CASCADE')
    if settings.redis_url:
        _flush_redis_queue(settings.queue_name)


@pytest.fixture
def settings_factory(backend, tmp_path):
    created: list[Settings] = []

    def factory(**overrides) -> Settings:
        settings = make_settings(backend, tmp_path / f"data{len(created)}", **overrides)
        upgrade(settings)
        created.append(settings)
        return settings

    yield factory
    for settings in created:
        drop_backend(settings)


@pytest.fixture
def settings(settings_factory) -> Settings:
    return settings_factory()


class LiveServer:
    """create_app(settings) served by a real uvicorn on a free loopback port, in a thread."""

    def __init__(self, settings: Settings, *, run_workers: bool = True, store=None, ws: str = "auto"):
        self.settings = settings
        self.app = create_app(settings, run_workers=run_workers, store=store)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2, ws=ws)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@pytest.fixture
def live_server(settings):
    server = LiveServer(settings).start()
    yield server
    server.stop()


@pytest.fixture
def client(live_server):
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        yield http


def register(client: httpx.Client, handle: str | None = None, password: str = "correct horse 42") -> dict:
    """Create a user through the API; returns {"user", "token", "headers"}."""
    handle = handle or f"u{uuid.uuid4().hex[:10]}"
    response = client.post("/api/v1/auth/register", json={"handle": handle, "password": password})
    assert response.status_code == 201, response.text
    # Tests authenticate explicitly; a cookie left in the shared client would make every
    # later "anonymous" request silently act as this user.
    client.cookies.clear()
    body = response.json()
    body["headers"] = {"Authorization": f"Bearer {body['token']}"}
    body["password"] = password
    return body


@pytest.fixture
def user(client):
    return register(client)


def db_run(settings: Settings, work):
    """Run `await work(session)` in one committed transaction on a throwaway engine (from a test
    thread, as another process would); returns its result."""

    async def main():
        db = Database(settings, pooled=False)
        try:
            async with db.transaction() as session:
                return await work(session)
        finally:
            await db.dispose()

    return asyncio.run(main())


def wait_for(predicate, *, timeout: float = 60, interval: float = 0.1, message: str = "condition"):
    """Poll a condition (a real state change we cannot subscribe to) with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
