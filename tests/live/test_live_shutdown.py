"""Redis clients opened by live code (presence from playlist polls and chat, the ingest's viewer
count and claim announcements, the nginx hooks) are closed when the app shuts down: Redis lists
no connection of theirs from this process afterwards, and collecting them warns of nothing."""

from __future__ import annotations

import gc
import warnings

import httpx
import psutil
import pytest
import redis

from tests.conftest import LiveServer, wait_for
from tests.live.ingest_support import publish, rtmp_port, start_stream


LIVE_CLIENTS = ("clipfeed-presence", "clipfeed-pubsub")


def _live_connections(url: str, names=LIVE_CLIENTS) -> list[dict]:
    """Connections Redis sees from this process's sockets under the live clients' names."""
    ports = {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
             if c.raddr and c.raddr.port == 6379 and c.status == psutil.CONN_ESTABLISHED}
    with redis.Redis.from_url(url) as admin:
        return [c for c in admin.client_list() if c.get("name") in names
                and int(c["addr"].rsplit(":", 1)[1]) in ports]


def test_live_redis_clients_are_closed_at_shutdown(settings_factory, tmp_path):
    settings = settings_factory(rtmp_enabled=True, rtmp_port=0, live_ingest_check_s=0.5)
    if not settings.redis_url:
        pytest.skip("embedded backend: live code opens no Redis client")
    # Whatever earlier tests left for the collector goes now, so what this test collects after
    # its own server's shutdown is the server's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    server = LiveServer(settings).start()
    stopped = False
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            stream = start_stream(http)
            base = f"/media/live/{stream['stream_id']}"
            publisher = publish(rtmp_port(server), stream["stream_key"], seconds=3, size="320x240",
                                log=tmp_path / "pub.log")
            try:
                wait_for(lambda: http.get(f"{base}/src/index.m3u8").status_code == 200, timeout=30,
                         message="the playlist")
                # A viewer (presence, async client) seen by the ingest's scaling check (sync client).
                wait_for(lambda: http.get(f"/api/v1/live/{stream['stream_id']}").json()["viewers"] == 1,
                         timeout=10, message="the viewer counted in Redis")
                assert publisher.wait(timeout=30) == 0
            finally:
                if publisher.poll() is None:
                    publisher.kill()
            wait_for(lambda: server.app.state.ingest.ended_log, timeout=30, message="publish_ended")
            # The replay's job announces "video_ready" through the shared publisher when it ends: let
            # it end first (a job still running at shutdown would publish on a fresh connection
            # after the app closed its clients).
            replay = {}

            def replay_settled() -> bool:
                replay_id = http.get(f"/api/v1/live/{stream['stream_id']}").json().get("replay_video_id")
                if replay_id:
                    replay.update(http.get(f"/api/v1/videos/{replay_id}").json())
                return replay.get("status") in ("ready", "rejected", "failed")

            wait_for(replay_settled, timeout=120, message="the replay's processing to end")
        names = {c["name"] for c in _live_connections(settings.redis_url)}
        assert names == set(LIVE_CLIENTS), names  # both kinds were open while live
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            server.stop()
            stopped = True
            gc.collect()
        assert _live_connections(settings.redis_url, LIVE_CLIENTS + ("clipfeed-chat",)) == []
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)
                 and ("Connection" in str(w.message) or "client" in str(w.message).lower())]
        assert leaks == [], leaks
    finally:
        if not stopped:
            server.stop()
