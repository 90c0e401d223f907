"""Notifications: the inbox (cursor, unread count, mark read) and its live stream (SSE)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from clipfeed.deps import CurrentUser, Db, Pagination, Session, Settings, user_from_request
from clipfeed.errors import Unauthorized, ValidationFailed
from clipfeed.social import notifications

router = APIRouter(prefix="/api/v1", tags=["notifications"])


class MarkRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[str, Field(min_length=1, max_length=32)]] | None = Field(default=None, max_length=500)
    all: bool = False


@router.get("/notifications")
async def list_notifications(session: Session, user: CurrentUser, page: Pagination):
    items, next_cursor = await notifications.list_notifications(session, user, limit=page.limit, cursor=page.cursor)
    return {"items": items, "next_cursor": next_cursor,
            "unread_count": await notifications.unread_count(session, user.id)}


@router.post("/notifications/read")
async def mark_read(body: MarkRead, session: Session, user: CurrentUser):
    if not body.all and body.ids is None:
        raise ValidationFailed('give "ids" (a list) or "all": true', field="ids")
    updated = await notifications.mark_read(session, user, ids=body.ids, everything=body.all)
    return {"updated": updated, "unread_count": await notifications.unread_count(session, user.id)}


@router.get("/notifications/stream", response_class=StreamingResponse,
            summary="Server-Sent Events: `event: notification` frames; heartbeats; Last-Event-ID replay")
async def stream(request: Request, db: Db, settings: Settings):
    # Resolved in a short transaction of its own: the stream must not hold one open.
    user = await user_from_request(request, db)
    if user is None:
        raise Unauthorized("sign in to do this (missing or expired token)")
    last_event_id = (request.headers.get("last-event-id") or "").strip()[:32] or None
    return StreamingResponse(
        notifications.stream(db, settings, user.id, last_event_id), media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
