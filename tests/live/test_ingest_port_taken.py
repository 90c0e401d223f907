"""`clipfeed serve` with its RTMP port already taken keeps serving the app (live publishing off)."""

from __future__ import annotations

import logging
import socket

import httpx

from tests.conftest import LiveServer


def test_serve_without_ingest_when_the_rtmp_port_is_taken(settings_factory, caplog):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="clipfeed"):
            server = LiveServer(settings_factory(rtmp_enabled=True, rtmp_port=port), run_workers=False).start()
        try:
            assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
            assert server.app.state.ingest is None
            assert any("RTMP ingest not started" in r.getMessage() and str(port) in r.getMessage()
                       for r in caplog.records), caplog.text
        finally:
            server.stop()
