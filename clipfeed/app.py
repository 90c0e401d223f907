"""create_app(settings) -> the FastAPI application: routers, lifespan, error handlers, web client."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipfeed.config import Settings
from clipfeed.db import Database
from clipfeed.errors import ClipfeedError
from clipfeed.events import EventBus
from clipfeed.jobs import JobQueue
from clipfeed.ratelimit import RateLimiter
from clipfeed.storage import build_store
from clipfeed.live.chat_wire import RawSocketMiddleware
from clipfeed.web.csp import ContentSecurityPolicyMiddleware

log = logging.getLogger("clipfeed")

WEB_STATIC = Path(__file__).parent / "web" / "static"

# Headers a browser tus client must be allowed to read and send across origins.
TUS_EXPOSED_HEADERS = [
    "Location", "Upload-Offset", "Upload-Length", "Upload-Expires", "Upload-Metadata", "Tus-Version",
    "Tus-Resumable", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm", "Clipfeed-Video-Id",
]
TUS_REQUEST_HEADERS = [
    "Authorization", "Content-Type", "Tus-Resumable", "Upload-Offset", "Upload-Length", "Upload-Metadata",
    "Upload-Checksum", "Upload-Defer-Length", "Upload-Concat", "X-HTTP-Method-Override", "X-Requested-With",
]


def _error(status: int, code: str, message: str, headers: dict | None = None, field: str | None = None) -> JSONResponse:
    body = {"code": code, "message": message}
    if field:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClipfeedError)
    async def clipfeed_error(_request: Request, exc: ClipfeedError):
        return _error(exc.status, exc.code, exc.message, exc.headers, exc.field)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
        field = ".".join(loc) or None
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            message, field = "request body is not valid JSON", None
        return _error(422, "validation_error", f"{field}: {message}" if field else message, field=field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), exc.headers)

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def database_busy(_request: Request, exc: SQLAlchemyTimeoutError):
        # Every pooled connection stayed busy for database_pool_timeout_s: overload, not a bug.
        log.warning("database pool exhausted: %s", exc)
        return _error(503, "busy", "the server is busy; try again in a moment", {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception):
        log.exception("unhandled error", exc_info=exc)
        return _error(500, "internal_error", "something went wrong on our side")


def create_app(settings: Settings | None = None, *, run_workers: bool | None = None, store=None) -> FastAPI:
    """`store`: a BlobStore to use instead of the one `storage_url` names (another implementation
    of the protocol, e.g. an object store)."""
    settings = settings or Settings()
    start_workers = settings.run_workers if run_workers is None else run_workers

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.db = Database(settings)
        app.state.store = store if store is not None else build_store(settings)
        app.state.events = EventBus()
        app.state.jobs = JobQueue(settings)
        app.state.limiter = RateLimiter(settings)
        if start_workers:
            app.state.jobs.start_consumer()
        app.state.ingest = None
        if settings.rtmp_enabled:
            from clipfeed.live.ingest import LiveIngest

            ingest = LiveIngest(settings, app.state.db, jobs=app.state.jobs, store=app.state.store)
            try:
                await ingest.start()
                app.state.ingest = ingest
            except OSError as exc:
                # The web app is worth more than live publishing: a port already taken (another
                # RTMP server on this laptop) turns ingest off instead of stopping `serve`.
                log.error("RTMP ingest not started on %s:%s (%s); live publishing is off. "
                          "Free the port or set CLIPFEED_RTMP_PORT.", settings.rtmp_host, settings.rtmp_port,
                          exc.strerror or exc)
        try:
            yield
        finally:
            if app.state.ingest is not None:
                await app.state.ingest.stop()
            app.state.jobs.stop_consumer()  # before the clients: no new job can publish after
            from clipfeed.live import chat, presence  # live's Redis clients (chat, presence, pubsub)

            await chat.close_clients(app)
            await presence.close_clients()
            from clipfeed.feed.foryou import drop_engine  # the For You queues of this app

            drop_engine(settings)
            await app.state.limiter.close()
            await app.state.db.dispose()

    app = FastAPI(title="clipfeed", version="0.1.0", lifespan=lifespan,
                  docs_url="/api/docs", openapi_url="/api/openapi.json")
    _install_error_handlers(app)
    app.add_middleware(ContentSecurityPolicyMiddleware)
    # Live chat writes pre-built frames to uvicorn's WebSocket protocol (clipfeed/live/chat_wire.py).
    app.add_middleware(RawSocketMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=True,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            allow_headers=TUS_REQUEST_HEADERS, expose_headers=TUS_EXPOSED_HEADERS, max_age=600,
        )

    from clipfeed.accounts.api import router as accounts_router
    from clipfeed.delivery.api import router as delivery_router
    from clipfeed.media.api import router as videos_router
    from clipfeed.media.tus import router as tus_router
    from clipfeed.web.pages import router as pages_router
    from clipfeed.web.share import router as share_router
    from clipfeed.analytics.api import router as analytics_router
    from clipfeed.feed.api import router as feed_router
    from clipfeed.search.api import router as search_router
    from clipfeed.social.api import router as interactions_router
    from clipfeed.social.api_graph import router as graph_router
    from clipfeed.social.api_notifications import router as notifications_router
    from clipfeed.live.api import router as live_router
    from clipfeed.live.chat import router as live_chat_router
    from clipfeed.live.pages import router as live_pages_router
    from clipfeed.live.playback import router as live_playback_router
    from clipfeed.live.hooks import router as live_hooks_router

    # The feeds first: routes are matched in order and a feed page is the most frequent request
    # (its paths overlap no other router's, so the order changes nothing else).
    app.include_router(feed_router)
    app.include_router(accounts_router)
    app.include_router(tus_router)
    app.include_router(videos_router)
    app.include_router(live_playback_router)  # before delivery: /media/live/ is not a video key
    app.include_router(delivery_router)
    app.include_router(live_hooks_router)
    app.include_router(graph_router)
    app.include_router(interactions_router)
    app.include_router(notifications_router)
    app.include_router(search_router)
    app.include_router(analytics_router)
    app.include_router(pages_router)
    app.include_router(share_router)
    app.include_router(live_router)
    app.include_router(live_chat_router)
    app.include_router(live_pages_router)

    @app.get("/healthz", tags=["ops"])
    async def healthz():
        return {"status": "ok"}

    WEB_STATIC.mkdir(parents=True, exist_ok=True)
    app.mount("/static", StaticFiles(directory=WEB_STATIC), name="static")
    return app
