"""@mentions in captions notify the mentioned users once, when they can see the video — through
the real server (and, for uploads, the real pipeline), on every backend."""

from __future__ import annotations

import pytest

from clipfeed.social.models import Notification
from tests.conftest import register
from tests.media.test_pipeline import tus_upload, wait_settled
from tests.mediagen import make_clip
from tests.social import factories as f


def _mentions(settings, person) -> int:
    return f.count(settings, Notification, user_id=person["user"]["id"], kind="mention")


def _patch(client, video_id, owner, **body):
    response = client.patch(f"/api/v1/videos/{video_id}", json=body, headers=owner["headers"])
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def people(client):
    return {name: register(client) for name in ("owner", "alice", "bob", "carol", "blocked", "blocker", "dave")}


def test_caption_edits_notify_each_mentioned_user_once(client, live_server, people):
    settings = live_server.settings
    owner, alice, bob, carol = people["owner"], people["alice"], people["bob"], people["carol"]
    f.block(settings, owner["user"]["id"], people["blocked"]["user"]["id"])  # the owner blocked them
    f.block(settings, people["blocker"]["user"]["id"], owner["user"]["id"])  # they blocked the owner
    video_id = f.make_video(settings, owner["user"]["id"], caption="first take")
    handle = {name: person["user"]["handle"] for name, person in people.items()}

    caption = (f"with @{handle['alice']} and @{handle['bob'].upper()} @{handle['alice']} "
               f"@{handle['blocked']} @{handle['blocker']} @{handle['owner']} @nosuchhandle")
    _patch(client, video_id, owner, caption=caption)
    assert (_mentions(settings, alice), _mentions(settings, bob)) == (1, 1)
    assert _mentions(settings, people["blocked"]) == 0 and _mentions(settings, people["blocker"]) == 0
    assert _mentions(settings, owner) == 0  # not self
    inbox = client.get("/api/v1/notifications", headers=alice["headers"]).json()["items"]
    mention = next(item for item in inbox if item["kind"] == "mention")
    assert mention["video_id"] == video_id and mention["actor"]["id"] == owner["user"]["id"]
    assert mention["comment_id"] is None

    # The same caption again, a typo fix, a visibility change: nobody is told twice.
    _patch(client, video_id, owner, caption=caption)
    _patch(client, video_id, owner, caption=caption + " (edited)")
    _patch(client, video_id, owner, visibility="unlisted")
    assert (_mentions(settings, alice), _mentions(settings, bob)) == (1, 1)
    # A newly added handle is told; the others still once.
    _patch(client, video_id, owner, caption=f"{caption} @{handle['carol']}")
    assert (_mentions(settings, alice), _mentions(settings, bob), _mentions(settings, carol)) == (1, 1, 1)


def test_hidden_videos_mention_nobody_until_visible(client, live_server, people):
    settings = live_server.settings
    owner, alice, dave = people["owner"], people["alice"], people["dave"]
    handle_alice, handle_dave = alice["user"]["handle"], dave["user"]["handle"]
    private_id = f.make_video(settings, owner["user"]["id"], visibility="private")
    _patch(client, private_id, owner, caption=f"secret @{handle_alice}")
    assert _mentions(settings, alice) == 0
    # Followers-only: only a follower learns of it.
    f.follow(settings, dave["user"]["id"], owner["user"]["id"])
    _patch(client, private_id, owner, visibility="followers", caption=f"friends @{handle_alice} @{handle_dave}")
    assert (_mentions(settings, alice), _mentions(settings, dave)) == (0, 1)
    # Made public: the ones who could not see it before are told now, once.
    _patch(client, private_id, owner, visibility="public")
    assert (_mentions(settings, alice), _mentions(settings, dave)) == (1, 1)
    # A video still processing notifies nobody (its upload path notifies once it is ready).
    processing_id = f.make_video(settings, owner["user"]["id"], status="processing", progress=10.0)
    _patch(client, processing_id, owner, caption=f"soon @{people['bob']['user']['handle']}")
    assert _mentions(settings, people["bob"]) == 0


def test_a_caption_given_at_upload_notifies_when_the_video_is_ready(client, live_server, people, tmp_path):
    settings = live_server.settings
    owner, alice = people["owner"], people["alice"]
    clip = make_clip(tmp_path / "clip.mp4", width=360, height=640, seconds=2)
    video_id = tus_upload(str(client.base_url), owner["headers"], clip,
                          caption=f"look @{alice['user']['handle']} #firstupload")
    video = wait_settled(client, video_id, owner["headers"])
    assert video["status"] == "ready", video
    assert _mentions(settings, alice) == 1
    inbox = client.get("/api/v1/notifications", headers=alice["headers"]).json()["items"]
    assert [item["video_id"] for item in inbox if item["kind"] == "mention"] == [video_id]
