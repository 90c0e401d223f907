"""Search endpoints: videos and users, relevance blended with popularity (see service.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from clipfeed.deps import OptionalUser, Session, Settings
from clipfeed.media.presenter import present_videos
from clipfeed.search import service
from clipfeed.social import graph

router = APIRouter(prefix="/api/v1/search", tags=["search"])

Limit = Annotated[int, Query(ge=1, le=service.MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=200)]
Q = Annotated[str | None, Query(max_length=service.MAX_QUERY_CHARS)]


@router.get("/videos")
async def search_videos(session: Session, viewer: OptionalUser, settings: Settings, q: Q = None,
                        limit: Limit = 20, cursor: Cursor = None):
    videos, next_cursor = await service.search_videos(session, viewer, q, limit=limit, cursor=cursor)
    return {"items": await present_videos(session, videos, viewer, settings), "next_cursor": next_cursor}


@router.get("/users")
async def search_users(session: Session, viewer: OptionalUser, q: Q = None, limit: Limit = 20,
                       cursor: Cursor = None):
    users, next_cursor = await service.search_users(session, viewer, q, limit=limit, cursor=cursor)
    followed = await graph.followed_ids(session, viewer.id, [u.id for u in users]) if viewer else set()
    items = [{**graph.user_summary(u), "is_following": u.id in followed} for u in users]
    return {"items": items, "next_cursor": next_cursor}
