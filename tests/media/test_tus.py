"""tus 1.0 server and multipart upload over real HTTP, on every backend, with the real tuspy client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import threading
import time
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import func, select, update
from tusclient import client as tus_client

from clipfeed.db import Database
from clipfeed.db.base import utcnow
from clipfeed.media import keys, uploads
from clipfeed.media.models import Upload, Video
from clipfeed.media.uploads import cleanup_expired_uploads
from clipfeed.storage import LocalStore
from tests.conftest import LiveServer, db_run, register, wait_for

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = "application/offset+octet-stream"
MB = 1024 * 1024


# --- helpers -----------------------------------------------------------------------------

def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def digest(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def video_row(settings, video_id: str) -> Video | None:
    return db_run(settings, lambda s: s.get(Video, video_id))


def upload_row(settings, upload_id: str) -> Upload | None:
    return db_run(settings, lambda s: s.get(Upload, upload_id))


def blob_path(settings, video_id: str) -> Path:
    return settings.blob_root / keys.source_key(video_id)


def blob_size(settings, video_id: str) -> int:
    path = blob_path(settings, video_id)
    return path.stat().st_size if path.exists() else -1


def create(http: httpx.Client, headers: dict, length: int, metadata: str | None = None, **extra) -> httpx.Response:
    request_headers = {**TUS, **headers, "Upload-Length": str(length), **extra}
    if metadata is not None:
        request_headers["Upload-Metadata"] = metadata
    return http.post("/api/v1/uploads", headers=request_headers)


def new_upload(http: httpx.Client, headers: dict, length: int) -> tuple[str, str]:
    response = create(http, headers, length, f"filename {b64('clip.mp4')}")
    assert response.status_code == 201, response.text
    return response.headers["Location"], response.headers["Clipfeed-Video-Id"]


def patch(http: httpx.Client, url: str, headers: dict, offset: int, data: bytes, **extra) -> httpx.Response:
    return http.patch(url, content=data, headers={**TUS, **headers, "Content-Type": OCTET,
                                                   "Upload-Offset": str(offset), **extra})


def head(http: httpx.Client, url: str, headers: dict) -> httpx.Response:
    return http.head(url, headers={**TUS, **headers})


def offset_of(http, url, headers) -> int:
    response = head(http, url, headers)
    assert response.status_code == 200, response.status_code
    return int(response.headers["Upload-Offset"])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RawPatch:
    """A PATCH written by hand on a socket, so a test can stop (or die) in the middle of its body."""

    def __init__(self, base_url: str, url: str, headers: dict, offset: int, length: int):
        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        path = url.split(base_url, 1)[1]
        lines = [f"PATCH {path} HTTP/1.1", f"Host: {host}:{port}", "Tus-Resumable: 1.0.0",
                 f"Content-Type: {OCTET}", f"Upload-Offset: {offset}", f"Content-Length: {length}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response_status(self) -> int:
        buffer = b""
        while b"\r\n" not in buffer:
            part = self.sock.recv(4096)
            if not part:
                break
            buffer += part
        return int(buffer.split(b" ", 2)[1])

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server(settings):
    # No in-process workers: these tests look at the upload side, and the bytes are not media.
    live = LiveServer(settings, run_workers=False).start()
    yield live
    live.stop()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as session:
        yield session


def account(http: httpx.Client) -> dict:
    """A new user; the client forgets the session cookie, so every request says who it is."""
    body = register(http)
    http.cookies.clear()
    return body


@pytest.fixture
def owner(http):
    return account(http)


# --- discovery and protocol version ------------------------------------------------------

def test_options_advertises_the_server_without_auth(http, settings, owner):
    for path in ("/api/v1/uploads", "/api/v1/uploads/whatever"):
        response = http.options(path)
        assert response.status_code == 204
        assert response.headers["Tus-Resumable"] == "1.0.0"
        assert response.headers["Tus-Version"] == "1.0.0"
        assert response.headers["Tus-Extension"] == "creation,creation-with-upload,termination,expiration,checksum"
        assert response.headers["Tus-Max-Size"] == str(settings.max_upload_bytes) == str(200 * MB)
        assert response.headers["Tus-Checksum-Algorithm"] == "sha1,md5,sha256"


def test_wrong_or_missing_tus_version_is_412(http, owner):
    for version in ("0.2.2", None):
        headers = {**owner["headers"], "Upload-Length": "10"}
        if version:
            headers["Tus-Resumable"] = version
        response = http.post("/api/v1/uploads", headers=headers)
        assert response.status_code == 412
        assert response.headers["Tus-Version"] == "1.0.0"
        assert response.json()["error"]["code"] == "unsupported_tus_version"
    url, _ = new_upload(http, owner["headers"], 10)
    response = http.patch(url, content=b"x", headers={**owner["headers"], "Tus-Resumable": "2.0.0",
                                                       "Content-Type": OCTET, "Upload-Offset": "0"})
    assert response.status_code == 412
    assert offset_of(http, url, owner["headers"]) == 0


# --- the real client ---------------------------------------------------------------------

def test_tuspy_uploads_in_chunks_and_hands_off_to_processing(client, live_server, settings, user, tmp_path):
    data = os.urandom(3 * MB + 12345)
    path = tmp_path / "holiday clip.mp4"
    path.write_bytes(data)
    uploader = tus_client.TusClient(f"{live_server.url}/api/v1/uploads", headers=user["headers"]).uploader(
        str(path), chunk_size=MB + 1000, metadata={"filename": path.name, "caption": "sunset #beach 🌅"})
    uploader.upload()
    assert uploader.url.startswith(f"{live_server.url}/api/v1/uploads/")
    upload_id = uploader.url.rsplit("/", 1)[1]
    assert len(upload_id) == 32

    response = client.head(uploader.url, headers={**TUS, **user["headers"]})
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == response.headers["Upload-Length"] == str(len(data))
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    echoed = dict(pair.split(" ") for pair in response.headers["Upload-Metadata"].split(","))
    assert base64.b64decode(echoed["caption"]).decode() == "sunset #beach 🌅"

    upload = upload_row(settings, upload_id)
    assert upload.completed_at is not None and upload.offset == len(data) and upload.lock_token is None
    video = video_row(settings, upload.video_id)
    assert video.status != "uploading"  # processing, or already rejected: these bytes are not media
    assert video.caption == "sunset #beach 🌅" and video.original_filename == "holiday clip.mp4"
    assert video.source_key == keys.source_key(video.id) and video.source_bytes == len(data)
    assert sha256(blob_path(settings, video.id).read_bytes()) == sha256(data)


def test_interrupted_upload_resumes_with_a_new_client(http, server, settings, owner, tmp_path):
    data = os.urandom(2 * MB + 777)
    path = tmp_path / "clip.bin"
    path.write_bytes(data)
    tus = tus_client.TusClient(f"{server.url}/api/v1/uploads", headers=owner["headers"])
    first = tus.uploader(str(path), chunk_size=512 * 1024, metadata={"filename": "clip.bin"})
    first.upload(stop_at=MB)
    assert offset_of(http, first.url, owner["headers"]) == MB

    # A new process knows only the URL: it asks for the offset and continues from there.
    second = tus_client.TusClient(f"{server.url}/api/v1/uploads", headers=owner["headers"]).uploader(
        str(path), url=first.url, chunk_size=700 * 1024)
    assert second.offset == MB
    second.upload()
    assert offset_of(http, first.url, owner["headers"]) == len(data)
    upload = upload_row(settings, first.url.rsplit("/", 1)[1])
    assert sha256(blob_path(settings, upload.video_id).read_bytes()) == sha256(data)
    assert video_row(settings, upload.video_id).status == "processing"


def test_tuspy_checksums_are_verified(http, server, settings, owner, tmp_path):
    data = os.urandom(600 * 1024)
    path = tmp_path / "clip.bin"
    path.write_bytes(data)
    uploader = tus_client.TusClient(f"{server.url}/api/v1/uploads", headers=owner["headers"]).uploader(
        str(path), chunk_size=256 * 1024, upload_checksum=True)
    uploader.upload()
    upload = upload_row(settings, uploader.url.rsplit("/", 1)[1])
    assert blob_path(settings, upload.video_id).read_bytes() == data


# --- creation ----------------------------------------------------------------------------

def test_creation_answers_location_video_id_expiry_and_offset(http, server, settings, owner):
    metadata = ",".join([f"filename {b64('a.mp4')}", f"caption {b64('hello')}", f"visibility {b64('unlisted')}",
                         f"filetype {b64('video/mp4')}", "is_confidential"])
    response = create(http, owner["headers"], 1000, metadata)
    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith(f"{server.url}/api/v1/uploads/")
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Upload-Expires"].endswith(" GMT")
    video = video_row(settings, response.headers["Clipfeed-Video-Id"])
    assert (video.status, video.caption, video.visibility, video.original_filename) == \
        ("uploading", "hello", "unlisted", "a.mp4")
    echoed = head(http, response.headers["Location"], owner["headers"]).headers["Upload-Metadata"]
    assert "is_confidential" in echoed.split(",") and f"filetype {b64('video/mp4')}" in echoed.split(",")


def test_creation_uses_public_base_url(settings_factory, tmp_path):
    settings = settings_factory(public_base_url="https://clips.example.com/")
    live = LiveServer(settings, run_workers=False).start()
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            owner = account(http)
            response = create(http, owner["headers"], 10)
            assert response.headers["Location"].startswith("https://clips.example.com/api/v1/uploads/")
    finally:
        live.stop()


def test_creation_is_validated(http, server, owner):
    headers = owner["headers"]
    cases = [
        (create(http, {}, 100), 401),
        (http.post("/api/v1/uploads", headers={**TUS, **headers}), 400),  # no Upload-Length
        (create(http, headers, -5), 400),
        (create(http, headers, "ten"), 400),  # type: ignore[arg-type]
        (create(http, headers, 0), 400),
        (http.post("/api/v1/uploads", headers={**TUS, **headers, "Upload-Defer-Length": "1"}), 400),
        (create(http, headers, 200 * MB + 1), 413),
        (create(http, headers, 100, "caption not-base64!"), 400),
        (create(http, headers, 100, f"caption {b64('x')},caption {b64('y')}"), 400),
        (create(http, headers, 100, f"visibility {b64('everyone')}"), 422),
        (create(http, headers, 100, f"sound_id {b64('nosuchsound')}"), 422),
    ]
    for response, status in cases:
        assert response.status_code == status, (status, response.text)
        assert response.headers["Tus-Resumable"] == "1.0.0"
        body = response.json()["error"]
        assert body["code"] and body["message"]
    deferred = cases[5][0].json()["error"]["message"]
    assert "Upload-Defer-Length" in deferred
    assert cases[6][0].json()["error"]["code"] == "upload_too_large"


def test_creation_with_upload(http, server, settings, owner):
    data = os.urandom(300 * 1024)
    response = http.post("/api/v1/uploads", content=data[:100_000], headers={
        **TUS, **owner["headers"], "Upload-Length": str(len(data)), "Content-Type": OCTET,
        "Upload-Checksum": digest("sha256", data[:100_000])})
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == "100000"
    url, video_id = response.headers["Location"], response.headers["Clipfeed-Video-Id"]
    assert patch(http, url, owner["headers"], 100_000, data[100_000:]).status_code == 204
    assert blob_path(settings, video_id).read_bytes() == data
    assert video_row(settings, video_id).status == "processing"

    # The whole file in the creation request completes it at once.
    response = http.post("/api/v1/uploads", content=data, headers={
        **TUS, **owner["headers"], "Upload-Length": str(len(data)), "Content-Type": OCTET})
    assert response.status_code == 201 and response.headers["Upload-Offset"] == str(len(data))
    assert "Upload-Expires" not in response.headers
    assert video_row(settings, response.headers["Clipfeed-Video-Id"]).status == "processing"

    # A body longer than Upload-Length is refused before anything is created.
    before = db_run(settings, lambda s: s.scalar(select(func.count()).select_from(Upload)))
    response = http.post("/api/v1/uploads", content=data, headers={
        **TUS, **owner["headers"], "Upload-Length": "1000", "Content-Type": OCTET})
    assert response.status_code == 413
    assert db_run(settings, lambda s: s.scalar(select(func.count()).select_from(Upload))) == before


# --- PATCH rules -------------------------------------------------------------------------

def test_patch_refuses_strangers_before_reading_a_byte(http, server, settings, owner):
    url, video_id = new_upload(http, owner["headers"], 1000)
    assert patch(http, url, owner["headers"], 0, b"a" * 100).status_code == 204
    stranger = account(http)

    unauthenticated = patch(http, url, {}, 100, b"b" * 100)
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "unauthorized"
    foreign = patch(http, url, stranger["headers"], 100, b"c" * 100)
    assert foreign.status_code == 404
    bad_token = patch(http, url, {"Authorization": "Bearer nope"}, 100, b"d" * 100)
    assert bad_token.status_code == 401
    assert blob_size(settings, video_id) == 100
    assert offset_of(http, url, owner["headers"]) == 100

    assert head(http, url, {}).status_code == 401
    assert head(http, url, stranger["headers"]).status_code == 404
    assert head(http, url.rsplit("/", 1)[0] + "/" + "0" * 32, owner["headers"]).status_code == 404
    assert http.delete(url, headers={**TUS, **stranger["headers"]}).status_code == 404
    assert video_row(settings, video_id) is not None

    # The session cookie works as well as the Bearer token.
    with httpx.Client(base_url=server.url, cookies={"clipfeed_session": owner["token"]}) as browser:
        assert patch(browser, url, {}, 100, b"e" * 100).status_code == 204
    assert blob_path(settings, video_id).read_bytes() == b"a" * 100 + b"e" * 100


def test_patch_rules(http, server, settings, owner):
    headers = owner["headers"]
    url, video_id = new_upload(http, headers, 1000)
    assert patch(http, url, headers, 0, b"x" * 400).status_code == 204

    wrong_type = patch(http, url, headers, 400, b"y" * 10, **{"Content-Type": "application/octet-stream"})
    assert wrong_type.status_code == 415
    stale = patch(http, url, headers, 0, b"y" * 10)
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "offset_mismatch" and stale.headers["Upload-Offset"] == "400"
    ahead = patch(http, url, headers, 500, b"y" * 10)
    assert ahead.status_code == 409
    assert patch(http, url, headers, 400, b"y" * 601).status_code == 413  # 600 remain
    missing_offset = http.patch(url, content=b"y", headers={**TUS, **headers, "Content-Type": OCTET})
    assert missing_offset.status_code == 400
    assert patch(http, url, headers, 400, b"y" * 10, **{"Upload-Checksum": "crc32 AAAA"}).status_code == 400
    assert blob_size(settings, video_id) == 400 and offset_of(http, url, headers) == 400

    # An over-long body sent without Content-Length (chunked) is refused too, and nothing is kept.
    def chunks():
        yield b"z" * 500
        yield b"z" * 500

    chunked = http.patch(url, content=chunks(), headers={**TUS, **headers, "Content-Type": OCTET, "Upload-Offset": "400"})
    assert chunked.status_code == 413
    assert blob_size(settings, video_id) == 400 and offset_of(http, url, headers) == 400

    response = patch(http, url, headers, 400, b"y" * 600)
    assert response.status_code == 204 and response.headers["Upload-Offset"] == "1000"
    done = patch(http, url, headers, 1000, b"")
    assert done.status_code == 409 and done.json()["error"]["code"] == "upload_complete"
    assert http.delete(url, headers={**TUS, **headers}).status_code == 409  # delete the video instead
    assert blob_path(settings, video_id).read_bytes() == b"x" * 400 + b"y" * 600


def test_patch_extends_the_expiry(http, server, settings, owner):
    url, _ = new_upload(http, owner["headers"], 100)
    upload_id = url.rsplit("/", 1)[1]
    soon = utcnow() + timedelta(minutes=1)
    db_run(settings, lambda s: s.execute(update(Upload).where(Upload.id == upload_id).values(expires_at=soon)))
    assert head(http, url, owner["headers"]).headers["Upload-Expires"] == format_datetime(
        soon.replace(microsecond=0), usegmt=True)
    response = patch(http, url, owner["headers"], 0, b"1" * 10)
    assert response.status_code == 204
    extended = upload_row(settings, upload_id).expires_at
    assert extended > utcnow() + timedelta(hours=settings.upload_expiry_hours) - timedelta(minutes=1)
    assert response.headers["Upload-Expires"] == format_datetime(extended.replace(microsecond=0), usegmt=True)


def test_checksum_mismatch_discards_the_chunk(http, server, settings, owner):
    headers = owner["headers"]
    data = os.urandom(3000)
    url, video_id = new_upload(http, headers, len(data))
    assert patch(http, url, headers, 0, data[:1000], **{"Upload-Checksum": digest("sha1", data[:1000])}).status_code == 204

    bad = patch(http, url, headers, 1000, data[1000:2000], **{"Upload-Checksum": digest("sha1", b"other")})
    assert bad.status_code == 460
    assert bad.json()["error"]["code"] == "checksum_mismatch"
    assert "Checksum Mismatch" in bad.json()["error"]["message"]
    assert offset_of(http, url, headers) == 1000
    assert blob_size(settings, video_id) == 1000

    assert patch(http, url, headers, 1000, data[1000:2000], **{"Upload-Checksum": digest("md5", data[1000:2000])}).status_code == 204
    assert patch(http, url, headers, 2000, data[2000:], **{"Upload-Checksum": digest("sha256", data[2000:])}).status_code == 204
    assert blob_path(settings, video_id).read_bytes() == data


def test_two_patches_cannot_append_at_once(http, server, settings, owner):
    headers = owner["headers"]
    url, video_id = new_upload(http, headers, 2 * MB)
    upload_id = url.rsplit("/", 1)[1]
    first = RawPatch(server.url, url, headers, 0, MB)
    try:
        first.send(b"1" * 1000)
        wait_for(lambda: upload_row(settings, upload_id).lock_token is not None, timeout=10, message="the lease")
        second = patch(http, url, headers, 0, b"2" * 1000)
        assert second.status_code == 423
        assert int(second.headers["Retry-After"]) >= 1
        first.send(b"1" * (MB - 1000))
        assert first.response_status() == 204
    finally:
        first.close()
    assert offset_of(http, url, headers) == MB
    assert upload_row(settings, upload_id).lock_token is None
    assert blob_path(settings, video_id).read_bytes() == b"1" * MB


def test_the_lease_is_renewed_while_a_patch_streams(http, server, settings, owner, monkeypatch):
    # Short leases so that several renewals happen within the test.
    monkeypatch.setattr(uploads, "LEASE_SECONDS", 2.0)
    monkeypatch.setattr(uploads, "LEASE_RENEW_SECONDS", 0.2)
    monkeypatch.setattr(uploads, "LEASE_WRITE_WINDOW", 1.5)
    headers = owner["headers"]
    url, video_id = new_upload(http, headers, MB)
    upload_id = url.rsplit("/", 1)[1]
    raw = RawPatch(server.url, url, headers, 0, MB)
    try:
        raw.send(b"1" * 1000)
        first = wait_for(lambda: upload_row(settings, upload_id).lock_expires_at, timeout=10, message="the lease")
        # The client stalls; the lease outlives its first expiry because the server renews it.
        wait_for(lambda: upload_row(settings, upload_id).lock_expires_at > first + timedelta(seconds=2.5),
                 timeout=15, message="renewals")
        assert patch(http, url, headers, 0, b"2" * 10).status_code == 423
        raw.send(b"1" * (MB - 1000))
        assert raw.response_status() == 204
    finally:
        raw.close()
    assert blob_path(settings, video_id).read_bytes() == b"1" * MB


def test_a_dead_writers_lease_expires_and_its_tail_is_cut(http, server, settings, owner):
    headers = owner["headers"]
    url, video_id = new_upload(http, headers, 300)
    upload_id = url.rsplit("/", 1)[1]
    assert patch(http, url, headers, 0, b"a" * 100).status_code == 204
    # What a server killed mid-PATCH leaves: a held lease and bytes the row never counted.
    with open(blob_path(settings, video_id), "ab") as blob:
        blob.write(b"garbage" * 10)

    def lease(expires):
        db_run(settings, lambda s: s.execute(update(Upload).where(Upload.id == upload_id)
                                             .values(lock_token="f" * 32, lock_expires_at=expires)))

    lease(utcnow() + timedelta(minutes=5))
    locked = patch(http, url, headers, 100, b"b" * 100)
    assert locked.status_code == 423 and locked.json()["error"]["code"] == "upload_locked"
    assert 1 <= int(locked.headers["Retry-After"]) <= 301
    assert offset_of(http, url, headers) == 100
    lease(utcnow() - timedelta(seconds=1))
    assert patch(http, url, headers, 100, b"b" * 100).status_code == 204
    assert blob_path(settings, video_id).read_bytes() == b"a" * 100 + b"b" * 100


def test_client_disconnect_keeps_what_arrived(http, server, settings, owner, tmp_path):
    headers = owner["headers"]
    data = os.urandom(4 * MB)
    url, video_id = new_upload(http, headers, len(data))
    raw = RawPatch(server.url, url, headers, 0, 3 * MB)
    raw.send(data[:2 * MB])
    wait_for(lambda: blob_size(settings, video_id) >= MB, timeout=20, message="the first batch on disk")
    raw.close()

    kept = wait_for(lambda: offset_of(http, url, headers), timeout=20, message="the offset recorded")
    assert MB <= kept <= 2 * MB
    assert blob_path(settings, video_id).read_bytes() == data[:kept]

    # With a checksum, a partial chunk cannot be verified and is dropped.
    rest = data[kept:]
    raw = RawPatch(server.url, url, {**headers, "Upload-Checksum": digest("sha1", rest)}, kept, len(rest))
    raw.send(rest[:MB + MB // 2])
    wait_for(lambda: blob_size(settings, video_id) >= kept + MB, timeout=20, message="bytes on disk")
    raw.close()
    wait_for(lambda: upload_row(settings, url.rsplit("/", 1)[1]).lock_token is None, timeout=20, message="release")
    assert offset_of(http, url, headers) == kept
    assert blob_size(settings, video_id) == kept

    path = tmp_path / "clip.bin"
    path.write_bytes(data)
    uploader = tus_client.TusClient(f"{server.url}/api/v1/uploads", headers=headers).uploader(
        str(path), url=url, chunk_size=MB)
    assert uploader.offset == kept
    uploader.upload()
    assert sha256(blob_path(settings, video_id).read_bytes()) == sha256(data)


def test_method_override_for_post_only_clients(http, server, settings, owner):
    url, video_id = new_upload(http, owner["headers"], 10)
    response = http.post(url, content=b"0123456789", headers={
        **TUS, **owner["headers"], "X-HTTP-Method-Override": "PATCH", "Content-Type": OCTET, "Upload-Offset": "0"})
    assert response.status_code == 204 and response.headers["Upload-Offset"] == "10"
    assert blob_path(settings, video_id).read_bytes() == b"0123456789"


# --- termination and expiry --------------------------------------------------------------

def test_delete_terminates_the_upload(http, server, settings, owner):
    headers = owner["headers"]
    url, video_id = new_upload(http, headers, 1000)
    assert patch(http, url, headers, 0, b"q" * 300).status_code == 204
    assert blob_path(settings, video_id).exists()

    assert http.delete(url, headers={**TUS}).status_code == 401
    response = http.delete(url, headers={**TUS, **headers})
    assert response.status_code == 204 and response.headers["Tus-Resumable"] == "1.0.0"
    assert not blob_path(settings, video_id).exists()
    assert video_row(settings, video_id) is None
    assert upload_row(settings, url.rsplit("/", 1)[1]) is None
    assert head(http, url, headers).status_code == 404
    assert patch(http, url, headers, 300, b"q").status_code == 404
    assert http.delete(url, headers={**TUS, **headers}).status_code == 404


def test_expired_uploads_answer_410_and_are_cleaned(settings_factory):
    settings = settings_factory(upload_expiry_hours=0)
    live = LiveServer(settings, run_workers=False).start()
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            owner = account(http)
            url, video_id = new_upload(http, owner["headers"], 1000)
            (blob_path(settings, video_id)).parent.mkdir(parents=True, exist_ok=True)
            blob_path(settings, video_id).write_bytes(b"partial")
            assert head(http, url, owner["headers"]).status_code == 410
            response = patch(http, url, owner["headers"], 0, b"x" * 10)
            assert response.status_code == 410 and response.json()["error"]["code"] == "upload_expired"
            assert blob_size(settings, video_id) == len(b"partial")

            removed = asyncio.run(_cleanup(settings))
            assert removed == 1
            assert video_row(settings, video_id) is None
            assert upload_row(settings, url.rsplit("/", 1)[1]) is None
            assert not blob_path(settings, video_id).exists()
            assert head(http, url, owner["headers"]).status_code == 404
            assert asyncio.run(_cleanup(settings)) == 0
    finally:
        live.stop()


def test_cleanup_keeps_live_and_completed_uploads(http, server, settings, owner):
    headers = owner["headers"]
    live_url, live_video = new_upload(http, headers, 100)
    done_url, done_video = new_upload(http, headers, 10)
    old_url, old_video = new_upload(http, headers, 100)
    assert patch(http, done_url, headers, 0, b"d" * 10).status_code == 204
    assert patch(http, old_url, headers, 0, b"o" * 10).status_code == 204
    past = utcnow().replace(year=2020)
    for url in (done_url, old_url):
        upload_id = url.rsplit("/", 1)[1]
        db_run(settings, lambda s, i=upload_id: s.execute(update(Upload).where(Upload.id == i).values(expires_at=past)))

    assert asyncio.run(_cleanup(settings)) == 1
    assert video_row(settings, old_video) is None and not blob_path(settings, old_video).exists()
    assert head(http, old_url, headers).status_code == 404
    assert offset_of(http, live_url, headers) == 0 and video_row(settings, live_video).status == "uploading"
    assert offset_of(http, done_url, headers) == 10 and video_row(settings, done_video).status == "processing"
    assert blob_path(settings, done_video).read_bytes() == b"d" * 10


async def _cleanup(settings) -> int:
    db = Database(settings, pooled=False)
    try:
        return await cleanup_expired_uploads(db, LocalStore(settings.blob_root))
    finally:
        await db.dispose()


# --- multipart ---------------------------------------------------------------------------

def test_multipart_upload(http, server, settings, owner):
    data = os.urandom(256 * 1024 + 3)
    response = http.post("/api/v1/videos/upload", headers=owner["headers"],
                         files={"file": ("beach day.mp4", data, "video/mp4")},
                         data={"caption": "waves", "visibility": "unlisted"})
    assert response.status_code == 201, response.text
    video = response.json()["video"]
    assert video["status"] == "processing" and video["id"]
    row = video_row(settings, video["id"])
    assert (row.caption, row.visibility, row.original_filename, row.source_bytes) == \
        ("waves", "unlisted", "beach day.mp4", len(data))
    assert blob_path(settings, video["id"]).read_bytes() == data
    assert not any((settings.blob_root / "uploads").glob("*"))  # the staging blob moved

    # Fields may come after the file (python-multipart streams; nothing waits for the whole body).
    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="late.mp4"\r\n'
            f"Content-Type: video/mp4\r\n\r\n").encode() + data + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="caption"\r\n\r\nafter the file ✓'
            f"\r\n--{boundary}--\r\n").encode()
    late = http.post("/api/v1/videos/upload", content=body, headers={
        **owner["headers"], "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert late.status_code == 201, late.text
    late_row = video_row(settings, late.json()["video"]["id"])
    assert (late_row.caption, late_row.original_filename) == ("after the file ✓", "late.mp4")
    assert blob_path(settings, late_row.id).read_bytes() == data
    truncated = http.post("/api/v1/videos/upload", content=body[:-30], headers={
        **owner["headers"], "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert truncated.status_code == 400 and truncated.json()["error"]["code"] == "invalid_multipart"

    assert http.post("/api/v1/videos/upload", files={"file": ("a.mp4", b"abc")}).status_code == 401
    no_file = http.post("/api/v1/videos/upload", headers=owner["headers"], data={"caption": "x"},
                        files={"other": ("a.mp4", b"abc")})
    assert no_file.status_code == 422
    bad_visibility = http.post("/api/v1/videos/upload", headers=owner["headers"], data={"visibility": "all"},
                               files={"file": ("a.mp4", b"abc")})
    assert bad_visibility.status_code == 422
    assert http.post("/api/v1/videos/upload", headers=owner["headers"], json={"file": "x"}).status_code == 415
    assert not any((settings.blob_root / "uploads").glob("*"))
    count = db_run(settings, lambda s: s.scalar(select(func.count()).select_from(Video)))
    assert count == 2


def test_multipart_fields_before_the_file_are_checked_before_it_is_stored(http, server, settings, owner):
    staged: list[str] = []

    def body(fields: dict[str, str], boundary: str = "f1eld5"):
        for name, value in fields.items():
            yield f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'.encode()
        for _ in range(4):
            staged.extend(str(p) for p in (settings.blob_root / "uploads").glob("*"))
            yield os.urandom(256 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    for fields, field in (({"sound_id": "nosuchsound00000"}, "sound_id"),
                          ({"caption": "hi", "sound_volume": "0.5"}, "sound_volume"),
                          ({"visibility": "everyone"}, "visibility")):
        response = http.post("/api/v1/videos/upload", content=body(fields), headers={
            **owner["headers"], "Content-Type": "multipart/form-data; boundary=f1eld5"})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field
    assert staged == [] and not any((settings.blob_root / "uploads").glob("*"))
    assert db_run(settings, lambda s: s.scalar(select(func.count()).select_from(Video))) == 0


def test_multipart_over_the_limit_leaves_nothing(settings_factory):
    settings = settings_factory(max_upload_bytes=64 * 1024)
    live = LiveServer(settings, run_workers=False).start()
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            owner = account(http)
            # Declared too large: refused from the headers alone.
            response = http.post("/api/v1/videos/upload", headers=owner["headers"],
                                 files={"file": ("big.mp4", os.urandom(400 * 1024))})
            assert response.status_code == 413 and response.json()["error"]["code"] == "upload_too_large"

            # Within the multipart allowance but over the file limit: found while streaming.
            response = http.post("/api/v1/videos/upload", headers=owner["headers"],
                                 files={"file": ("big.mp4", os.urandom(64 * 1024 + 1))})
            assert response.status_code == 413

            # Chunked (no Content-Length): the cap holds while streaming.
            boundary = "xyzzy"
            def body():
                yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'.encode()
                for _ in range(10):
                    yield os.urandom(32 * 1024)
                yield f"\r\n--{boundary}--\r\n".encode()
            response = http.post("/api/v1/videos/upload", content=body(), headers={
                **owner["headers"], "Content-Type": f"multipart/form-data; boundary={boundary}"})
            assert response.status_code == 413

            assert db_run(settings, lambda s: s.scalar(select(func.count()).select_from(Video))) == 0
            leftovers = [p for p in settings.blob_root.rglob("*") if p.is_file()]
            assert leftovers == []
            ok = http.post("/api/v1/videos/upload", headers=owner["headers"],
                           files={"file": ("small.mp4", os.urandom(60 * 1024))})
            assert ok.status_code == 201
            assert create(http, owner["headers"], 64 * 1024 + 1).status_code == 413
            assert http.options("/api/v1/uploads").headers["Tus-Max-Size"] == str(64 * 1024)
    finally:
        live.stop()


# --- CORS --------------------------------------------------------------------------------

def test_cors_for_configured_origins_only(settings_factory):
    settings = settings_factory(cors_origins=["http://localhost:5173"])
    live = LiveServer(settings, run_workers=False).start()
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            owner = account(http)
            preflight = http.options("/api/v1/uploads", headers={
                "Origin": "http://localhost:5173", "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "authorization,tus-resumable,upload-offset,content-type,upload-checksum"})
            assert preflight.status_code == 200
            assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
            assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
            assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
            allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
            assert "upload-offset" in allowed and "tus-resumable" in allowed

            # Expose-Headers rides on the actual responses (that is where browsers read it).
            created = create(http, owner["headers"], 10, Origin="http://localhost:5173")
            assert created.status_code == 201
            assert created.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
            assert created.headers["Access-Control-Allow-Credentials"] == "true"
            exposed = [h.strip().lower() for h in created.headers["Access-Control-Expose-Headers"].split(",")]
            assert "upload-offset" in exposed and "location" in exposed and "upload-expires" in exposed

            stranger = http.options("/api/v1/uploads", headers={
                "Origin": "http://evil.example", "Access-Control-Request-Method": "PATCH"})
            assert "Access-Control-Allow-Origin" not in stranger.headers
            other = create(http, owner["headers"], 10, Origin="http://evil.example")
            assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        live.stop()


# --- memory ------------------------------------------------------------------------------

def test_a_50mb_patch_streams_in_constant_memory(http, server, settings, owner):
    size = 50 * MB
    block = os.urandom(256 * 1024)
    url, video_id = new_upload(http, owner["headers"], size + 1)
    # Warm up the code path (imports, pools) before measuring.
    assert patch(http, url, owner["headers"], 0, b"w").status_code == 204

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def body():
        for _ in range(size // len(block)):
            yield block

    try:
        response = http.patch(url, content=body(), headers={
            **TUS, **owner["headers"], "Content-Type": OCTET, "Upload-Offset": "1", "Content-Length": str(size)})
    finally:
        done.set()
        sampler.join()
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(size + 1)
    assert blob_size(settings, video_id) == size + 1
    growth = (peak - baseline) / MB
    print(f"RSS growth during a 50 MB PATCH: {growth:.1f} MB")
    assert growth < 20, f"RSS grew by {growth:.1f} MB during a 50 MB PATCH"
