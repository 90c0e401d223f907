"""Cross-process fan-out: two `clipfeed serve --no-workers` processes on one PostgreSQL + Redis
share one chat room (Redis pub/sub); flood control and moderation hold across them.

Needs PostgreSQL and Redis by nature (the embedded shape is one process), so it runs on them
whatever the backend parameter; unreachable servers fail the test, never skip it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from pathlib import Path

import httpx
import pytest

from clipfeed.db.migrate import upgrade
from tests.conftest import drop_backend, make_settings, register, wait_for
from tests.live.test_chat import Chat, said, start_stream

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    def __init__(self, settings, data_dir: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CLIPFEED_DATA_DIR": str(data_dir), "CLIPFEED_HOST": "127.0.0.1",
               "CLIPFEED_PORT": str(self.port), "CLIPFEED_DATABASE_URL": settings.database_url,
               "CLIPFEED_DATABASE_SCHEMA": settings.database_schema, "CLIPFEED_REDIS_URL": settings.redis_url,
               "CLIPFEED_QUEUE_NAME": settings.queue_name, "CLIPFEED_SECRET_KEY": "test-secret",
               "CLIPFEED_RTMP_PORT": str(_free_port())}
        self.log = open(data_dir / "server.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "clipfeed.cli", "serve", "--no-workers", "--no-migrate"],
                                     env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited; see {self.log.name}: {Path(self.log.name).read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=60, message="a clipfeed server process")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def two_servers(tmp_path):
    settings = make_settings("postgres", tmp_path / "shared")
    upgrade(settings)
    servers = [ServeProcess(settings, tmp_path / f"proc{n}") for n in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()
        drop_backend(settings)


def test_two_processes_share_one_room(two_servers):
    a, b = two_servers
    with httpx.Client(base_url=a.url, timeout=30) as http_a, httpx.Client(base_url=b.url, timeout=30) as http_b:
        owner, alice, bob = register(http_a), register(http_a), register(http_b)
        stream_id = start_stream(http_a, owner)
        assert http_b.get(f"/api/v1/live/{stream_id}").status_code == 200
        on_a = Chat(a.url, stream_id)
        alice_on_b = Chat(b.url, stream_id, alice["token"])
        bob_on_a = Chat(a.url, stream_id, bob["token"])
        try:
            alice_on_b.say("sent on B")
            assert on_a.wait_for(said("sent on B"))["user"]["id"] == alice["user"]["id"]
            bob_on_a.say("sent on A")
            alice_on_b.wait_for(said("sent on A"))

            # The per-user limit is shared: 3 messages via B plus 2 via A, then the 6th is refused.
            alice_on_a = Chat(a.url, stream_id, alice["token"])
            for n in range(2):
                alice_on_b.say(f"b{n}")
            for n in range(2):
                alice_on_a.say(f"a{n}")
                alice_on_a.wait_for(said(f"a{n}"))
            alice_on_b.say("flood")
            alice_on_b.error("rate_limited")

            # A ban issued on process A is enforced on process B at once.
            owner_on_a = Chat(a.url, stream_id, owner["token"])
            owner_on_a.send(type="ban", user_id=bob["user"]["id"])
            bob_on_a.wait_for(lambda f: f["type"] == "user_banned")
            bob_on_a.say("banned on A")
            bob_on_a.error("banned")
            bob_on_b = Chat(b.url, stream_id, bob["token"])
            bob_on_b.say("evading")
            bob_on_b.error("banned")
            owner_on_a.say("marker")
            alice_on_b.wait_for(said("marker"))
            assert "evading" not in [m["text"] for m in on_a.messages()]
            # The backlog is the same from either process (messages reach the database in batches
            # up to 50 ms after they were fanned out, so the other process may see the last one late).
            def backlog_on_b():
                chat = Chat(b.url, stream_id)
                chat.close()
                texts = [m["text"] for m in chat.backlog]
                return texts if texts and texts[-1] == "marker" else None

            on_b = wait_for(backlog_on_b, timeout=10, message="process B's backlog to include the marker")
            assert on_b == [m["text"] for m in Chat(a.url, stream_id).backlog]
            # Ids order by millisecond across processes, so only same-process order is strict.
            assert sorted(on_b) == sorted(["sent on B", "sent on A", "b0", "b1", "a0", "a1", "marker"])
            assert on_b.index("b0") < on_b.index("b1") and on_b.index("a0") < on_b.index("a1")
        finally:
            for chat in (on_a, alice_on_b, bob_on_a):
                chat.close()

