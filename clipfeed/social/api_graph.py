"""Follows, blocks and profiles."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from clipfeed.accounts import profiles as profile_edits
from clipfeed.deps import CurrentUser, Limiter, OptionalUser, Pagination, Session, Settings
from clipfeed.social import graph, profiles

router = APIRouter(prefix="/api/v1", tags=["social graph"])

WINDOW_S = 60


class FollowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The video the follow came from (creator analytics: follows gained per video).
    video_id: str | None = Field(default=None, max_length=32)


class ProfilePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, max_length=profile_edits.MAX_DISPLAY_NAME)
    bio: str | None = Field(default=None, max_length=profile_edits.MAX_BIO)
    region: str | None = Field(default=None, max_length=8)
    interests: list[str] | None = Field(default=None, max_length=50)  # hashtags; normalized, at most 10 kept


def _follow_out(user_id: str, state: graph.FollowState) -> dict:
    return {"user_id": user_id, "following": state.following, "changed": state.changed,
            "follower_count": state.follower_count, "following_count": state.following_count}


async def _people(session, viewer, rows, next_cursor, at_name: str) -> dict:
    followed = await graph.followed_ids(session, viewer.id, [u.id for u, _ in rows]) if viewer else set()
    items = [{**graph.user_summary(u), at_name: at.isoformat(), "is_following": u.id in followed}
             for u, at in rows]
    return {"items": items, "next_cursor": next_cursor}


@router.post("/users/{user_id}/follow")
async def follow(user_id: str, session: Session, user: CurrentUser, limiter: Limiter, settings: Settings,
                 body: FollowRequest | None = None):
    await limiter.hit("follow", user.id, limit=settings.follows_per_minute, window_s=WINDOW_S)
    state = await graph.follow(session, user, user_id, video_id=body.video_id if body else None)
    return _follow_out(user_id, state)


@router.delete("/users/{user_id}/follow")
async def unfollow(user_id: str, session: Session, user: CurrentUser, limiter: Limiter, settings: Settings):
    await limiter.hit("follow", user.id, limit=settings.follows_per_minute, window_s=WINDOW_S)
    return _follow_out(user_id, await graph.unfollow(session, user, user_id))


@router.get("/users/{user_id}/followers")
async def followers(user_id: str, session: Session, viewer: OptionalUser, page: Pagination):
    rows, next_cursor = await graph.list_followers(session, user_id, viewer, limit=page.limit, cursor=page.cursor)
    return await _people(session, viewer, rows, next_cursor, "followed_at")


@router.get("/users/{user_id}/following")
async def following(user_id: str, session: Session, viewer: OptionalUser, page: Pagination):
    rows, next_cursor = await graph.list_following(session, user_id, viewer, limit=page.limit, cursor=page.cursor)
    return await _people(session, viewer, rows, next_cursor, "followed_at")


@router.post("/users/{user_id}/block")
async def block(user_id: str, session: Session, user: CurrentUser, limiter: Limiter, settings: Settings):
    await limiter.hit("block", user.id, limit=settings.follows_per_minute, window_s=WINDOW_S)
    changed = await graph.block(session, user, user_id)
    return {"user_id": user_id, "blocked": True, "changed": changed}


@router.delete("/users/{user_id}/block")
async def unblock(user_id: str, session: Session, user: CurrentUser, limiter: Limiter, settings: Settings):
    await limiter.hit("block", user.id, limit=settings.follows_per_minute, window_s=WINDOW_S)
    changed = await graph.unblock(session, user, user_id)
    return {"user_id": user_id, "blocked": False, "changed": changed}


@router.get("/me/blocks")
async def my_blocks(session: Session, user: CurrentUser, page: Pagination):
    rows, next_cursor = await graph.list_blocks(session, user, limit=page.limit, cursor=page.cursor)
    items = [{"id": u.id, "handle": u.handle, "display_name": u.display_name, "blocked_at": at.isoformat()}
             for u, at in rows]
    return {"items": items, "next_cursor": next_cursor}


@router.get("/users/by-handle/{handle}")
async def profile_by_handle(handle: str, session: Session, viewer: OptionalUser):
    return await profiles.profile_by_handle(session, handle, viewer)


@router.get("/users/{user_id}/profile")
async def profile(user_id: str, session: Session, viewer: OptionalUser):
    return await profiles.profile(session, user_id, viewer)


@router.patch("/me")
async def patch_me(body: ProfilePatch, session: Session, user: CurrentUser):
    await profile_edits.update_profile(session, user, body.model_dump(exclude_unset=True))
    return await profiles.profile(session, user.id, user)
