"""Likes, views, shares, hashtag and sound pages through the real server, on every backend."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from clipfeed.social.models import InteractionEvent, Like, Notification, Share
from tests.conftest import LiveServer, register
from tests.social import factories as f

ANON: dict = {}


@pytest.fixture
def people(client, live_server):
    """owner, other, blocked (blocked by the owner)."""
    owner, other, blocked = (register(client) for _ in range(3))
    f.block(live_server.settings, owner["user"]["id"], blocked["user"]["id"])
    return {"owner": owner, "other": other, "blocked": blocked}


def _video(client, video_id, headers=ANON) -> dict:
    response = client.get(f"/api/v1/videos/{video_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


# --- authorization matrix --------------------------------------------------------------------

# Expected status per endpoint for (anonymous, other, blocked, owner).
PUBLIC = {
    "like": (401, 200, 404, 200),
    "unlike": (401, 200, 404, 200),
    "view": (200, 200, 404, 200),
    "share": (200, 200, 404, 200),
    "comment": (401, 201, 404, 201),
    "comments": (200, 200, 404, 200),
    "analytics": (401, 403, 404, 200),
}
PRIVATE = {
    "like": (401, 404, 404, 200),
    "unlike": (401, 404, 404, 200),
    "view": (404, 404, 404, 200),
    "share": (404, 404, 404, 403),
    "comment": (401, 404, 404, 201),
    "comments": (404, 404, 404, 200),
    "analytics": (401, 404, 404, 200),
}
UNKNOWN = {name: tuple(401 if code == 401 else 404 for code in codes) for name, codes in PUBLIC.items()}


def _call(client, name: str, video_id: str, headers: dict) -> httpx.Response:
    base = f"/api/v1/videos/{video_id}"
    if name == "like":
        return client.post(f"{base}/like", headers=headers)
    if name == "unlike":
        return client.delete(f"{base}/like", headers=headers)
    if name == "view":
        return client.post(f"{base}/view", json={"watch_ms": 3000}, headers=headers)
    if name == "share":
        return client.post(f"{base}/share", json={}, headers=headers)
    if name == "comment":
        return client.post(f"{base}/comment", json={"text": "hi"}, headers=headers)
    if name == "comments":
        return client.get(f"{base}/comments", headers=headers)
    return client.get(f"{base}/analytics", headers=headers)


@pytest.mark.parametrize("case", ["public", "private", "unknown"])
def test_authorization_matrix(client, live_server, people, case):
    owner_id = people["owner"]["user"]["id"]
    if case == "unknown":
        video_id, expected = "nosuchvideo00000", UNKNOWN
    else:
        video_id = f.make_video(live_server.settings, owner_id, visibility=case)
        expected = PUBLIC if case == "public" else PRIVATE
    callers = [ANON, people["other"]["headers"], people["blocked"]["headers"], people["owner"]["headers"]]
    failures = []
    for name, codes in expected.items():
        for who, headers, code in zip(("anonymous", "other", "blocked", "owner"), callers, codes):
            response = _call(client, name, video_id, headers)
            if response.status_code != code:
                failures.append(f"{name} as {who}: {response.status_code} != {code} ({response.text[:120]})")
            elif code >= 400:
                assert response.json()["error"]["code"], response.text
    assert not failures, "\n".join(failures)


def test_followers_only_and_unlisted_share_rules(client, live_server, people):
    owner = people["owner"]
    followers_only = f.make_video(live_server.settings, owner["user"]["id"], visibility="followers")
    response = client.post(f"/api/v1/videos/{followers_only}/share", headers=owner["headers"])
    assert response.status_code == 403 and response.json()["error"]["code"] == "not_shareable"
    assert "followers-only" in response.json()["error"]["message"]
    assert client.post(f"/api/v1/videos/{followers_only}/share", headers=people["other"]["headers"]).status_code == 404
    # A follower sees it and may like and comment, but there is no public link to give out.
    follower = people["other"]
    f.follow(live_server.settings, follower["user"]["id"], owner["user"]["id"])
    assert client.post(f"/api/v1/videos/{followers_only}/like", headers=follower["headers"]).status_code == 200
    assert client.post(f"/api/v1/videos/{followers_only}/comment", json={"text": "hey"},
                       headers=follower["headers"]).status_code == 201
    response = client.post(f"/api/v1/videos/{followers_only}/share", headers=follower["headers"])
    assert response.status_code == 403 and response.json()["error"]["code"] == "not_shareable"
    assert client.get(f"/v/{followers_only}", headers=follower["headers"]).status_code == 404
    unlisted = f.make_video(live_server.settings, owner["user"]["id"], visibility="unlisted")
    response = client.post(f"/api/v1/videos/{unlisted}/share", json={"channel": "whatsapp"})
    assert response.status_code == 200, response.text
    assert response.json()["share_url"] == f"{live_server.url}/v/{unlisted}"
    private = f.make_video(live_server.settings, owner["user"]["id"], visibility="private")
    response = client.post(f"/api/v1/videos/{private}/share", headers=owner["headers"])
    assert response.status_code == 403 and response.json()["error"]["code"] == "not_shareable"
    assert "private" in response.json()["error"]["message"]


# --- likes -----------------------------------------------------------------------------------

def test_like_is_idempotent_counts_and_notifies_once(client, live_server, people):
    owner, fan = people["owner"], people["other"]
    video_id = f.make_video(live_server.settings, owner["user"]["id"])
    path = f"/api/v1/videos/{video_id}/like"
    for _ in range(3):
        response = client.post(path, headers=fan["headers"])
        assert response.status_code == 200 and response.json() == {"liked": True, "like_count": 1}
    assert _video(client, video_id, fan["headers"])["liked"] is True
    assert _video(client, video_id, owner["headers"])["liked"] is False
    anonymous = _video(client, video_id)
    assert anonymous["liked"] is False and anonymous["like_count"] == 1
    assert f.count(live_server.settings, Notification, user_id=owner["user"]["id"], kind="like") == 1
    assert f.count(live_server.settings, InteractionEvent, video_id=video_id, kind="like") == 1
    # The owner may like their own video; no notification for it.
    assert client.post(path, headers=owner["headers"]).json()["like_count"] == 2
    assert f.count(live_server.settings, Notification, user_id=owner["user"]["id"], kind="like") == 1
    for _ in range(2):
        response = client.delete(path, headers=fan["headers"])
        assert response.status_code == 200 and response.json() == {"liked": False, "like_count": 1}
    assert _video(client, video_id, fan["headers"])["liked"] is False
    listing = client.get(f"/api/v1/users/{owner['user']['id']}/videos", headers=owner["headers"]).json()
    assert listing["items"][0]["liked"] is True and listing["items"][0]["like_count"] == 1


def test_fifty_concurrent_likes_from_fifty_users_count_exactly(live_server):
    settings = live_server.settings
    owner = f.make_users(settings, 1)[0]
    fans = f.make_users(settings, 50)
    video_id = f.make_video(settings, owner["user"]["id"])
    barrier = threading.Barrier(50)

    def hit(method: str, fan: dict) -> int:
        with httpx.Client(base_url=live_server.url, timeout=60) as http:
            barrier.wait()
            return http.request(method, f"/api/v1/videos/{video_id}/like", headers=fan["headers"]).status_code

    for method, expected in (("POST", 50), ("POST", 50), ("DELETE", 0)):
        with ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(pool.map(lambda fan: hit(method, fan), fans))
        assert statuses == [200] * 50
        with httpx.Client(base_url=live_server.url) as http:
            assert http.get(f"/api/v1/videos/{video_id}").json()["like_count"] == expected
        assert f.count(settings, Like, video_id=video_id) == expected
    assert f.count(settings, InteractionEvent, video_id=video_id, kind="like") == 50
    assert f.count(settings, Notification, user_id=owner["user"]["id"], kind="like") == 50


def test_likes_are_rate_limited_with_retry_after(settings_factory):
    server = LiveServer(settings_factory(likes_per_minute=3)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:

            def burst():
                owner, fan = f.make_users(server.settings, 2)
                path = f"/api/v1/videos/{f.make_video(server.settings, owner['user']['id'])}/like"
                codes = [http.post(path, headers=fan["headers"]).status_code for _ in range(4)]
                limited = http.delete(path, headers=fan["headers"])
                # Per user: someone else still can.
                return codes, limited, http.post(path, headers=owner["headers"]).status_code

            codes, limited, others = f.in_one_window(burst)
            assert codes == [200, 200, 200, 429]
            assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
            assert limited.json()["error"]["code"] == "rate_limited"
            assert others == 200
    finally:
        server.stop()


# --- views -----------------------------------------------------------------------------------

def test_views_are_validated_against_the_duration(client, live_server, user):
    video_id = f.make_video(live_server.settings, user["user"]["id"], duration_ms=10_000)
    path = f"/api/v1/videos/{video_id}/view"

    def field_of(response):
        assert response.status_code == 422, response.text
        return response.json()["error"].get("field")

    assert field_of(client.post(path, json={"watch_ms": 11_001})) == "watch_ms"
    assert field_of(client.post(path, json={"watch_ms": 101_001, "replay": True})) == "watch_ms"
    assert field_of(client.post(path, json={"watch_ms": -1})) == "watch_ms"
    assert field_of(client.post(path, json={"completed": True})) == "watch_ms"
    assert field_of(client.post(path, json={"watch_ms": "lots"})) == "watch_ms"
    bad_json = client.post(path, content=b"{nope", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 422 and bad_json.json()["error"]["code"] == "validation_error"

    assert client.post(path, json={"watch_ms": 11_000, "completed": True}).json() == {"kind": "view", "view_count": 1}
    assert client.post(path, json={"watch_ms": 45_000, "replay": True, "completed": True}).json()["kind"] == "view"
    assert client.post(path, json={"watch_ms": 1_500}).json() == {"kind": "skip", "view_count": 3}
    assert client.post(path, json={"watch_ms": 1_500, "completed": True}).json()["kind"] == "view"
    assert _video(client, video_id)["view_count"] == 4
    assert f.count(live_server.settings, InteractionEvent, video_id=video_id, kind="skip") == 1
    # Not playable yet: nothing to have watched.
    processing = f.make_video(live_server.settings, user["user"]["id"], status="processing", duration_ms=None)
    response = client.post(f"/api/v1/videos/{processing}/view", json={"watch_ms": 0}, headers=user["headers"])
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_ready"


# --- shares ----------------------------------------------------------------------------------

def test_share_returns_an_absolute_link_and_counts(client, live_server, people):
    video_id = f.make_video(live_server.settings, people["owner"]["user"]["id"])
    response = client.post(f"/api/v1/videos/{video_id}/share", json={"channel": "Copy_Link"},
                           headers=people["other"]["headers"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"share_url": f"{live_server.url}/v/{video_id}", "share_count": 1, "channel": "copy_link"}
    assert client.post(f"/api/v1/videos/{video_id}/share").json()["share_count"] == 2  # anonymous, no body
    bad = client.post(f"/api/v1/videos/{video_id}/share", json={"channel": "<b>"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "channel"
    assert _video(client, video_id)["share_count"] == 2
    assert f.count(live_server.settings, Share, video_id=video_id) == 2
    assert f.count(live_server.settings, InteractionEvent, video_id=video_id, kind="share") == 2
    assert client.get(body["share_url"]).status_code == 200


def test_share_url_uses_the_public_base_url(settings_factory):
    server = LiveServer(settings_factory(public_base_url="https://clips.example.org/")).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            owner = f.make_users(server.settings, 1)[0]
            video_id = f.make_video(server.settings, owner["user"]["id"])
            response = http.post(f"/api/v1/videos/{video_id}/share", headers=owner["headers"])
            assert response.json()["share_url"] == f"https://clips.example.org/v/{video_id}"
    finally:
        server.stop()


# --- hashtags --------------------------------------------------------------------------------

def _tag_page(client, tag, headers=ANON, **params):
    return client.get(f"/api/v1/hashtags/{tag}/videos", params=params, headers=headers)


def test_hashtag_pages_follow_captions_and_visibility(client, live_server, people):
    owner, other = people["owner"], people["other"]
    settings = live_server.settings
    first = f.make_video(settings, owner["user"]["id"])
    second = f.make_video(settings, owner["user"]["id"])
    hidden = f.make_video(settings, owner["user"]["id"], visibility="private")
    for video_id, caption in ((first, "morning #Café and #日本"), (second, "#CAFÉ again #Ünïcödé"),
                              (hidden, "secret #café")):
        assert client.patch(f"/api/v1/videos/{video_id}", json={"caption": caption},
                            headers=owner["headers"]).status_code == 200
    page = _tag_page(client, "café").json()
    assert page["tag"] == "café" and page["video_count"] == 3
    assert [item["id"] for item in page["items"]] == [second, first]  # newest first; private not listed
    assert _tag_page(client, "%23CAF%C3%89").json()["items"] == page["items"]  # '#CAFÉ' in the path
    assert [i["id"] for i in _tag_page(client, "ünïcödé").json()["items"]] == [second]
    assert [i["id"] for i in _tag_page(client, "ÜNÏCÖDÉ").json()["items"]] == [second]
    assert [i["id"] for i in _tag_page(client, "日本").json()["items"]] == [first]
    # Followers-only videos are listed to followers only.
    for_followers = f.make_video(settings, owner["user"]["id"], visibility="followers")
    client.patch(f"/api/v1/videos/{for_followers}", json={"caption": "#café club"}, headers=owner["headers"])
    assert for_followers not in [i["id"] for i in _tag_page(client, "café", other["headers"]).json()["items"]]
    f.follow(settings, other["user"]["id"], owner["user"]["id"])
    assert _tag_page(client, "café", other["headers"]).json()["items"][0]["id"] == for_followers
    client.delete(f"/api/v1/videos/{for_followers}", headers=owner["headers"])
    # Blocked users see none of the owner's videos.
    assert _tag_page(client, "café", people["blocked"]["headers"]).json()["items"] == []
    # Cursor pagination.
    one = _tag_page(client, "café", limit=1).json()
    two = _tag_page(client, "café", limit=1, cursor=one["next_cursor"]).json()
    assert [one["items"][0]["id"], two["items"][0]["id"]] == [second, first] and two["next_cursor"] is None
    # Editing and deleting keep the count exact.
    client.patch(f"/api/v1/videos/{first}", json={"caption": "no tags now"}, headers=owner["headers"])
    assert _tag_page(client, "café").json()["video_count"] == 2
    assert _tag_page(client, "日本").json()["video_count"] == 0
    assert client.delete(f"/api/v1/videos/{second}", headers=owner["headers"]).status_code == 204
    assert _tag_page(client, "café").json()["video_count"] == 1
    assert _tag_page(client, "café", other["headers"]).json()["items"] == []  # only the private one is left
    assert _tag_page(client, "nosuchtag").status_code == 404
    assert _tag_page(client, "bad tag").status_code == 404
    assert client.get("/api/v1/hashtags/café").json() == {"tag": "café", "video_count": 1}


def test_captions_given_at_upload_are_tagged(client, live_server, user):
    caption = base64.b64encode("new clip #FromUpload".encode()).decode()
    response = client.post("/api/v1/uploads", headers={**user["headers"], "Tus-Resumable": "1.0.0",
                                                       "Upload-Length": "10", "Upload-Metadata": f"caption {caption}"})
    assert response.status_code == 201, response.text
    page = _tag_page(client, "fromupload").json()
    assert page["video_count"] == 1 and page["items"] == []  # still uploading: counted, not listed
    assert client.delete(response.headers["Location"], headers={**user["headers"], "Tus-Resumable": "1.0.0"}).status_code == 204
    assert _tag_page(client, "fromupload").json()["video_count"] == 0


# --- sounds ----------------------------------------------------------------------------------

def test_sound_pages_list_the_original_and_its_reuses(client, live_server, people):
    owner, other = people["owner"], people["other"]
    settings = live_server.settings
    original = f.make_video(settings, owner["user"]["id"], caption="the original")
    sound_id = f.make_sound(settings, owner["user"]["id"], original, title="original sound - @owner")
    metadata = "sound_id " + base64.b64encode(sound_id.encode()).decode()
    upload = client.post("/api/v1/uploads", headers={**other["headers"], "Tus-Resumable": "1.0.0",
                                                     "Upload-Length": "10", "Upload-Metadata": metadata})
    assert upload.status_code == 201, upload.text
    sound = client.get(f"/api/v1/sounds/{sound_id}").json()
    assert sound["use_count"] == 1 and sound["title"] == "original sound - @owner"
    assert sound["owner"]["id"] == owner["user"]["id"] and sound["source_video_id"] == original
    assert client.delete(upload.headers["Location"], headers={**other["headers"], "Tus-Resumable": "1.0.0"}).status_code == 204
    assert client.get(f"/api/v1/sounds/{sound_id}").json()["use_count"] == 0

    reuse = f.make_video(settings, other["user"]["id"], sound_id=sound_id)
    f.make_video(settings, other["user"]["id"], sound_id=sound_id, visibility="private")
    f.make_video(settings, other["user"]["id"])  # unrelated
    page = client.get(f"/api/v1/sounds/{sound_id}/videos").json()
    assert [item["id"] for item in page["items"]] == [reuse, original]
    assert page["sound"]["id"] == sound_id and page["next_cursor"] is None
    assert client.get(f"/api/v1/sounds/{sound_id}", headers=people["blocked"]["headers"]).status_code == 404
    assert client.get("/api/v1/sounds/nosuchsound00000").status_code == 404
    assert client.get("/api/v1/sounds/nosuchsound00000/videos").status_code == 404
    # A sound from a video the viewer cannot see is not there for them either.
    client.patch(f"/api/v1/videos/{original}", json={"visibility": "private"}, headers=owner["headers"])
    assert client.get(f"/api/v1/sounds/{sound_id}").status_code == 404
    assert client.get(f"/api/v1/sounds/{sound_id}", headers=owner["headers"]).status_code == 200
