"""deploy/nginx-rtmp.conf, run by a real nginx with the RTMP module: on_publish calls the API's key
check, accepted streams are relayed to clipfeed's ingest and come out as LL-HLS."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI, LiveServer, wait_for
from tests.live.ingest_support import publish, rtmp_port, start_stream

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx-rtmp.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SECRET = "nginx-hook-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def edge(settings_factory, tmp_path):
    if not (os.access(NGINX, os.X_OK) and Path("/usr/lib/nginx/modules/ngx_rtmp_module.so").exists()):
        if IN_CI:
            pytest.fail("nginx with the RTMP module is missing: apt-get install nginx-light libnginx-mod-rtmp")
        pytest.skip("nginx with the RTMP module is missing")
    settings = settings_factory(rtmp_enabled=True, rtmp_port=0, live_hook_secret=SECRET, rtmp_relay_from=["127.0.0.1"])
    server = LiveServer(settings).start()
    nginx_port = _free_port()
    conf = CONF.read_text()
    for old, new in (("listen 1935;", f"listen 127.0.0.1:{nginx_port};"),
                     ("http://127.0.0.1:8000", server.url),
                     ("rtmp://127.0.0.1:1936", f"rtmp://127.0.0.1:{rtmp_port(server)}"),
                     ("CHANGE_ME", SECRET)):
        assert old in conf, old
        conf = conf.replace(old, new)
    (tmp_path / "nginx").mkdir()
    conf_path = tmp_path / "nginx" / "nginx.conf"
    conf_path.write_text(conf)
    log = open(tmp_path / "nginx" / "stderr.log", "wb")
    proc = subprocess.Popen([NGINX, "-p", str(tmp_path / "nginx"), "-c", str(conf_path),
                             "-g", f"daemon off; pid {tmp_path / 'nginx' / 'nginx.pid'};"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", nginx_port), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "nginx" / "stderr.log").read_text()
            time.sleep(0.05)
    yield server, nginx_port
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
    server.stop()


def test_nginx_edge_checks_keys_through_the_api_and_relays_to_the_ingest(edge, tmp_path):
    server, nginx_port = edge
    with httpx.Client(base_url=server.url, timeout=30) as http:
        stream = start_stream(http)
        refused = publish(nginx_port, "live_wrong-key", seconds=3)
        assert refused.wait(timeout=30) != 0
        assert not (server.settings.resolved_data_dir / "live").exists() \
            or not any((server.settings.resolved_data_dir / "live").iterdir())

        publisher = publish(nginx_port, stream["stream_key"], seconds=8, log=tmp_path / "pub.log")
        try:
            base = f"/media/live/{stream['stream_id']}"
            master = wait_for(lambda: (r := http.get(f"{base}/master.m3u8")).status_code == 200 and r.text,
                              timeout=30, message="LL-HLS of the relayed stream")
            assert "src/index.m3u8" in master
            assert http.get(f"/api/v1/live/{stream['stream_id']}").json()["status"] == "live"
            assert "#EXT-X-PART:" in http.get(f"{base}/src/index.m3u8").text
            # A second encoder on the same key is refused at the edge.
            second = publish(nginx_port, stream["stream_key"], seconds=3)
            assert second.wait(timeout=30) != 0
            assert publisher.wait(timeout=30) == 0
        finally:
            if publisher.poll() is None:
                publisher.kill()
        wait_for(lambda: http.get(f"/api/v1/live/{stream['stream_id']}").json()["status"] == "idle",
                 timeout=30, message="stream idle after on_publish_done")
        ingest = server.app.state.ingest
        wait_for(lambda: ingest.ended_log, timeout=30, message="the relay session ended")
        assert ingest.ended_log[-1][1] is not None  # the relayed stream was recorded
