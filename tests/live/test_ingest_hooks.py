"""The nginx RTMP module's hooks: form-encoded on_publish / on_publish_done -> the same key check."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import LiveServer
from tests.live.ingest_support import start_stream

SECRET = "hook-secret-for-tests"


@pytest.fixture
def hook_server(settings_factory):
    server = LiveServer(settings_factory(live_hook_secret=SECRET)).start()
    yield server
    server.stop()


def _hook(http: httpx.Client, name: str, key: str, secret: str = SECRET, app: str = "live") -> httpx.Response:
    # What nginx-rtmp sends: application/x-www-form-urlencoded with call, app, name, addr, ...
    return http.post(f"/api/v1/live/hooks/{name}", params={"secret": secret},
                     data={"call": name.replace("on_", ""), "app": app, "name": key, "addr": "203.0.113.7",
                           "type": "live", "flashver": "FMLE/3.0"})


def test_on_publish_checks_the_key_and_on_publish_done_releases_it(hook_server):
    with httpx.Client(base_url=hook_server.url, timeout=30) as http:
        stream = start_stream(http)
        key, stream_id = stream["stream_key"], stream["stream_id"]

        assert _hook(http, "on_publish", key, secret="wrong").status_code == 403
        refused = _hook(http, "on_publish", "live_not-a-key")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "publish_refused"
        assert _hook(http, "on_publish", key, app="other").status_code == 403

        accepted = _hook(http, "on_publish", key)
        assert accepted.status_code == 200, accepted.text
        assert http.get(f"/api/v1/live/{stream_id}").json()["status"] == "live"
        second = _hook(http, "on_publish", key)
        assert second.status_code == 403 and "already being published" in second.json()["error"]["message"]

        assert _hook(http, "on_publish_done", key).status_code == 200
        assert http.get(f"/api/v1/live/{stream_id}").json()["status"] == "idle"
        assert _hook(http, "on_publish_done", "live_not-a-key").status_code == 404
        # The encoder may come back on the same key.
        assert _hook(http, "on_publish", key).status_code == 200

        assert http.post(f"/api/v1/live/{stream_id}/end", headers=stream["owner"]["headers"]).status_code == 200
        _hook(http, "on_publish_done", key)
        ended = _hook(http, "on_publish", key)
        assert ended.status_code == 403 and "ended" in ended.json()["error"]["message"]


def test_hooks_do_not_exist_without_a_secret(client, settings):
    assert not settings.live_hook_secret
    response = client.post("/api/v1/live/hooks/on_publish", data={"name": "anything"})
    assert response.status_code == 404
