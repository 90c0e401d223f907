"""Interactions: likes, views, shares, comments; hashtag and sound pages."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from clipfeed.deps import CurrentUser, Limiter, OptionalUser, Pagination, Session, Settings
from clipfeed.media.presenter import present_videos
from clipfeed.social import comments, interactions, tags
from clipfeed.social.interaction_schemas import CommentIn, ShareIn, ViewIn

router = APIRouter(prefix="/api/v1", tags=["interactions"])


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/videos/{video_id}/like")
async def like(video_id: str, session: Session, user: CurrentUser, settings: Settings, limiter: Limiter):
    await limiter.hit("likes", user.id, limit=settings.likes_per_minute, window_s=60)
    return await interactions.like(session, video_id, user)


@router.delete("/videos/{video_id}/like")
async def unlike(video_id: str, session: Session, user: CurrentUser, settings: Settings, limiter: Limiter):
    await limiter.hit("likes", user.id, limit=settings.likes_per_minute, window_s=60)
    return await interactions.unlike(session, video_id, user)


@router.post("/videos/{video_id}/view")
async def view(video_id: str, body: ViewIn, request: Request, session: Session, viewer: OptionalUser,
               settings: Settings):
    return await interactions.record_view(
        session, settings, video_id, viewer, watch_ms=body.watch_ms, completed=body.completed,
        replay=body.replay, client_ip=_client_ip(request), user_agent=request.headers.get("user-agent", ""))


@router.post("/videos/{video_id}/share")
async def share(video_id: str, request: Request, session: Session, viewer: OptionalUser, settings: Settings,
                limiter: Limiter, body: ShareIn | None = None):
    subject = viewer.id if viewer else f"ip:{_client_ip(request)}"
    await limiter.hit("shares", subject, limit=settings.shares_per_minute, window_s=60)
    return await interactions.share(session, settings, video_id, viewer, channel=body.channel if body else None,
                                    request_base_url=str(request.base_url))


@router.post("/videos/{video_id}/comment", status_code=201)
async def comment(video_id: str, body: CommentIn, session: Session, user: CurrentUser, settings: Settings,
                  limiter: Limiter):
    await limiter.hit("comments", user.id, limit=settings.comments_per_minute, window_s=60)
    return await comments.create_comment(session, video_id, user, text=body.text, parent_id=body.parent_id)


@router.get("/videos/{video_id}/comments")
async def list_comments(video_id: str, session: Session, viewer: OptionalUser, page: Pagination):
    items, next_cursor = await comments.list_comments(session, video_id, viewer, limit=page.limit, cursor=page.cursor)
    return {"items": items, "next_cursor": next_cursor}


@router.get("/comments/{comment_id}/replies")
async def list_replies(comment_id: str, session: Session, viewer: OptionalUser, page: Pagination):
    items, next_cursor = await comments.list_replies(session, comment_id, viewer, limit=page.limit,
                                                     cursor=page.cursor)
    return {"items": items, "next_cursor": next_cursor}


@router.delete("/comments/{comment_id}", status_code=204)
async def delete_comment(comment_id: str, session: Session, user: CurrentUser):
    await comments.delete_comment(session, comment_id, user)
    return Response(status_code=204)


@router.get("/hashtags/{tag}")
async def hashtag(tag: str, session: Session):
    return tags.hashtag_out(await tags.get_hashtag(session, tag))


@router.get("/hashtags/{tag}/videos")
async def hashtag_videos(tag: str, session: Session, viewer: OptionalUser, page: Pagination, settings: Settings):
    hashtag, videos, next_cursor = await tags.hashtag_videos(session, tag, viewer, limit=page.limit,
                                                             cursor=page.cursor)
    return {**tags.hashtag_out(hashtag), "items": await present_videos(session, videos, viewer, settings),
            "next_cursor": next_cursor}


@router.get("/sounds/{sound_id}")
async def sound(sound_id: str, session: Session, viewer: OptionalUser):
    return await tags.sound_out(session, await tags.get_sound(session, sound_id, viewer))


@router.get("/sounds/{sound_id}/videos")
async def sound_videos(sound_id: str, session: Session, viewer: OptionalUser, page: Pagination, settings: Settings):
    found, videos, next_cursor = await tags.sound_videos(session, sound_id, viewer, limit=page.limit,
                                                         cursor=page.cursor)
    return {"sound": await tags.sound_out(session, found),
            "items": await present_videos(session, videos, viewer, settings), "next_cursor": next_cursor}
