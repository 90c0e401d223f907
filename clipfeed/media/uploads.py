"""Resumable uploads (tus 1.0 semantics) and one-shot uploads: the rules, no HTTP types.

Where the bytes live: a tus upload appends straight into the video's source blob
(`keys.source_key(video_id)`), so completing an upload moves nothing and a restart can never
find the bytes half-way between two places. The database row (`uploads`) is the authority on
how many of those bytes count: a blob longer than the recorded offset (a request interrupted
by a crash) is truncated back to the offset before the next append.

Concurrency: a PATCH takes a short lease on the row (compare-and-set on id, offset and an
expired lock), renews it while bytes flow, and records the new offset with another
compare-and-set, so two requests can never both append to one upload.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.db import Database, on_commit, utcnow
from clipfeed.errors import ClipfeedError, Conflict, NotFound, TooLarge, ValidationFailed
from clipfeed.jobs import JobQueue
from clipfeed.media import keys
from clipfeed.media import service as media
from clipfeed.media.models import Upload, Video, VideoStatus
from clipfeed.storage import BlobStore

log = logging.getLogger("clipfeed.uploads")

# A PATCH holds its lease this long past the last renewal; renewals happen every
# LEASE_RENEW_SECONDS while the request streams. A server killed mid-PATCH blocks the upload
# for at most LEASE_SECONDS (the client gets 423 with Retry-After meanwhile).
LEASE_SECONDS = 8.0
LEASE_RENEW_SECONDS = 2.0
# Bytes are only handed to the store while the lease was renewed this recently, which leaves
# a margin before another request could take the lease over.
LEASE_WRITE_WINDOW = LEASE_SECONDS - 3.0

METADATA_MAX_CHARS = 8192
METADATA_FIELDS = ("filename", "caption", "visibility", "sound_id", "sound_volume")
CHECKSUM_ALGORITHMS: dict[str, Callable] = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}


# --- errors ------------------------------------------------------------------------------

class InvalidUploadRequest(ClipfeedError):
    status = 400
    code = "invalid_upload_request"


class UploadExpired(ClipfeedError):
    status = 410
    code = "upload_expired"


class UploadLocked(ClipfeedError):
    status = 423
    code = "upload_locked"


class ChecksumMismatch(ClipfeedError):
    status = 460
    code = "checksum_mismatch"


class BodyInterrupted(Exception):
    """Raised by a chunk source when the client went away (or stalled) mid-body."""


class StorageUnavailable(ClipfeedError):
    status = 503
    code = "storage_unavailable"


def _storage_error(exc: OSError) -> StorageUnavailable:
    log.error("blob storage failed during an upload", exc_info=exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageUnavailable("the server is out of storage space; nothing was kept, try again later",
                                  status=507, code="insufficient_storage")
    return StorageUnavailable("storage is unavailable; nothing was kept, try again later",
                              headers={"Retry-After": "30"})


class _LeaseLost(Exception):
    pass


class _TooManyBytes(Exception):
    pass


# --- header grammar ----------------------------------------------------------------------

def parse_size(value: str | None, name: str, *, required: bool = False) -> int | None:
    """A tus size header: a non-negative decimal integer."""
    if value is None:
        if required:
            raise InvalidUploadRequest(f"the {name} header is required", code="missing_header")
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise InvalidUploadRequest(f"{name} must be a non-negative integer, not {value[:40]!r}",
                                   code="invalid_header")
    return int(value)


def parse_metadata(header: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64(value)` pairs; a key may come without value."""
    if header is None or not header.strip():
        return {}
    if len(header) > METADATA_MAX_CHARS:
        raise InvalidUploadRequest(f"Upload-Metadata is longer than {METADATA_MAX_CHARS} characters",
                                   code="invalid_metadata")
    result: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if not key or len(parts) > 2 or not key.isascii() or not key.isprintable():
            raise InvalidUploadRequest(f"Upload-Metadata pair {pair.strip()[:60]!r} is not `key base64value`",
                                       code="invalid_metadata")
        if key in result:
            raise InvalidUploadRequest(f"Upload-Metadata repeats the key {key!r}", code="invalid_metadata")
        encoded = parts[1] if len(parts) == 2 else ""
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidUploadRequest(f"Upload-Metadata value of {key!r} is not valid base64",
                                       code="invalid_metadata") from None
        try:
            result[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidUploadRequest(f"Upload-Metadata value of {key!r} is not UTF-8 text",
                                       code="invalid_metadata") from None
    return result


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" if value else key
                    for key, value in metadata.items())


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def hasher(self):
        return CHECKSUM_ALGORITHMS[self.algorithm]()


def parse_checksum(header: str | None) -> Checksum | None:
    """Upload-Checksum: `<algorithm> <base64 digest>`."""
    if header is None:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2:
        raise InvalidUploadRequest("Upload-Checksum must be `<algorithm> <base64 digest>`", code="invalid_checksum")
    algorithm = parts[0].lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise InvalidUploadRequest(
            f"checksum algorithm {parts[0][:20]!r} is not supported; use one of {', '.join(CHECKSUM_ALGORITHMS)}",
            code="unsupported_checksum_algorithm")
    try:
        digest = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidUploadRequest("Upload-Checksum digest is not valid base64", code="invalid_checksum") from None
    if len(digest) != CHECKSUM_ALGORITHMS[algorithm]().digest_size:
        raise InvalidUploadRequest(f"Upload-Checksum digest has the wrong length for {algorithm}",
                                   code="invalid_checksum")
    return Checksum(algorithm, digest)


# --- creation, status, termination -------------------------------------------------------

def check_length(settings: Settings, length: int) -> None:
    if length <= 0:
        raise InvalidUploadRequest("an upload must have at least one byte (Upload-Length is 0)", code="empty_upload")
    if length > settings.max_upload_bytes:
        raise TooLarge(f"uploads are limited to {settings.max_upload_bytes} bytes; this one has {length}",
                       code="upload_too_large")


def _expiry(settings: Settings, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + timedelta(hours=settings.upload_expiry_hours)


async def create_upload(db: Database, settings: Settings, owner: User, *, length: int,
                        metadata: dict[str, str]) -> Upload:
    """The video (status 'uploading') and the upload row, in one transaction."""
    check_length(settings, length)
    async with db.transaction() as session:
        video = await media.create_video(
            session, owner, filename=metadata.get("filename") or metadata.get("name"),
            caption=metadata.get("caption"), visibility=metadata.get("visibility"),
            sound_id=metadata.get("sound_id"), sound_volume=metadata.get("sound_volume"))
        upload = Upload(id=secrets.token_hex(16), video_id=video.id, owner_id=owner.id, length=length, offset=0,
                        blob_key=keys.source_key(video.id), metadata_=metadata, expires_at=_expiry(settings))
        session.add(upload)
        await session.flush()
    return upload


def _visible(upload: Upload | None, user: User) -> Upload:
    # Someone else's upload is indistinguishable from a missing one.
    if upload is None or upload.owner_id != user.id:
        raise NotFound("upload not found")
    return upload


def is_expired(upload: Upload, now: datetime | None = None) -> bool:
    return upload.completed_at is None and upload.expires_at <= (now or utcnow())


async def get_upload(db: Database, upload_id: str, user: User) -> Upload:
    """The caller's upload (HEAD): 404 if missing or not theirs, 410 once it expired."""
    async with db.transaction() as session:
        upload = _visible(await session.get(Upload, upload_id), user)
    if is_expired(upload):
        raise UploadExpired("this upload expired; start a new one")
    return upload


async def terminate_upload(db: Database, store: BlobStore, upload_id: str, user: User) -> None:
    """tus termination: the bytes, the upload row and the still-uploading video all go."""
    async with db.transaction() as session:
        upload = _visible(await session.get(Upload, upload_id), user)
        if upload.completed_at is not None:
            raise Conflict("this upload is complete; delete the video (DELETE /api/v1/videos/{id}) instead",
                           code="upload_complete")
        await _discard(session, store, upload)


async def _discard(session: AsyncSession, store: BlobStore, upload: Upload) -> None:
    blob_key, video_id = upload.blob_key, upload.video_id
    await session.delete(upload)
    await session.flush()
    video = await session.get(Video, video_id)
    if video is not None and video.status == VideoStatus.UPLOADING:
        await media.discard_upload(session, store, video)
    on_commit(session, lambda: store.delete(blob_key))


async def cleanup_expired_uploads(db: Database, store: BlobStore) -> int:
    """Delete expired, incomplete uploads that no request is writing to: blob, row, video.
    Returns how many uploads were removed. Safe to run concurrently with requests and itself."""
    removed = 0
    while True:
        now = utcnow()
        expired = (Upload.completed_at.is_(None), Upload.expires_at <= now,
                   or_(Upload.lock_expires_at.is_(None), Upload.lock_expires_at < now))
        async with db.transaction() as session:
            rows = (await session.execute(
                select(Upload.id, Upload.video_id, Upload.blob_key).where(*expired).limit(200))).all()
        progress = 0
        for upload_id, video_id, blob_key in rows:
            async with db.transaction() as session:
                # Re-checked by the statement that deletes: a PATCH may have taken the lease meanwhile.
                deleted = await session.execute(delete(Upload).where(Upload.id == upload_id, *expired)
                                                .execution_options(synchronize_session=False))
                if deleted.rowcount != 1:
                    continue
                video = await session.get(Video, video_id)
                if video is not None and video.status == VideoStatus.UPLOADING:
                    await media.discard_upload(session, store, video)
                on_commit(session, lambda key=blob_key: store.delete(key))
            progress += 1
            log.info("removed expired upload %s (video %s)", upload_id, video_id)
        removed += progress
        if not progress:
            return removed


# --- appending ---------------------------------------------------------------------------

class _Lease:
    """A row lease renewed in the background while one request streams into the upload."""

    def __init__(self, db: Database, upload_id: str, token: str):
        self.db = db
        self.upload_id = upload_id
        self.token = token
        self.renewed = time.monotonic()
        self.lost = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), LEASE_RENEW_SECONDS)
            if self._stopping.is_set():
                return
            started = time.monotonic()  # the new expiry counts from before the round trip
            try:
                async with self.db.transaction() as session:
                    result = await session.execute(
                        update(Upload).where(Upload.id == self.upload_id, Upload.lock_token == self.token)
                        .values(lock_expires_at=utcnow() + timedelta(seconds=LEASE_SECONDS))
                        .execution_options(synchronize_session=False))
            except Exception:  # a slow or unreachable database: check() stops the writes in time
                log.warning("could not renew the lease on upload %s", self.upload_id, exc_info=True)
                continue
            if result.rowcount != 1:
                self.lost = True
                return
            self.renewed = started

    def check(self) -> None:
        if self.lost or time.monotonic() - self.renewed > LEASE_WRITE_WINDOW:
            raise _LeaseLost()

    async def stop(self) -> None:
        # Let a renewal in flight finish rather than cancelling it inside a transaction.
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None

    async def release(self) -> None:
        with contextlib.suppress(Exception):
            async with self.db.transaction() as session:
                await session.execute(
                    update(Upload).where(Upload.id == self.upload_id, Upload.lock_token == self.token)
                    .values(lock_token=None, lock_expires_at=None).execution_options(synchronize_session=False))


async def _acquire_lease(db: Database, upload: Upload) -> _Lease:
    token = secrets.token_hex(16)
    started, now = time.monotonic(), utcnow()
    async with db.transaction() as session:
        result = await session.execute(
            update(Upload)
            .where(Upload.id == upload.id, Upload.offset == upload.offset, Upload.completed_at.is_(None),
                   Upload.expires_at > now,
                   or_(Upload.lock_expires_at.is_(None), Upload.lock_expires_at < now))
            .values(lock_token=token, lock_expires_at=now + timedelta(seconds=LEASE_SECONDS))
            .execution_options(synchronize_session=False))
        if result.rowcount == 1:
            lease = _Lease(db, upload.id, token)
            lease.renewed = started
            lease.start()
            return lease
        current = await session.get(Upload, upload.id)
    # Lost the race: say why.
    if current is None:
        raise NotFound("upload not found")
    if current.completed_at is not None:
        raise Conflict("this upload is already complete", code="upload_complete",
                       headers={"Upload-Offset": str(current.offset)})
    if current.offset != upload.offset:
        raise Conflict(f"Upload-Offset {upload.offset} no longer matches the upload's offset {current.offset}",
                       code="offset_mismatch", headers={"Upload-Offset": str(current.offset)})
    if is_expired(current, now):
        raise UploadExpired("this upload expired; start a new one")
    wait = (current.lock_expires_at - now).total_seconds() if current.lock_expires_at else 1
    raise UploadLocked("another request is writing to this upload; retry shortly",
                       headers={"Retry-After": str(max(1, int(wait) + 1))})


async def append(db: Database, store: BlobStore, jobs: JobQueue, settings: Settings, upload_id: str,
                 user: User, *, offset: int, content_length: int | None, checksum: Checksum | None,
                 chunks: AsyncIterable[bytes]) -> Upload:
    """Append one request body to the caller's upload (tus PATCH); returns the updated upload.

    Every rule is checked before the first byte of `chunks` is read: ownership (404), expiry
    (410), completion and offset (409), size (413), then the lease (423/409).
    """
    async with db.transaction() as session:
        upload = _visible(await session.get(Upload, upload_id), user)
    if upload.completed_at is not None:
        raise Conflict("this upload is already complete", code="upload_complete",
                       headers={"Upload-Offset": str(upload.offset)})
    if is_expired(upload):
        raise UploadExpired("this upload expired; start a new one")
    if offset != upload.offset:
        raise Conflict(f"Upload-Offset {offset} does not match the upload's offset {upload.offset}; "
                       "ask with HEAD and resume from there", code="offset_mismatch",
                       headers={"Upload-Offset": str(upload.offset)})
    remaining = upload.length - upload.offset
    if content_length is not None and content_length > remaining:
        raise TooLarge(f"this request carries {content_length} bytes but only {remaining} remain "
                       f"of the declared Upload-Length {upload.length}", code="exceeds_upload_length")

    lease = await _acquire_lease(db, upload)
    try:
        return await _stream_into(db, store, jobs, settings, upload, lease, remaining=remaining,
                                  checksum=checksum, chunks=chunks)
    except OSError as exc:  # stat/truncate before the body, or the cleanup after a failure
        await lease.release()
        raise _storage_error(exc) from exc
    finally:
        await lease.stop()


async def _stream_into(db: Database, store: BlobStore, jobs: JobQueue, settings: Settings, upload: Upload,
                       lease: _Lease, *, remaining: int, checksum: Checksum | None,
                       chunks: AsyncIterable[bytes]) -> Upload:
    key, old = upload.blob_key, upload.offset
    # Make the blob agree with the recorded offset: bytes of a request that never recorded its
    # offset (the server died mid-body) do not count.
    info = await store.stat(key)
    size = info.size if info else 0
    if size > old:
        await store.truncate(key, old)
    elif size < old:
        # The blob lost bytes the row counted (storage restored from backup?): the blob wins.
        await _record(db, store, jobs, settings, upload, lease, old=old, new=size)
        raise Conflict(f"the upload's offset was corrected to {size}; ask with HEAD and resume",
                       code="offset_mismatch", headers={"Upload-Offset": str(size)})

    hasher = checksum.hasher() if checksum else None
    received = 0
    interrupted = False

    async def guarded() -> AsyncIterator[bytes]:
        nonlocal received, interrupted
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                if received + len(chunk) > remaining:
                    raise _TooManyBytes()
                lease.check()
                if hasher is not None:
                    hasher.update(chunk)
                received += len(chunk)
                yield chunk
        except BodyInterrupted:
            # The client went away: end the body here so the store keeps what arrived.
            interrupted = True
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    try:
        written = await store.append(key, guarded(), max_bytes=remaining)
    except _LeaseLost:
        # Another request may own the blob now: touch nothing.
        raise UploadLocked("this request lost its lease on the upload (it stalled); ask with HEAD and resume",
                           headers={"Retry-After": "1"}) from None
    except _TooManyBytes:
        await store.truncate(key, old)
        await lease.release()
        raise TooLarge(f"the body is longer than the {remaining} bytes that remain of this upload; "
                       "nothing was kept", code="exceeds_upload_length") from None
    except asyncio.CancelledError:
        raise  # the lease expires on its own; the next request truncates the blob
    except Exception as exc:
        with contextlib.suppress(Exception):
            await store.truncate(key, old)
        await lease.release()
        if isinstance(exc, OSError):
            raise _storage_error(exc) from exc
        raise

    if interrupted and checksum is not None:
        # A partial chunk cannot be verified against its checksum: discard it.
        await store.truncate(key, old)
        await lease.release()
        return upload
    if hasher is not None and hasher.digest() != checksum.digest:
        await store.truncate(key, old)
        await lease.release()
        raise ChecksumMismatch(f"Checksum Mismatch: the {checksum.algorithm} of the {received} bytes received "
                               "does not match Upload-Checksum; they were discarded",
                               headers={"Upload-Offset": str(old)})
    return await _record(db, store, jobs, settings, upload, lease, old=old, new=old + written)


async def _record(db: Database, store: BlobStore, jobs: JobQueue, settings: Settings, upload: Upload, lease: _Lease, *,
                  old: int, new: int) -> Upload:
    """Compare-and-set the offset, release the lease, and hand a complete upload to processing."""
    now = utcnow()
    complete = new >= upload.length
    values: dict = {"offset": new, "lock_token": None, "lock_expires_at": None}
    if complete:
        values["completed_at"] = now
    else:
        values["expires_at"] = _expiry(settings, now)
    await lease.stop()
    try:
        async with db.transaction() as session:
            result = await session.execute(
                update(Upload).where(Upload.id == upload.id, Upload.offset == old, Upload.lock_token == lease.token)
                .values(**values).execution_options(synchronize_session=False))
            if result.rowcount != 1:
                raise _LeaseLost()
            if complete:
                video = await session.get(Video, upload.video_id)
                if video is None:  # deleted meanwhile (the row would have gone with it)
                    raise _LeaseLost()
                await media.upload_finished(session, jobs, video, source_key=upload.blob_key, size=new)
    except _LeaseLost:
        async with db.transaction() as session:
            exists = await session.get(Upload, upload.id) is not None
        if not exists:
            # Terminated while this request streamed: make sure no bytes are left behind.
            await store.delete(upload.blob_key)
            raise NotFound("upload not found (it was terminated)") from None
        raise Conflict("the upload changed while this request was streaming; ask with HEAD and resume",
                       code="offset_mismatch") from None
    upload.offset = new
    upload.lock_token = None
    upload.lock_expires_at = None
    if complete:
        upload.completed_at = now
    else:
        upload.expires_at = values["expires_at"]
    return upload


# --- one-shot uploads (multipart) --------------------------------------------------------

async def stage_file(store: BlobStore, settings: Settings, chunks: AsyncIterable[bytes]) -> tuple[str, int]:
    """Write a whole file to a fresh staging blob, never more than max_upload_bytes of it.
    Returns (staging key, size); on any failure nothing is left behind."""
    key = keys.upload_key(secrets.token_hex(16))
    limit = settings.max_upload_bytes
    size = 0

    async def capped() -> AsyncIterator[bytes]:
        nonlocal size
        async for chunk in chunks:
            if size + len(chunk) > limit:
                raise _TooManyBytes()
            size += len(chunk)
            yield chunk

    try:
        await store.put(key, capped())
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await store.delete(key)
        if isinstance(exc, _TooManyBytes):
            raise TooLarge(f"uploads are limited to {limit} bytes; nothing was kept", code="upload_too_large") from None
        if isinstance(exc, OSError):
            raise _storage_error(exc) from exc
        raise
    return key, size


async def check_video_fields(db: Database, owner: User, fields: dict[str, str]) -> None:
    """The rules create_video applies to caption, visibility and sound, checked early (a one-shot
    upload whose fields come before its file is refused before the file's bytes are stored)."""
    async with db.transaction() as session:
        await media.check_video_fields(session, owner, caption=fields.get("caption"),
                                       visibility=fields.get("visibility"), sound_id=fields.get("sound_id"),
                                       sound_volume=fields.get("sound_volume"))


async def discard_staged(store: BlobStore, key: str) -> None:
    with contextlib.suppress(Exception):
        await store.delete(key)


async def _move_blob(store: BlobStore, source: str, target: str) -> None:
    path = store.local_path(source)
    if path is not None:
        await store.put_file(target, path, move=True)
    else:
        await store.put(target, store.read(source))
        await store.delete(source)


async def publish_staged(db: Database, store: BlobStore, jobs: JobQueue, owner: User, *, staged_key: str,
                         size: int, filename: str | None, caption: str | None, visibility: str | None,
                         sound_id: str | None, sound_volume: str | None = None) -> Video:
    """A staged one-shot upload becomes a video in processing (the job starts after the commit).
    The staging blob is consumed either way."""
    if size <= 0:
        await discard_staged(store, staged_key)
        raise ValidationFailed("the file is empty", code="empty_upload", field="file")
    committed = False
    source: str | None = None

    def mark_committed() -> None:
        nonlocal committed
        committed = True

    try:
        async with db.transaction() as session:
            video = await media.create_video(session, owner, filename=filename, caption=caption,
                                             visibility=visibility, sound_id=sound_id,
                                             sound_volume=sound_volume)
            on_commit(session, mark_committed)
            source = keys.source_key(video.id)
            await _move_blob(store, staged_key, source)
            await media.upload_finished(session, jobs, video, source_key=source, size=size)
    except BaseException:
        if not committed:
            await discard_staged(store, staged_key)
            if source is not None:
                await discard_staged(store, source)
        raise
    return video
