"""Delivery rules: which blob key may be served, to whom, with which headers; URL signing.

Everything here is pure or nearly so (the access cache holds one DB lookup per video id for a
couple of seconds), so the /media route stays a thin, fast adapter around it.

Signed URLs: ``?exp=<unix seconds>&sig=<base64url(HMAC-SHA256(signing_key, "videos/{id}/\\n{exp}"))>``.
The signature covers the video's whole prefix, so one query string unlocks its master playlist,
rung playlists, segments and images; playlists served under a signature are rewritten so every
URI they reference carries the same query.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from enum import Enum
from urllib.parse import urlencode

from sqlalchemy import select

from clipfeed.accounts import service as accounts
from clipfeed.config import Settings
from clipfeed.db import Database
from clipfeed.media import keys
from clipfeed.media import service as media
from clipfeed.media.models import Sound, Video, VideoStatus
from clipfeed.social import graph

# ---------------------------------------------------------------------------------------------
# Which keys exist for the outside world (an allow-list; everything else is a 404)
# ---------------------------------------------------------------------------------------------

_ID = r"[0-9A-Za-z]{1,32}"
_RUNG = r"[0-9A-Za-z][0-9A-Za-z_-]{0,31}"
_VIDEO_KEY = re.compile(
    rf"^videos/(?P<vid>{_ID})/(?:"
    r"(?P<artifact>poster\.jpg|preview\.webp|storyboard\.jpg|storyboard\.vtt)"
    r"|hls/(?P<master>master\.m3u8)"
    rf"|hls/(?P<rung>{_RUNG})/(?P<rungfile>playlist\.m3u8|init\.mp4|seg_[0-9]{{1,9}}\.m4s)"
    r")$"
)
_SOUND_KEY = re.compile(rf"^sounds/(?P<sid>{_ID})\.m4a$")

MIME_TYPES = {
    "m3u8": "application/vnd.apple.mpegurl",
    "m4s": "video/iso.segment",
    "mp4": "video/mp4",
    "m4a": "audio/mp4",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "vtt": "text/vtt; charset=utf-8",
}

YEAR = 31536000
# Playlists (and the storyboard cue file) of a video whose ladder is still being published
# change within seconds; finished ones only change if the video is re-processed.
LIVE_PLAYLIST_MAX_AGE = 2
FINAL_PLAYLIST_MAX_AGE = 60


class Kind(str, Enum):
    PLAYLIST = "playlist"   # .m3u8: may change while rungs are added; rewritten under a signature
    TEXT = "text"           # .vtt: cached like playlists
    IMMUTABLE = "immutable"  # segments, init, images: never change under the same key


@dataclass(frozen=True, slots=True)
class MediaKey:
    key: str
    kind: Kind
    mime: str
    video_id: str | None = None
    sound_id: str | None = None


def parse_media_key(key: str) -> MediaKey | None:
    """The served form of a key, or None when the key is not one /media ever serves.

    Only server-built names pass: the original upload (``videos/{id}/source``), ``uploads/...``,
    anything with '..', '%', backslashes or unexpected names never match.
    """
    if len(key) > 200:
        return None
    match = _VIDEO_KEY.match(key)
    if match is not None:
        ext = key.rsplit(".", 1)[1]
        kind = Kind.PLAYLIST if ext == "m3u8" else Kind.TEXT if ext == "vtt" else Kind.IMMUTABLE
        return MediaKey(key, kind, MIME_TYPES[ext], video_id=match["vid"])
    match = _SOUND_KEY.match(key)
    if match is not None:
        return MediaKey(key, Kind.IMMUTABLE, MIME_TYPES["m4a"], sound_id=match["sid"])
    return None


# ---------------------------------------------------------------------------------------------
# Signed URLs
# ---------------------------------------------------------------------------------------------


def _signature(signing_key: bytes, video_id: str, exp: int) -> str:
    message = f"{keys.video_prefix(video_id)}\n{exp}".encode()
    digest = hmac.new(signing_key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_query(signing_key: bytes, video_id: str, exp: int) -> str:
    return urlencode({"exp": exp, "sig": _signature(signing_key, video_id, exp)})


def sign_video_urls(settings: Settings, video_id: str, expires_in: int) -> str:
    """The query string (without '?') that unlocks every /media key of one video until now+expires_in.

    Expiry is rounded up to a whole minute so URLs built within the same minute are identical
    (browser and CDN caches then reuse them).
    """
    exp = int(time.time()) + max(1, int(expires_in))
    exp += -exp % 60
    return sign_query(settings.signing_key, video_id, exp)


class Signature(Enum):
    ABSENT = "absent"
    VALID = "valid"
    EXPIRED = "expired"   # genuine but past its exp: only a holder of a real link learns this
    INVALID = "invalid"   # forged, malformed, or for another video: treated like no signature


def check_signature(signing_key: bytes, video_id: str, exp: str | None, sig: str | None,
                    now: float | None = None) -> Signature:
    if exp is None and sig is None:
        return Signature.ABSENT
    if not exp or not sig or len(exp) > 12 or not exp.isdigit() or len(sig) > 64:
        return Signature.INVALID
    expected = _signature(signing_key, video_id, int(exp))
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        return Signature.INVALID
    if int(exp) < (time.time() if now is None else now):
        return Signature.EXPIRED
    return Signature.VALID


_URI_ATTR = re.compile(r'URI="([^"]*)"')


def _with_query(uri: str, query: str) -> str:
    # Only URIs on this origin: relative ones and absolute paths; never another host's URL.
    if not uri or "://" in uri or uri.startswith("//") or uri.startswith("data:") or "sig=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


def rewrite_playlist(text: str, query: str) -> str:
    """Append `query` to every URI of an HLS playlist: URI lines and URI="..." attributes
    (EXT-X-MAP, EXT-X-MEDIA, EXT-X-I-FRAME-STREAM-INF, EXT-X-KEY, ...)."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        if not body.strip():
            out.append(line)
        elif body.startswith("#"):
            out.append(_URI_ATTR.sub(lambda m: f'URI="{_with_query(m.group(1), query)}"', body) + ending)
        else:
            out.append(_with_query(body.strip(), query) + ending)
    return "".join(out)


_VTT_IMAGE = re.compile(r"^(?P<uri>[A-Za-z0-9][A-Za-z0-9._/-]*\.(?:jpg|webp))(?P<fragment>#\S*)?$")


def rewrite_storyboard_vtt(text: str, query: str) -> str:
    """Append `query` to the image URIs of a storyboard WebVTT (cue payloads such as
    ``storyboard.jpg#xywh=0,0,90,160``), keeping the media fragment last."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        match = _VTT_IMAGE.match(body.strip())
        if match is None:
            out.append(line)
        else:
            out.append(_with_query(match["uri"], query) + (match["fragment"] or "") + line[len(body):])
    return "".join(out)


def rewrite_for_signature(kind: Kind, text: str, query: str) -> str:
    return rewrite_playlist(text, query) if kind is Kind.PLAYLIST else rewrite_storyboard_vtt(text, query)


# ---------------------------------------------------------------------------------------------
# Who may see a video's media
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VideoAccess:
    """What delivery needs to know about a video (the fields media.visibility_allows reads)."""

    id: str
    owner_id: str
    status: str
    visibility: str
    progress: float
    published: bool  # at least one rung is in the store

    @property
    def servable(self) -> bool:
        """Uploading, rejected, failed, or processing with nothing published: nothing to serve."""
        return self.status == VideoStatus.READY or (self.status == VideoStatus.PROCESSING and self.published)

    @property
    def public(self) -> bool:
        """Viewable without knowing the viewer (no owner, no signature): cacheable by shared
        caches. Only a signed-in viewer on the wrong side of a block is still refused."""
        return self.servable and media.visibility_allows(self, None)

    @property
    def settled(self) -> bool:
        """Its playlists will not change any more (every rung published)."""
        return self.status == VideoStatus.READY and (self.progress or 0) >= 100

    def viewable_by(self, user_id: str | None, *, follows_owner: bool = False, blocked: bool = False) -> bool:
        if not self.servable:
            return False
        return media.visibility_allows(self, user_id, follows_owner=follows_owner, blocked=blocked)


@dataclass(frozen=True, slots=True)
class ViewerRelation:
    follows_owner: bool = False
    blocked: bool = False


NO_RELATION = ViewerRelation()


class AccessCache:
    """A tiny in-process TTL cache of VideoAccess per video id (and the owner of each sound id,
    the user behind a session token, and follow/block state per viewer and owner), so hot
    segments do not hit the database on every request. Concurrent misses for one key share a
    single lookup. A change of visibility, status, session or relationship reaches /media within
    `ttl` seconds."""

    def __init__(self, db: Database, *, ttl: float = 2.0, max_entries: int = 20000):
        self.db = db
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, object]] = {}
        self._pending: dict[str, asyncio.Future] = {}

    def invalidate(self, video_id: str) -> None:
        self._entries.pop(f"v:{video_id}", None)

    async def video(self, video_id: str) -> VideoAccess | None:
        return await self._get(f"v:{video_id}", lambda: self._load_video(video_id))

    async def sound_owner(self, sound_id: str) -> str | None:
        """The creator of a sound (None: no such sound)."""
        return await self._get(f"s:{sound_id}", lambda: self._load_sound(sound_id))

    async def viewer_id(self, token: str) -> str | None:
        """The user a session token belongs to (None: unknown or expired)."""
        token_hash = accounts.hash_token(token)
        return await self._get(f"t:{token_hash}", lambda: self._load_viewer(token))

    async def relation(self, viewer_id: str | None, owner_id: str) -> ViewerRelation:
        if not viewer_id or viewer_id == owner_id:
            return NO_RELATION
        return await self._get(f"r:{viewer_id}:{owner_id}", lambda: self._load_relation(viewer_id, owner_id))

    async def _get(self, cache_key: str, load):
        now = time.monotonic()
        entry = self._entries.get(cache_key)
        if entry is not None and entry[0] > now:
            return entry[1]
        pending = self._pending.get(cache_key)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._pending[cache_key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        else:
            future.set_result(value)
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[cache_key] = (time.monotonic() + self.ttl, value)
            return value
        finally:
            del self._pending[cache_key]

    async def _load_video(self, video_id: str) -> VideoAccess | None:
        query = select(Video.owner_id, Video.status, Video.visibility, Video.progress, Video.renditions) \
            .where(Video.id == video_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return VideoAccess(video_id, row.owner_id, row.status, row.visibility, row.progress or 0.0,
                           bool(row.renditions))

    async def _load_viewer(self, token: str) -> str | None:
        async with self.db.sessions() as session:
            user = await accounts.user_for_token(session, token)
            return user.id if user is not None else None

    async def _load_relation(self, viewer_id: str, owner_id: str) -> ViewerRelation:
        async with self.db.engine.connect() as conn:
            rel = await graph.relation(conn, viewer_id, owner_id)
        return ViewerRelation(follows_owner=rel.following, blocked=rel.blocked)

    async def _load_sound(self, sound_id: str) -> str | None:
        async with self.db.engine.connect() as conn:
            return (await conn.execute(select(Sound.owner_id).where(Sound.id == sound_id))).scalar_one_or_none()


# ---------------------------------------------------------------------------------------------
# HTTP semantics: Range, validators, caching
# ---------------------------------------------------------------------------------------------

UNSATISFIABLE = (-1, -1)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single byte range as [start, end) within `size`; None to answer with the whole blob;
    UNSATISFIABLE for a 416.

    Forms: ``bytes=a-b``, ``bytes=a-``, ``bytes=-n``. A malformed header is ignored (RFC 9110
    lets a server ignore Range). A multi-range request (``bytes=0-1,5-6``) is answered with the
    whole blob (200): players never ask for several ranges, and multipart/byteranges bodies
    would only add a code path to get wrong.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()) or len(first) > 18 \
            or len(last) > 18:
        return None
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    end = size if not last else min(size, int(last) + 1)
    return start, end


def _etag_values(header: str) -> list[str]:
    return [part.strip().removeprefix("W/") for part in header.split(",") if part.strip()]


def not_modified(if_none_match: str | None, if_modified_since: str | None, etag: str,
                 modified: datetime) -> bool:
    """Whether a conditional GET/HEAD can be answered with 304 (If-None-Match wins over
    If-Modified-Since, weak comparison)."""
    if if_none_match is not None:
        values = _etag_values(if_none_match)
        return "*" in values or etag.removeprefix("W/") in values
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        if since is None or since.tzinfo is None:
            return False
        return int(modified.timestamp()) <= int(since.timestamp())
    return False


def if_range_matches(if_range: str | None, etag: str) -> bool:
    """A Range applies unless If-Range names another (strong) validator."""
    if not if_range:
        return True
    return if_range.strip() == etag


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def cache_control(kind: Kind, *, public: bool, settled: bool, max_age_cap: int | None = None) -> str:
    """Cache-Control for a served blob.

    Segments, init segments and images never change under one key: a year, immutable.
    Playlists and .vtt: 2 s while the ladder is still being published, 60 s once settled.
    Hidden videos (owner or signed access) are `private`; under a signature max-age never
    outlives the signature.
    """
    if kind is Kind.IMMUTABLE:
        max_age = YEAR
    else:
        max_age = FINAL_PLAYLIST_MAX_AGE if settled else LIVE_PLAYLIST_MAX_AGE
    if max_age_cap is not None:
        max_age = max(0, min(max_age, max_age_cap))
    scope = "public" if public else "private"
    if kind is Kind.IMMUTABLE and max_age == YEAR:
        return f"{scope}, max-age={YEAR}, immutable"
    return f"{scope}, max-age={max_age}"
