"""/media over real HTTP: Range, validators, caching, MIME types, access rules, signed URLs,
and path traversal attempts sent byte-for-byte on a raw socket."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from clipfeed.db import Database
from clipfeed.delivery.service import sign_query, sign_video_urls
from clipfeed.media import keys
from clipfeed.media.models import Sound, Video, VideoStatus, Visibility
from clipfeed.storage import LocalStore
from tests.conftest import register, wait_for

# ---------------------------------------------------------------------------------------------
# Factories (plain functions; they write through clipfeed's own Database and BlobStore)
# ---------------------------------------------------------------------------------------------

SEGMENT = bytes(range(256)) * 4 + b"tail-of-segment"  # 1039 bytes, every offset distinguishable
RUNG_PLAYLIST = (
    "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n"
    '#EXT-X-MAP:URI="init.mp4"\n#EXTINF:2.000,\nseg_00001.m4s\n#EXTINF:2.000,\nseg_00002.m4s\n#EXT-X-ENDLIST\n'
)
MASTER_PLAYLIST = (
    "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    '#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=360x640,CODECS="avc1.64001e,mp4a.40.2"\n'
    "360p/playlist.m3u8\n"
)
RENDITIONS = [{"name": "360p", "width": 360, "height": 640, "bandwidth": 800000, "playlist": "360p/playlist.m3u8"}]
SOURCE_SECRET = b"ORIGINAL-UPLOAD-NEVER-SERVED"


def run_sync(make_coro):
    """Run a coroutine to completion on a thread of its own (callers may be inside a running
    loop, e.g. Playwright's sync API in the browser tests)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()


def _db_run(server, fn):
    async def go():
        db = Database(server.settings, pooled=False)
        try:
            async with db.transaction() as session:
                return await fn(session)
        finally:
            await db.dispose()

    return run_sync(go)


def insert_video(server, owner_id: str, *, status: str = VideoStatus.READY, visibility: str = Visibility.PUBLIC,
                 progress: float = 100.0, renditions: list | None = None, caption: str = "",
                 artifacts: dict | None = None, **values) -> str:
    async def create(session):
        video = Video(owner_id=owner_id, status=status, visibility=visibility, progress=progress,
                      caption=caption, features={},
                      renditions=RENDITIONS if renditions is None else renditions,
                      artifacts=artifacts if artifacts is not None else {"files": ["poster.jpg"]}, **values)
        session.add(video)
        await session.flush()
        return video.id

    return _db_run(server, create)


def update_video(server, video_id: str, **values) -> None:
    async def change(session):
        await session.execute(update(Video).where(Video.id == video_id).values(**values))

    _db_run(server, change)


def insert_sound(server, owner_id: str) -> str:
    async def create(session):
        sound = Sound(owner_id=owner_id, title="a sound", blob_key="")
        session.add(sound)
        await session.flush()
        sound.blob_key = keys.sound_key(sound.id)
        return sound.id

    return _db_run(server, create)


def put_blob(server, key: str, data: bytes) -> None:
    async def chunks():
        yield data

    run_sync(lambda: LocalStore(server.settings.blob_root).put(key, chunks()))


def put_video_blobs(server, video_id: str) -> None:
    put_blob(server, keys.source_key(video_id), SOURCE_SECRET)
    put_blob(server, keys.hls_key(video_id, "master.m3u8"), MASTER_PLAYLIST.encode())
    put_blob(server, keys.hls_key(video_id, "360p/playlist.m3u8"), RUNG_PLAYLIST.encode())
    put_blob(server, keys.hls_key(video_id, "360p/init.mp4"), b"\x00\x00\x00\x18ftypiso6" + b"\x00" * 16)
    put_blob(server, keys.hls_key(video_id, "360p/seg_00001.m4s"), SEGMENT)
    put_blob(server, keys.hls_key(video_id, "360p/seg_00002.m4s"), SEGMENT[::-1])
    put_blob(server, keys.artifact_key(video_id, "poster.jpg"), b"\xff\xd8\xff\xe0fake-jpeg")
    put_blob(server, keys.artifact_key(video_id, "preview.webp"), b"RIFF\x00\x00\x00\x00WEBPfake")
    put_blob(server, keys.artifact_key(video_id, "storyboard.jpg"), b"\xff\xd8\xff\xe0sprite")
    put_blob(server, keys.artifact_key(video_id, "storyboard.vtt"), b"WEBVTT\n\n00:00.000 --> 00:01.000\nstoryboard.jpg#xywh=0,0,90,160\n")


def make_video(server, owner_id: str, **kwargs) -> str:
    video_id = insert_video(server, owner_id, **kwargs)
    put_video_blobs(server, video_id)
    return video_id


def media(video_id: str, name: str) -> str:
    return f"/media/videos/{video_id}/{name}"


def raw_request(server, target: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    """Send the request line exactly as given (no client-side normalisation of '..' or '%')."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    response_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), response_headers, body


@pytest.fixture
def env(live_server, client):
    """An owner with a ready public video (every artefact present), and a second user."""
    owner = register(client)
    other = register(client)
    client.cookies.clear()  # register() left a session cookie on the shared client
    video_id = make_video(live_server, owner["user"]["id"])
    return {"server": live_server, "owner": owner, "other": other, "video_id": video_id}


@pytest.fixture
def anon(live_server):
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        yield http


# ---------------------------------------------------------------------------------------------
# Range
# ---------------------------------------------------------------------------------------------


def test_full_get_advertises_ranges(env, anon):
    response = anon.get(media(env["video_id"], "hls/360p/seg_00001.m4s"))
    assert response.status_code == 200
    assert response.content == SEGMENT
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(SEGMENT))
    assert "content-range" not in response.headers


@pytest.mark.parametrize("header, start, end", [
    ("bytes=10-19", 10, 20),
    ("bytes=0-0", 0, 1),
    ("bytes=1000-", 1000, len(SEGMENT)),
    ("bytes=-5", len(SEGMENT) - 5, len(SEGMENT)),
    ("bytes=-100000", 0, len(SEGMENT)),          # suffix longer than the file: the whole file
    ("bytes=1030-999999", 1030, len(SEGMENT)),   # end past the file is clamped
])
def test_single_range_is_206(env, anon, header, start, end):
    response = anon.get(media(env["video_id"], "hls/360p/seg_00001.m4s"), headers={"Range": header})
    assert response.status_code == 206, response.text
    assert response.content == SEGMENT[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(SEGMENT)}"
    assert response.headers["content-length"] == str(end - start)
    assert response.headers["content-type"] == "video/iso.segment"


@pytest.mark.parametrize("header", ["bytes=1039-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_is_416(env, anon, header):
    response = anon.get(media(env["video_id"], "hls/360p/seg_00001.m4s"), headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(SEGMENT)}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=abc", "items=0-5", "bytes=9-3", "bytes=-"])
def test_multi_or_malformed_range_answers_whole_file(env, anon, header):
    # Documented choice: several ranges, or a header we cannot parse, get the full 200 body.
    response = anon.get(media(env["video_id"], "hls/360p/seg_00001.m4s"), headers={"Range": header})
    assert response.status_code == 200
    assert response.content == SEGMENT


def test_large_blob_streams_and_ranges_across_chunks(env, anon):
    data = os.urandom(3 * 1024 * 1024 + 123)
    key = keys.hls_key(env["video_id"], "360p/seg_00003.m4s")
    put_blob(env["server"], key, data)
    whole = anon.get(f"/media/{key}")
    assert whole.status_code == 200 and whole.content == data
    start, end = 262_000, 1_900_000  # spans several 256 KiB read chunks
    part = anon.get(f"/media/{key}", headers={"Range": f"bytes={start}-{end - 1}"})
    assert part.status_code == 206 and part.content == data[start:end]


# ---------------------------------------------------------------------------------------------
# Validators
# ---------------------------------------------------------------------------------------------


def test_etag_and_last_modified_give_304(env, anon):
    url = media(env["video_id"], "poster.jpg")
    first = anon.get(url)
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]
    assert re.fullmatch(r'"[^"]+"', etag)
    assert last_modified.endswith("GMT")

    again = anon.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == first.headers["cache-control"]

    assert anon.get(url, headers={"If-None-Match": f'"nope", W/{etag}'}).status_code == 304
    assert anon.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200
    assert anon.get(url, headers={"If-Modified-Since": last_modified}).status_code == 304
    assert anon.get(url, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200


def test_if_range_with_stale_validator_returns_whole_file(env, anon):
    url = media(env["video_id"], "hls/360p/seg_00001.m4s")
    etag = anon.get(url).headers["etag"]
    fresh = anon.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.content == SEGMENT[:10]
    stale = anon.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == SEGMENT


def test_etag_changes_when_blob_is_replaced(env, anon):
    url = media(env["video_id"], "hls/360p/playlist.m3u8")
    before = anon.get(url).headers["etag"]
    put_blob(env["server"], keys.hls_key(env["video_id"], "360p/playlist.m3u8"), RUNG_PLAYLIST.encode() + b"\n")
    after = anon.get(url, headers={"If-None-Match": before})
    assert after.status_code == 200
    assert after.headers["etag"] != before


# ---------------------------------------------------------------------------------------------
# Content types and caching
# ---------------------------------------------------------------------------------------------

IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.mark.parametrize("name, mime, cache", [
    ("hls/master.m3u8", "application/vnd.apple.mpegurl", "public, max-age=60"),
    ("hls/360p/playlist.m3u8", "application/vnd.apple.mpegurl", "public, max-age=60"),
    ("hls/360p/init.mp4", "video/mp4", IMMUTABLE),
    ("hls/360p/seg_00001.m4s", "video/iso.segment", IMMUTABLE),
    ("poster.jpg", "image/jpeg", IMMUTABLE),
    ("preview.webp", "image/webp", IMMUTABLE),
    ("storyboard.jpg", "image/jpeg", IMMUTABLE),
    ("storyboard.vtt", "text/vtt", "public, max-age=60"),
])
def test_mime_types_and_cache_control_of_a_finished_public_video(env, anon, name, mime, cache):
    response = anon.get(media(env["video_id"], name))
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == mime
    assert response.headers["cache-control"] == cache
    assert response.headers["x-content-type-options"] == "nosniff"


def test_playlists_of_a_video_still_publishing_rungs_are_short_lived(env, anon):
    video_id = make_video(env["server"], env["owner"]["user"]["id"], progress=40.0)
    for name in ("hls/master.m3u8", "hls/360p/playlist.m3u8", "storyboard.vtt"):
        assert anon.get(media(video_id, name)).headers["cache-control"] == "public, max-age=2"
    assert anon.get(media(video_id, "hls/360p/seg_00001.m4s")).headers["cache-control"] == IMMUTABLE


def test_processing_video_with_a_published_rung_is_for_its_owner_only(env, anon):
    video_id = make_video(env["server"], env["owner"]["user"]["id"], status=VideoStatus.PROCESSING, progress=30.0)
    url = media(video_id, "hls/master.m3u8")
    assert anon.get(url).status_code == 404
    owner = anon.get(url, headers=env["owner"]["headers"])
    assert owner.status_code == 200
    assert owner.headers["cache-control"] == "private, max-age=2"


def test_sound_is_public_when_its_row_exists(env, anon):
    sound_id = insert_sound(env["server"], env["owner"]["user"]["id"])
    put_blob(env["server"], keys.sound_key(sound_id), b"\x00\x00\x00\x1cftypM4A fake")
    response = anon.get(f"/media/{keys.sound_key(sound_id)}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mp4"
    put_blob(env["server"], "sounds/zzzzzzzzzzzzzzzz.m4a", b"orphan")
    assert anon.get("/media/sounds/zzzzzzzzzzzzzzzz.m4a").status_code == 404


def test_head_returns_headers_without_body(env, anon):
    url = media(env["video_id"], "hls/360p/seg_00001.m4s")
    head = anon.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(SEGMENT))
    assert head.headers["content-type"] == "video/iso.segment"
    assert head.headers["etag"] == anon.get(url).headers["etag"]
    ranged = anon.head(url, headers={"Range": "bytes=5-9"})
    assert ranged.status_code == 206 and ranged.content == b""
    assert ranged.headers["content-range"] == f"bytes 5-9/{len(SEGMENT)}"
    assert anon.head(media(env["video_id"], "source")).status_code == 404


# ---------------------------------------------------------------------------------------------
# Access rules
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [VideoStatus.UPLOADING, VideoStatus.REJECTED, VideoStatus.FAILED])
def test_videos_that_are_not_playable_are_404_even_for_their_owner(env, anon, status):
    video_id = make_video(env["server"], env["owner"]["user"]["id"], status=status)
    for name in ("hls/master.m3u8", "poster.jpg"):
        assert anon.get(media(video_id, name)).status_code == 404
        assert anon.get(media(video_id, name), headers=env["owner"]["headers"]).status_code == 404


def test_processing_with_nothing_published_is_404(env, anon):
    video_id = make_video(env["server"], env["owner"]["user"]["id"], status=VideoStatus.PROCESSING, progress=5.0,
                          renditions=[])
    assert anon.get(media(video_id, "hls/master.m3u8"), headers=env["owner"]["headers"]).status_code == 404


def test_unknown_video_and_unlisted_names_are_404(env, anon):
    assert anon.get(media("doesnotexist0000", "hls/master.m3u8")).status_code == 404
    put_blob(env["server"], keys.artifact_key(env["video_id"], "notes.txt"), b"internal")
    put_blob(env["server"], keys.hls_key(env["video_id"], "360p/seg_00001.ts"), b"ts")
    for name in ("notes.txt", "hls/360p/seg_00001.ts", "hls", "hls/", "", "hls/360p/playlist.m3u8.partial"):
        response = anon.get(media(env["video_id"], name))
        assert response.status_code == 404, name
        assert response.headers["x-content-type-options"] == "nosniff"


def test_source_and_uploads_are_never_served(env, anon):
    video_id = env["video_id"]
    put_blob(env["server"], keys.upload_key("abc123"), b"partial upload")
    signed = sign_video_urls(env["server"].settings, video_id, 600)
    attempts = [
        (media(video_id, "source"), {}),
        (media(video_id, "source"), env["owner"]["headers"]),
        (media(video_id, "source") + "?" + signed, {}),
        ("/media/uploads/abc123", env["owner"]["headers"]),
        (media(video_id, "hls/../source"), {}),
    ]
    for url, headers in attempts:
        response = anon.get(url, headers=headers)
        assert response.status_code == 404, url
        assert SOURCE_SECRET not in response.content


def test_unlisted_video_is_public_by_link(env, anon):
    video_id = make_video(env["server"], env["owner"]["user"]["id"], visibility=Visibility.UNLISTED)
    response = anon.get(media(video_id, "hls/360p/seg_00001.m4s"))
    assert response.status_code == 200
    assert response.headers["cache-control"] == IMMUTABLE


@pytest.mark.parametrize("visibility", [Visibility.PRIVATE, Visibility.FOLLOWERS])
def test_hidden_video_for_owner_only(env, anon, visibility):
    server, owner, other = env["server"], env["owner"], env["other"]
    video_id = make_video(server, owner["user"]["id"], visibility=visibility)
    url = media(video_id, "hls/360p/seg_00001.m4s")
    assert anon.get(url).status_code == 404
    assert anon.get(url, headers=other["headers"]).status_code == 404
    by_bearer = anon.get(url, headers=owner["headers"])
    assert by_bearer.status_code == 200 and by_bearer.content == SEGMENT
    assert by_bearer.headers["cache-control"] == "private, max-age=31536000, immutable"
    with httpx.Client(base_url=server.url, cookies={"clipfeed_session": owner["token"]}) as browser:
        assert browser.get(url).status_code == 200
        assert browser.get(media(video_id, "hls/master.m3u8")).headers["cache-control"] == "private, max-age=60"


def test_signed_url_unlocks_playlists_segments_and_rewrites_uris(env, anon):
    server = env["server"]
    video_id = make_video(server, env["owner"]["user"]["id"], visibility=Visibility.PRIVATE)
    query = sign_video_urls(server.settings, video_id, 300)
    assert re.fullmatch(r"exp=\d+&sig=[A-Za-z0-9_-]{43}", query)

    master = anon.get(media(video_id, "hls/master.m3u8") + "?" + query)
    assert master.status_code == 200
    assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert master.headers["cache-control"].startswith("private, max-age=")
    assert f"360p/playlist.m3u8?{query}\n" in master.text
    assert int(master.headers["content-length"]) == len(master.content)

    # Follow the rewritten URIs exactly as a player would resolve them.
    rung_url = httpx.URL(str(master.url)).join(master.text.strip().splitlines()[-1])
    rung = anon.get(rung_url)
    assert rung.status_code == 200
    assert f'#EXT-X-MAP:URI="init.mp4?{query}"' in rung.text
    uris = [line for line in rung.text.splitlines() if line and not line.startswith("#")]
    assert uris == [f"seg_00001.m4s?{query}", f"seg_00002.m4s?{query}"]
    segment = anon.get(rung_url.join(uris[0]))
    assert segment.status_code == 200 and segment.content == SEGMENT
    max_age = int(segment.headers["cache-control"].split("max-age=")[1].split(",")[0])
    assert 0 < max_age <= 300 + 60  # never outlives the signature
    assert anon.get(rung_url.join(uris[0]), headers={"Range": "bytes=-4"}).content == SEGMENT[-4:]
    init = anon.get(rung_url.join(f"init.mp4?{query}"))
    assert init.status_code == 200 and init.headers["content-type"] == "video/mp4"

    # The rewritten playlist has its own validator and honours Range on the rewritten bytes.
    assert rung.headers["etag"] != anon.get(media(video_id, "hls/360p/playlist.m3u8"),
                                            headers=env["owner"]["headers"]).headers["etag"]
    assert anon.get(rung_url, headers={"If-None-Match": rung.headers["etag"]}).status_code == 304
    assert anon.get(rung_url, headers={"Range": "bytes=0-6"}).content == b"#EXTM3U"

    # The storyboard cues point at the sprite with the same signature, fragment kept last.
    vtt = anon.get(media(video_id, "storyboard.vtt") + "?" + query)
    assert vtt.status_code == 200 and vtt.headers["content-type"].startswith("text/vtt")
    assert f"storyboard.jpg?{query}#xywh=0,0,90,160" in vtt.text
    assert anon.get(httpx.URL(str(vtt.url)).join(f"storyboard.jpg?{query}")).status_code == 200

    # Unsigned playlists for the owner are served verbatim.
    plain = anon.get(media(video_id, "hls/360p/playlist.m3u8"), headers=env["owner"]["headers"])
    assert plain.text == RUNG_PLAYLIST


def test_expired_and_forged_signatures_are_refused(env, anon):
    server = env["server"]
    key = server.settings.signing_key
    video_id = make_video(server, env["owner"]["user"]["id"], visibility=Visibility.PRIVATE)
    other_video = make_video(server, env["owner"]["user"]["id"], visibility=Visibility.PRIVATE)
    url = media(video_id, "hls/master.m3u8")

    expired = anon.get(f"{url}?{sign_query(key, video_id, int(time.time()) - 5)}")
    assert expired.status_code == 403
    assert expired.json()["error"]["code"] == "link_expired"

    future = int(time.time()) + 600
    good = sign_query(key, video_id, future)
    sig = good.split("sig=")[1]
    forged = [
        f"exp={future}&sig={'A' * 43}",
        f"exp={future + 1}&sig={sig}",                     # exp changed after signing
        sign_query(key, other_video, future),              # another video's signature
        sign_query(b"not-the-server-key", video_id, future),
        f"exp=&sig={sig}", f"exp={future}", f"sig={sig}", f"exp=-1&sig={sig}", f"exp={future}&sig={sig}%3D",
    ]
    for query in forged:
        response = anon.get(f"{url}?{query}")
        assert response.status_code == 404, query
    assert anon.get(f"{url}?{good}").status_code == 200
    # An expired link does not lock the owner out.
    assert anon.get(f"{url}?{sign_query(key, video_id, 1)}", headers=env["owner"]["headers"]).status_code == 200


def test_visibility_change_reaches_media_within_the_cache_ttl(env, anon):
    video_id = env["video_id"]
    url = media(video_id, "hls/360p/seg_00001.m4s")
    assert anon.get(url).status_code == 200
    update_video(env["server"], video_id, visibility=Visibility.PRIVATE)
    started = time.monotonic()
    wait_for(lambda: anon.get(url).status_code == 404, timeout=10, interval=0.05,
             message="private video to disappear from /media")
    assert time.monotonic() - started < 3.5  # the access cache holds entries for at most ~2 s
    assert anon.get(url, headers=env["owner"]["headers"]).status_code == 200


# ---------------------------------------------------------------------------------------------
# Blocks: a blocked user's own session cannot fetch the creator's media; anonymous can (by design)
# ---------------------------------------------------------------------------------------------

ALL_MEDIA = ("hls/master.m3u8", "hls/360p/playlist.m3u8", "hls/360p/init.mp4", "hls/360p/seg_00001.m4s",
             "poster.jpg", "preview.webp", "storyboard.jpg", "storyboard.vtt")


def test_a_blocked_user_cannot_fetch_the_creators_media_with_their_session(env, anon):
    server, owner, other = env["server"], env["owner"], env["other"]
    video_id = env["video_id"]
    sound_id = insert_sound(server, owner["user"]["id"])
    put_blob(server, keys.sound_key(sound_id), b"\x00\x00\x00\x1cftypM4A fake")
    urls = [media(video_id, name) for name in ALL_MEDIA] + [f"/media/{keys.sound_key(sound_id)}"]
    # Before the block the other user fetches everything (this also warms the access cache).
    assert [anon.get(url, headers=other["headers"]).status_code for url in urls] == [200] * len(urls)

    blocked = anon.post(f"/api/v1/users/{other['user']['id']}/block", headers=owner["headers"])
    assert blocked.status_code == 200, blocked.text
    wait_for(lambda: anon.get(urls[3], headers=other["headers"]).status_code == 404, timeout=10, interval=0.05,
             message="the block to reach /media")
    with httpx.Client(base_url=server.url, cookies={"clipfeed_session": other["token"]}) as browser:
        for url in urls:
            for response in (anon.get(url, headers=other["headers"]), browser.get(url),
                             anon.head(url, headers=other["headers"]),
                             anon.get(url, headers={**other["headers"], "Range": "bytes=0-3"})):
                assert response.status_code == 404, (url, response.request.method)
                if response.request.method == "GET":
                    assert response.json()["error"]["code"] == "not_found"
                assert response.headers["cache-control"] == "no-store"
    # The creator and everybody else still get them; so does an anonymous request: public media
    # is public (share pages, embeds, CDN edges), a block governs the blocked user's session.
    third = register(anon)
    for headers in (owner["headers"], third["headers"], {}):
        assert [anon.get(url, headers=headers).status_code for url in urls] == [200] * len(urls)
    public = anon.get(urls[3])
    assert public.headers["cache-control"] == IMMUTABLE and public.content == SEGMENT


def test_blocking_the_creator_also_hides_their_media_and_unblocking_restores_it(env, anon):
    owner, other, video_id = env["owner"], env["other"], env["video_id"]
    url = media(video_id, "poster.jpg")
    assert anon.post(f"/api/v1/users/{owner['user']['id']}/block", headers=other["headers"]).status_code == 200
    assert anon.get(url, headers=other["headers"]).status_code == 404
    assert anon.delete(f"/api/v1/users/{owner['user']['id']}/block", headers=other["headers"]).status_code == 200
    wait_for(lambda: anon.get(url, headers=other["headers"]).status_code == 200, timeout=10, interval=0.05,
             message="the unblock to reach /media")


def test_a_blocked_user_cannot_fetch_followers_only_media_even_as_a_follower(env, anon):
    server, owner, other = env["server"], env["owner"], env["other"]
    video_id = make_video(server, owner["user"]["id"], visibility=Visibility.FOLLOWERS)
    url = media(video_id, "hls/360p/seg_00001.m4s")
    assert anon.post(f"/api/v1/users/{owner['user']['id']}/follow", headers=other["headers"]).status_code in (200, 201)
    assert anon.get(url, headers=other["headers"]).status_code == 200
    assert anon.post(f"/api/v1/users/{other['user']['id']}/block", headers=owner["headers"]).status_code == 200
    wait_for(lambda: anon.get(url, headers=other["headers"]).status_code == 404, timeout=10, interval=0.05,
             message="the block to reach followers-only media")
    assert anon.get(url).status_code == 404  # never anonymous


# ---------------------------------------------------------------------------------------------
# Path traversal: raw request lines, so no client normalises them first
# ---------------------------------------------------------------------------------------------


def _outside_secret(server) -> Path:
    secret = Path(server.settings.resolved_data_dir) / "outside-secret.jpg"
    secret.write_bytes(b"OUTSIDE-THE-STORE")
    return secret


def test_traversal_attempts_are_404(env):
    server, video_id = env["server"], env["video_id"]
    _outside_secret(server)
    targets = [
        f"/media/videos/{video_id}/../../../outside-secret.jpg",
        f"/media/videos/{video_id}/hls/../source",
        f"/media/videos/{video_id}/hls/360p/../../../{video_id}/source",
        "/media/../clipfeed.sqlite3",
        "/media/../../../../etc/passwd",
        f"/media/videos/{video_id}/%2e%2e/%2e%2e/%2e%2e/outside-secret.jpg",
        f"/media/videos/{video_id}/hls/%2E%2E/source",
        f"/media/videos%2F{video_id}%2Fposter.jpg",                 # an encoded slash, even for a real key
        f"/media/videos/{video_id}/hls%2F..%2F..%2Fsource",
        f"/media/videos/{video_id}/%70oster.jpg",                    # any percent-encoding at all
        "/media//etc/passwd",
        "/media/%2Fetc%2Fpasswd",
        f"/media/videos\\{video_id}\\poster.jpg",
        f"/media/videos/{video_id}/..\\..\\source",
        f"/media/videos/{video_id}/poster.jpg%00.m3u8",
        f"/media/videos/{video_id}/source%00",
        "/media/C:/Windows/win.ini",
        f"/media/videos/{video_id}/./poster.jpg",
    ]
    for target in targets:
        status, headers, body = raw_request(server, target)
        assert status == 404, (target, status, body[:200])
        assert b"OUTSIDE-THE-STORE" not in body and SOURCE_SECRET not in body
        assert b"root:" not in body


def test_symlinks_planted_under_the_blob_root_are_not_followed(env, anon):
    server = env["server"]
    root = Path(server.settings.blob_root)
    secret = _outside_secret(server)
    video_id = make_video(server, env["owner"]["user"]["id"])
    video_dir = root / "videos" / video_id
    # A file symlinked outside the store, one to the original upload inside it, a directory symlink.
    (video_dir / "poster.jpg").unlink()
    (video_dir / "poster.jpg").symlink_to(secret)
    (video_dir / "preview.webp").unlink()
    (video_dir / "preview.webp").symlink_to(video_dir / "source")
    outside_dir = secret.parent / "outside-dir"
    (outside_dir / "360p").mkdir(parents=True)
    (outside_dir / "360p" / "seg_00001.m4s").write_bytes(b"OUTSIDE-THE-STORE")
    (outside_dir / "master.m3u8").write_bytes(b"OUTSIDE-THE-STORE")
    os.rename(video_dir / "hls", video_dir / "hls-real")
    (video_dir / "hls").symlink_to(outside_dir, target_is_directory=True)
    for name in ("poster.jpg", "preview.webp", "hls/master.m3u8", "hls/360p/seg_00001.m4s"):
        for method in ("GET", "HEAD"):
            response = anon.request(method, media(video_id, name))
            assert response.status_code == 404, (method, name, response.status_code)
            assert b"OUTSIDE-THE-STORE" not in response.content and SOURCE_SECRET not in response.content
