"""Accounts over real HTTP on every backend: registration rules, login, throttling, tokens."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import httpx
import pytest

from tests.conftest import LiveServer, register


def _handle() -> str:
    return f"u{uuid.uuid4().hex[:8]}"


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_register_returns_user_token_and_cookie(client):
    handle = _handle()
    response = client.post("/api/v1/auth/register", json={"handle": handle.upper(), "password": "longenough1",
                                                           "display_name": "Ada <b>L</b>"})
    assert response.status_code == 201
    body = response.json()
    assert body["user"]["handle"] == handle  # stored lower-case
    assert body["user"]["display_name"] == "Ada <b>L</b>"  # text, stored as given
    assert "password" not in str(body["user"]).lower()
    assert "clipfeed_session" in response.cookies
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200 and me.json()["id"] == body["user"]["id"]


@pytest.mark.parametrize("payload, field", [
    ({"handle": "ab", "password": "longenough1"}, "handle"),
    ({"handle": "x" * 25, "password": "longenough1"}, "handle"),
    ({"handle": "bad-handle!", "password": "longenough1"}, "handle"),
    ({"handle": "okhandle", "password": "short"}, "password"),
    ({"handle": "okhandle2", "password": "longenough1", "birth_date": "not-a-date"}, "birth_date"),
    ({"handle": "okhandle3", "password": "longenough1", "unexpected": 1}, "unexpected"),
])
def test_register_rejects_bad_input_with_field(client, payload, field):
    response = client.post("/api/v1/auth/register", json=payload)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] in ("validation_error",)
    assert error["field"] == field
    assert error["message"]


def test_register_refuses_under_13(client):
    twelve = (date.today() - timedelta(days=12 * 365)).isoformat()
    response = client.post("/api/v1/auth/register", json={"handle": _handle(), "password": "longenough1",
                                                           "birth_date": twelve})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "too_young"
    thirteen = date.today().replace(year=date.today().year - 14).isoformat()
    ok = client.post("/api/v1/auth/register", json={"handle": _handle(), "password": "longenough1",
                                                    "birth_date": thirteen})
    assert ok.status_code == 201


def test_handles_are_unique_case_insensitively(client):
    handle = _handle()
    assert client.post("/api/v1/auth/register", json={"handle": handle, "password": "longenough1"}).status_code == 201
    again = client.post("/api/v1/auth/register", json={"handle": handle.upper(), "password": "longenough1"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "handle_taken"


def test_malformed_json_is_a_clear_422(client):
    response = client.post("/api/v1/auth/register", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_login_logout_and_cookie_auth(client):
    account = register(client)
    login = client.post("/api/v1/auth/login", json={"handle": account["user"]["handle"], "password": account["password"]})
    assert login.status_code == 200
    token = login.json()["token"]
    # The cookie alone authenticates (web client).
    with httpx.Client(base_url=str(client.base_url), cookies={"clipfeed_session": token}) as browser:
        assert browser.get("/api/v1/me").status_code == 200
    out = client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert out.status_code == 204
    after = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "unauthorized"


def test_a_token_past_its_expiry_signs_no_one_in(client, settings):
    """Expiry is checked by the token lookup itself, at the second, on every backend."""
    from sqlalchemy import update

    from clipfeed.accounts.models import SessionToken
    from clipfeed.accounts.service import hash_token
    from clipfeed.db import utcnow
    from tests.conftest import db_run

    account = register(client)
    assert client.get("/api/v1/me", headers=account["headers"]).status_code == 200

    def expire(at):
        return lambda s: s.execute(update(SessionToken).where(SessionToken.token_hash == hash_token(account["token"]))
                                   .values(expires_at=at))

    db_run(settings, expire(utcnow() + timedelta(seconds=60)))
    assert client.get("/api/v1/me", headers=account["headers"]).status_code == 200
    db_run(settings, expire(utcnow() - timedelta(seconds=1)))
    expired = client.get("/api/v1/me", headers=account["headers"])
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "unauthorized"


def test_me_requires_a_valid_token(client):
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_wrong_password_and_unknown_handle_look_the_same(client):
    account = register(client)
    wrong = client.post("/api/v1/auth/login", json={"handle": account["user"]["handle"], "password": "wrong-password"})
    unknown = client.post("/api/v1/auth/login", json={"handle": _handle(), "password": "wrong-password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_login_is_rate_limited_per_handle(settings_factory):
    server = LiveServer(settings_factory(login_attempts=3), run_workers=False).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            account = register(http)
            handle = account["user"]["handle"]
            for _ in range(3):
                assert http.post("/api/v1/auth/login", json={"handle": handle, "password": "bad-password"}).status_code == 401
            blocked = http.post("/api/v1/auth/login", json={"handle": handle, "password": account["password"]})
            assert blocked.status_code == 429
            assert int(blocked.headers["Retry-After"]) >= 1
            assert blocked.json()["error"]["code"] == "rate_limited"
    finally:
        server.stop()


def test_login_is_rate_limited_per_ip_across_handles(settings_factory):
    server = LiveServer(settings_factory(login_attempts=4), run_workers=False).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            for _ in range(4):
                http.post("/api/v1/auth/login", json={"handle": _handle(), "password": "bad-password"})
            blocked = http.post("/api/v1/auth/login", json={"handle": _handle(), "password": "bad-password"})
            assert blocked.status_code == 429
            assert "Retry-After" in blocked.headers
    finally:
        server.stop()


def test_unknown_route_is_json_404(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_interests_chosen_at_sign_up_are_normalized_and_editable(client):
    """Topics (hashtags) chosen at sign-up: stored in the hashtags' form ('#' dropped, case
    folded, duplicates once), shown to the user themselves, changed with PATCH /me; anything
    that is not a hashtag, or more than 10, is a 422 naming the field, and nothing changes."""
    response = client.post("/api/v1/auth/register", json={"handle": _handle(), "password": "longenough1",
                                                           "interests": ["#Cats", "cooking", "cats", "ＤＩＹ"]})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["user"]["interests"] == ["cats", "cooking", "diy"]
    headers = {"Authorization": f"Bearer {body['token']}"}
    assert client.get("/api/v1/me", headers=headers).json()["interests"] == ["cats", "cooking", "diy"]

    changed = client.patch("/api/v1/me", json={"interests": ["skate"]}, headers=headers)
    assert changed.status_code == 200 and changed.json()["interests"] == ["skate"]
    for bad in (["not a tag"], ["1234"], [f"t{i}" for i in range(11)], [""]):
        refused = client.patch("/api/v1/me", json={"interests": bad}, headers=headers)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["error"]["field"] == "interests" and refused.json()["error"]["message"]
    assert client.get("/api/v1/me", headers=headers).json()["interests"] == ["skate"]
    client.cookies.clear()  # the sign-up's session cookie: look as someone else
    other = client.get(f"/api/v1/users/{body['user']['id']}/profile")
    assert other.status_code == 200 and "interests" not in other.json()  # the user's own business
    refused = client.post("/api/v1/auth/register", json={"handle": _handle(), "password": "longenough1",
                                                          "interests": ["ok", "no way"]})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "interests"
