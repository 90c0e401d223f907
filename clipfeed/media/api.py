from __future__ import annotations

from fastapi import APIRouter, Response

from clipfeed.deps import CurrentUser, OptionalUser, Pagination, Session, Settings, Store
from clipfeed.media import service
from clipfeed.media.presenter import present_video, present_videos
from clipfeed.media.schemas import VideoPatch

router = APIRouter(prefix="/api/v1", tags=["videos"])


@router.get("/videos/{video_id}")
async def get_video(video_id: str, session: Session, viewer: OptionalUser, settings: Settings):
    video = await service.get_visible(session, video_id, viewer)
    return await present_video(session, video, viewer, settings)


@router.patch("/videos/{video_id}")
async def patch_video(video_id: str, body: VideoPatch, session: Session, user: CurrentUser, settings: Settings):
    video = await service.get_owned(session, video_id, user)
    await service.update_video(session, video, caption=body.caption, visibility=body.visibility,
                               comments_enabled=body.comments_enabled)
    return await present_video(session, video, user, settings)


@router.delete("/videos/{video_id}", status_code=204)
async def delete_video(video_id: str, session: Session, user: CurrentUser, store: Store):
    video = await service.get_owned(session, video_id, user)
    await service.delete_video(session, store, video)
    return Response(status_code=204)


@router.get("/users/{user_id}/videos")
async def user_videos(user_id: str, session: Session, viewer: OptionalUser, page: Pagination, settings: Settings):
    videos, next_cursor = await service.list_user_videos(session, user_id, viewer, limit=page.limit,
                                                         cursor=page.cursor)
    return {"items": await present_videos(session, videos, viewer, settings), "next_cursor": next_cursor}
