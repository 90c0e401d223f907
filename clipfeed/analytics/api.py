"""Creator analytics endpoints."""

from __future__ import annotations

from fastapi import APIRouter

from clipfeed.analytics import service
from clipfeed.deps import CurrentUser, Session

router = APIRouter(prefix="/api/v1", tags=["analytics"])


@router.get("/videos/{video_id}/analytics")
async def video_analytics(video_id: str, session: Session, user: CurrentUser):
    return await service.video_analytics(session, video_id, user)


@router.get("/me/analytics")
async def my_analytics(session: Session, user: CurrentUser):
    """Across all of the signed-in creator's videos: views per day (the analytics page's chart)."""
    return {"views_by_day": await service.creator_views_by_day(session, user)}
