"""HTTP face of uploads: the tus 1.0 server at /api/v1/uploads and the multipart one-shot
POST /api/v1/videos/upload. Parse headers, authorize, call media.uploads, shape the response.

Every rule that can refuse a request is checked before its body is read.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect

from clipfeed.deps import Db, Jobs, Settings, Store, user_from_request
from clipfeed.errors import ClipfeedError, TooLarge, Unauthorized, ValidationFailed
from clipfeed.media import uploads
from clipfeed.media.models import Upload

router = APIRouter(prefix="/api/v1", tags=["uploads"])

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,expiration,checksum"
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
# A client that sends nothing for this long has gone away as far as we are concerned.
BODY_IDLE_SECONDS = 60.0
# Room for multipart boundaries, part headers and the small text fields around the file.
MULTIPART_OVERHEAD = 256 * 1024
FORM_FIELD_LIMIT = 16 * 1024
FORM_FIELDS = ("caption", "visibility", "sound_id", "sound_volume")


class TusVersionUnsupported(ClipfeedError):
    status = 412
    code = "unsupported_tus_version"


class UnsupportedMediaType(ClipfeedError):
    status = 415
    code = "unsupported_media_type"


class MethodNotAllowed(ClipfeedError):
    status = 405
    code = "method_not_allowed"


# --- helpers -----------------------------------------------------------------------------

def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _tus_endpoint(handler):
    """Checks Tus-Resumable and puts it (and no-store) on every answer, errors included."""

    @functools.wraps(handler)
    async def wrapper(request: Request, **kwargs):
        try:
            if request.headers.get("tus-resumable", "").strip() != TUS_VERSION:
                raise TusVersionUnsupported(
                    f"this server speaks tus {TUS_VERSION}; send `Tus-Resumable: {TUS_VERSION}`",
                    headers={"Tus-Version": TUS_VERSION})
            response = await handler(request, **kwargs)
        except ClipfeedError as exc:
            exc.headers = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **exc.headers}
            raise
        response.headers["Tus-Resumable"] = TUS_VERSION
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return wrapper


async def _require_user(request: Request, db):
    # A short transaction of its own: nothing stays open while a body streams.
    user = await user_from_request(request, db)
    if user is None:
        raise Unauthorized("sign in to upload (missing or expired token)", headers={"WWW-Authenticate": "Bearer"})
    return user


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _upload_url(request: Request, settings, upload_id: str) -> str:
    base = settings.public_base_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/api/v1/uploads/{upload_id}"


def _state_headers(upload: Upload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset)}
    if upload.completed_at is None:
        headers["Upload-Expires"] = _http_date(upload.expires_at)
    return headers


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a disconnect or a long stall becomes BodyInterrupted."""
    stream = request.stream()
    try:
        while True:
            try:
                async with asyncio.timeout(BODY_IDLE_SECONDS):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except (ClientDisconnect, TimeoutError):
                raise uploads.BodyInterrupted() from None
            if chunk:
                yield chunk
    finally:
        await stream.aclose()


# --- tus ---------------------------------------------------------------------------------

@router.options("/uploads", status_code=204)
@router.options("/uploads/{upload_id}", status_code=204)
async def tus_options(settings: Settings) -> Response:
    return Response(status_code=204, headers={
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(uploads.CHECKSUM_ALGORITHMS),
    })


@router.post("/uploads", status_code=201)
@_tus_endpoint
async def tus_create(request: Request, db: Db, store: Store, jobs: Jobs, settings: Settings) -> Response:
    user = await _require_user(request, db)
    headers = request.headers
    if "upload-defer-length" in headers:
        raise uploads.InvalidUploadRequest(
            "Upload-Defer-Length is not supported: send Upload-Length with the file's size", code="defer_unsupported")
    if "upload-concat" in headers:
        raise uploads.InvalidUploadRequest("the concatenation extension is not supported", code="concat_unsupported")
    length = uploads.parse_size(headers.get("upload-length"), "Upload-Length", required=True)
    uploads.check_length(settings, length)
    metadata = uploads.parse_metadata(headers.get("upload-metadata"))
    content_length = uploads.parse_size(headers.get("content-length"), "Content-Length")
    with_body = _media_type(request) == OFFSET_OCTET_STREAM
    checksum = None
    if with_body:
        checksum = uploads.parse_checksum(headers.get("upload-checksum"))
        if content_length is not None and content_length > length:
            raise TooLarge(f"the body ({content_length} bytes) is longer than Upload-Length ({length})",
                           code="exceeds_upload_length")
    elif content_length:
        raise UnsupportedMediaType(f"a creation request with a body must send Content-Type: {OFFSET_OCTET_STREAM}")

    upload = await uploads.create_upload(db, settings, user, length=length, metadata=metadata)
    created = {"Location": _upload_url(request, settings, upload.id), "Clipfeed-Video-Id": upload.video_id}
    if with_body and content_length != 0:
        try:
            upload = await uploads.append(db, store, jobs, settings, upload.id, user, offset=0,
                                          content_length=content_length, checksum=checksum, chunks=_body(request))
        except ClipfeedError as exc:
            # The upload exists all the same: tell the client where, so it can resume.
            exc.headers = {**created, **exc.headers}
            raise
    return Response(status_code=201, headers={**created, **_state_headers(upload)})


@router.head("/uploads/{upload_id}")
@_tus_endpoint
async def tus_head(request: Request, upload_id: str, db: Db) -> Response:
    user = await _require_user(request, db)
    upload = await uploads.get_upload(db, upload_id, user)
    headers = {"Upload-Length": str(upload.length), **_state_headers(upload)}
    if upload.metadata_:
        headers["Upload-Metadata"] = uploads.encode_metadata(upload.metadata_)
    return Response(status_code=200, headers=headers)


async def _patch(request: Request, upload_id: str, db, store, jobs, settings) -> Response:
    user = await _require_user(request, db)
    if _media_type(request) != OFFSET_OCTET_STREAM:
        raise UnsupportedMediaType(f"a tus PATCH must send Content-Type: {OFFSET_OCTET_STREAM}")
    offset = uploads.parse_size(request.headers.get("upload-offset"), "Upload-Offset", required=True)
    content_length = uploads.parse_size(request.headers.get("content-length"), "Content-Length")
    checksum = uploads.parse_checksum(request.headers.get("upload-checksum"))
    upload = await uploads.append(db, store, jobs, settings, upload_id, user, offset=offset,
                                  content_length=content_length, checksum=checksum, chunks=_body(request))
    return Response(status_code=204, headers=_state_headers(upload))


async def _delete(request: Request, upload_id: str, db, store) -> Response:
    user = await _require_user(request, db)
    await uploads.terminate_upload(db, store, upload_id, user)
    return Response(status_code=204)


@router.patch("/uploads/{upload_id}", status_code=204)
@_tus_endpoint
async def tus_patch(request: Request, upload_id: str, db: Db, store: Store, jobs: Jobs, settings: Settings) -> Response:
    return await _patch(request, upload_id, db, store, jobs, settings)


@router.delete("/uploads/{upload_id}", status_code=204)
@_tus_endpoint
async def tus_delete(request: Request, upload_id: str, db: Db, store: Store) -> Response:
    return await _delete(request, upload_id, db, store)


@router.post("/uploads/{upload_id}", status_code=204)
@_tus_endpoint
async def tus_method_override(request: Request, upload_id: str, db: Db, store: Store, jobs: Jobs,
                              settings: Settings) -> Response:
    """For clients behind proxies that only pass GET/POST (tus `X-HTTP-Method-Override`)."""
    method = request.headers.get("x-http-method-override", "").strip().upper()
    if method == "PATCH":
        return await _patch(request, upload_id, db, store, jobs, settings)
    if method == "DELETE":
        return await _delete(request, upload_id, db, store)
    raise MethodNotAllowed("POST to an upload URL needs X-HTTP-Method-Override: PATCH or DELETE")


# --- multipart one-shot upload -----------------------------------------------------------

class _Form:
    """Callbacks for python-multipart's streaming parser: the `file` part is handed on in
    pieces as it arrives, the small text fields are collected (bounded)."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file_seen = False
        self.ended = False
        self.pieces: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._target: str | None = None
        self._buffer = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end, "on_end": self._end}

    def _part_begin(self) -> None:
        self._headers, self._target, self._buffer = {}, None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field, self._value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b"").decode("latin-1"))
        name = options.get(b"name", b"").decode("latin-1")
        filename = options.get(b"filename")
        if name == "file" and not self.file_seen:
            self.file_seen = True
            self._target = "file"
            if filename is not None:
                self.filename = filename.decode("utf-8", errors="replace")
        elif name in FORM_FIELDS and filename is None:
            self._target = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target == "file":
            self.pieces.append(data[start:end])
        elif self._target is not None:
            self._buffer += data[start:end]
            if len(self._buffer) > FORM_FIELD_LIMIT:
                raise TooLarge(f"the form field {self._target!r} is longer than {FORM_FIELD_LIMIT} bytes",
                               code="field_too_large")

    def _part_end(self) -> None:
        if self._target not in (None, "file"):
            try:
                self.fields[self._target] = bytes(self._buffer).decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationFailed(f"{self._target} is not UTF-8 text", field=self._target) from None
        self._target = None

    def _end(self) -> None:
        self.ended = True


@router.post("/videos/upload", status_code=201, tags=["videos"])
async def multipart_upload(request: Request, db: Db, store: Store, jobs: Jobs, settings: Settings) -> Response:
    """One-shot upload for simple clients: multipart/form-data with `file` and optional
    `caption`, `visibility`, `sound_id`, `sound_volume`. Same limits as tus; the file streams to storage."""
    user = await _require_user(request, db)
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("send multipart/form-data with a `file` part")
    body_cap = settings.max_upload_bytes + MULTIPART_OVERHEAD
    content_length = uploads.parse_size(request.headers.get("content-length"), "Content-Length")
    if content_length is not None and content_length > body_cap:
        raise TooLarge(f"uploads are limited to {settings.max_upload_bytes} bytes", code="upload_too_large")

    form = _Form()
    try:
        parser = MultipartParser(boundary, form.callbacks())
    except Exception:
        raise uploads.InvalidUploadRequest("the multipart boundary is invalid", code="invalid_multipart") from None

    async def file_pieces() -> AsyncIterator[bytes]:
        total = 0
        checked = False
        async for chunk in _body(request):
            total += len(chunk)
            if total > body_cap:
                raise TooLarge(f"uploads are limited to {settings.max_upload_bytes} bytes; nothing was kept",
                               code="upload_too_large")
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise uploads.InvalidUploadRequest(f"malformed multipart body: {exc}", code="invalid_multipart") from None
            if form.pieces:
                if not checked:
                    # The fields sent before the file are final: refuse bad ones before storing any of it.
                    checked = True
                    await uploads.check_video_fields(db, user, form.fields)
                pieces, form.pieces = form.pieces, []
                for piece in pieces:
                    yield piece
        parser.finalize()

    try:
        staged_key, size = await uploads.stage_file(store, settings, file_pieces())
    except uploads.BodyInterrupted:
        raise uploads.InvalidUploadRequest("the upload was interrupted; nothing was kept", code="upload_interrupted") from None
    if not form.file_seen or not form.ended or parser.state != MultipartState.END:
        await uploads.discard_staged(store, staged_key)
        if not form.file_seen:
            raise ValidationFailed("the form has no `file` part", field="file")
        raise uploads.InvalidUploadRequest("the multipart body ended early; nothing was kept", code="invalid_multipart")
    video = await uploads.publish_staged(
        db, store, jobs, user, staged_key=staged_key, size=size, filename=form.filename,
        caption=form.fields.get("caption"), visibility=form.fields.get("visibility"),
        sound_id=form.fields.get("sound_id"), sound_volume=form.fields.get("sound_volume"))
    return JSONResponse({"video": {"id": video.id, "status": video.status}}, status_code=201)
