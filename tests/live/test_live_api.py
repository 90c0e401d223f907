"""Live stream API and the publish seam: authorization matrix, key shown once, rotation, end."""

from __future__ import annotations

import asyncio

import pytest

from clipfeed.db import Database
from clipfeed.live import service as live
from tests.conftest import register


def _run(settings, fn):
    """Run fn(session) in its own transaction on a fresh engine (as the ingest process would)."""

    async def go():
        db = Database(settings, pooled=False)
        try:
            async with db.transaction() as session:
                return await fn(session)
        finally:
            await db.dispose()

    return asyncio.run(go())


def _authorize(settings, key):
    return _run(settings, lambda session: live.authorize_publish(session, key))


def _refused(settings, key) -> str:
    with pytest.raises(live.PublishRefused) as refused:
        _authorize(settings, key)
    return refused.value.reason


def test_publish_claim_key_rotation_and_end(client, settings):
    owner = register(client)
    started = client.post("/api/v1/live/start", json={"title": "hello"}, headers=owner["headers"])
    assert started.status_code == 201, started.text
    body = started.json()
    key, stream_id = body["stream_key"], body["stream_id"]
    assert body["ingest_url"].startswith("rtmp://") and body["ingest_url"].endswith("/live")

    # The key is shown once: never in the stream's state, not even to the owner.
    state = client.get(f"/api/v1/live/{stream_id}", headers=owner["headers"]).json()
    assert "stream_key" not in state and key not in str(state)
    assert state["status"] == "idle"

    stream = _authorize(settings, key)
    assert stream.id == stream_id and stream.status == "live"
    assert "already being published" in _refused(settings, key)
    assert client.get(f"/api/v1/live/{stream_id}").json()["status"] == "live"

    _run(settings, lambda session: live.publish_ended(session, stream_id, None))
    assert client.get(f"/api/v1/live/{stream_id}").json()["status"] == "idle"

    rotated = client.post(f"/api/v1/live/{stream_id}/rotate-key", headers=owner["headers"])
    assert rotated.status_code == 200
    new_key = rotated.json()["stream_key"]
    assert new_key != key
    assert "unknown stream key" in _refused(settings, key)
    assert _authorize(settings, new_key).status == "live"

    ended = client.post(f"/api/v1/live/{stream_id}/end", headers=owner["headers"])
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    _run(settings, lambda session: live.publish_ended(session, stream_id, None))
    assert client.get(f"/api/v1/live/{stream_id}").json()["status"] == "ended"
    assert "ended" in _refused(settings, new_key)
    assert "unknown stream key" in _refused(settings, "live_nonsense")
