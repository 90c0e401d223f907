"""Feeds (Following, Trending) and the trending hashtag and sound lists."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from clipfeed.deps import (CurrentReader, CurrentUser, Db, OptionalReader, Pagination, ReadSession, Session, Settings,
                           Store)
from clipfeed.feed import foryou, trending
from clipfeed.feed.following import following_feed
from clipfeed.media.presenter import present_videos, video_out
from clipfeed.social import tags

router = APIRouter(prefix="/api/v1", tags=["feeds"])

Limit = Annotated[int, Query(ge=1, le=trending.MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=200)]
Region = Annotated[str | None, Query(max_length=8)]


# The feed GETs only read: on a read session (on SQLite no BEGIN: no write lock, no snapshot held).
@router.get("/feed/following")
async def feed_following(session: ReadSession, viewer: CurrentReader, settings: Settings, page: Pagination):
    videos, next_cursor = await following_feed(session, viewer, limit=page.limit, cursor=page.cursor)
    return {"items": await present_videos(session, videos, viewer, settings), "next_cursor": next_cursor}


@router.get("/feed/trending")
async def feed_trending(session: ReadSession, viewer: OptionalReader, settings: Settings, limit: Limit = 20,
                        cursor: Cursor = None, region: Region = None):
    videos, next_cursor, region_code = await trending.trending_videos(
        session, settings, viewer, region=region, limit=limit, cursor=cursor)
    return {"items": await present_videos(session, videos, viewer, settings), "next_cursor": next_cursor,
            "region": region_code}


@router.get("/trending/hashtags")
async def trending_hashtags(session: ReadSession, viewer: OptionalReader, settings: Settings, limit: Limit = 20,
                            cursor: Cursor = None, region: Region = None):
    items, next_cursor, region_code = await trending.trending_hashtags(
        session, settings, viewer, region=region, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": next_cursor, "region": region_code}


@router.get("/trending/sounds")
async def trending_sounds(session: ReadSession, viewer: OptionalReader, settings: Settings, limit: Limit = 20,
                          cursor: Cursor = None, region: Region = None):
    sounds, scores, next_cursor, region_code = await trending.trending_sounds(
        session, settings, viewer, region=region, limit=limit, cursor=cursor)
    items = [{**await tags.sound_out(session, sound), "score": round(score, 4)} for sound, score in zip(sounds, scores)]
    return {"items": items, "next_cursor": next_cursor, "region": region_code}


@router.get("/feed/for-you")
async def feed_for_you(session: ReadSession, db: Db, store: Store, viewer: OptionalReader,
                       settings: Settings, limit: Limit = 20, cursor: Annotated[str | None, Query(max_length=400)] = None,
                       explain: bool = False, region: Region = None):
    # A page reads (and ranks) on a read transaction; only its impressions are written, in a
    # short transaction of their own (see ForYouEngine._serve).
    engine = foryou.engine_for(settings, store)
    page = await engine.page(session, db, viewer, limit=limit, cursor=cursor, region=region)
    # The page's visibility query also read the viewer's likes: no second query, and the
    # body goes out as a JSONResponse of plain dicts (FastAPI's encoder walk cost ~1.5 ms/page).
    liked = page["liked"]
    items = [video_out(video, viewer, settings, liked=video.id in liked) for _item, video in page["items"]]
    if explain:
        for out, (item, _video) in zip(items, page["items"]):
            out["explain"] = foryou.explain_item(item)
    body = {"items": items, "next_cursor": page["next_cursor"], "mode": page["mode"]}
    if explain:
        body["dropped"] = page["dropped"]
        body["models"] = await engine.model_versions()
    return JSONResponse(body)


@router.post("/videos/{video_id}/not-interested")
async def not_interested(video_id: str, session: Session, viewer: CurrentUser):
    return await foryou.not_interested(session, video_id, viewer)
