"""Hashtags on videos (kept in step with captions) and the hashtag and sound pages.

``hashtags.video_count`` is the exact number of videos (any status or visibility) whose caption
carries the tag: links are inserted with ON CONFLICT DO NOTHING / deleted with RETURNING and the
count moves atomically only for links that really changed. Pages list only what the viewer may
see (``media.service.listed_filter``: ready; public, or followers-only from creators the viewer
follows; never unlisted or private; never across a block). Newest first, cursor-paginated.
"""

from __future__ import annotations

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.errors import NotFound
from clipfeed.media import keys
from clipfeed.media import service as media
from clipfeed.media.models import Sound, Video, VideoStatus, Visibility
from clipfeed.pagination import decode_cursor, encode_cursor
from clipfeed.social.graph import is_blocked
from clipfeed.social.interactions import insert_ignore, visible_video
from clipfeed.social.models import Hashtag, Notification, VideoHashtag
from clipfeed.social.text import normalize_tag, parse_hashtags, parse_mentions


async def _bump_tag(session: AsyncSession, hashtag_id: int, delta: int) -> None:
    await session.execute(update(Hashtag).where(Hashtag.id == hashtag_id)
                          .values(video_count=Hashtag.video_count + delta)
                          .execution_options(synchronize_session=False))


async def sync_video_hashtags(session: AsyncSession, video: Video) -> list[str]:
    """Make the video's hashtag links match its caption. Call after setting the caption."""
    wanted = parse_hashtags(video.caption or "")
    current = dict((await session.execute(
        select(Hashtag.tag, Hashtag.id).join(VideoHashtag, VideoHashtag.hashtag_id == Hashtag.id)
        .where(VideoHashtag.video_id == video.id))).all())
    for tag in wanted:
        if tag in current:
            continue
        await session.execute(insert_ignore(session, Hashtag).values(tag=tag, video_count=0))
        hashtag_id = await session.scalar(select(Hashtag.id).where(Hashtag.tag == tag))
        linked = await session.scalar(insert_ignore(session, VideoHashtag)
                                      .values(video_id=video.id, hashtag_id=hashtag_id)
                                      .returning(VideoHashtag.hashtag_id))
        if linked is not None:
            await _bump_tag(session, hashtag_id, 1)
    stale = [hashtag_id for tag, hashtag_id in current.items() if tag not in wanted]
    if stale:
        await unlink(session, video.id, stale)
    return wanted


async def unlink(session: AsyncSession, video_id: str, hashtag_ids: list[int] | None = None) -> None:
    """Remove the video's links (all of them when hashtag_ids is None, e.g. before the video is
    deleted) and decrement each tag's count for the links that really went."""
    query = delete(VideoHashtag).where(VideoHashtag.video_id == video_id)
    if hashtag_ids is not None:
        query = query.where(VideoHashtag.hashtag_id.in_(hashtag_ids))
    removed = (await session.scalars(query.returning(VideoHashtag.hashtag_id)
                                     .execution_options(synchronize_session=False))).all()
    for hashtag_id in removed:
        await _bump_tag(session, hashtag_id, -1)


async def _video_page(session: AsyncSession, query, *, limit: int, cursor: str | None) -> tuple[list[Video], str | None]:
    if cursor:
        created, last_id = decode_cursor(cursor)
        query = query.where(or_(Video.created_at < created, and_(Video.created_at == created, Video.id < last_id)))
    rows = list((await session.scalars(query.order_by(Video.created_at.desc(), Video.id.desc()).limit(limit + 1))).all())
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def get_hashtag(session: AsyncSession, raw_tag: str) -> Hashtag:
    tag = normalize_tag(raw_tag)
    hashtag = await session.scalar(select(Hashtag).where(Hashtag.tag == tag)) if tag else None
    if hashtag is None:
        raise NotFound("hashtag not found")
    return hashtag


async def hashtag_videos(session: AsyncSession, raw_tag: str, viewer: User | None, *, limit: int,
                         cursor: str | None) -> tuple[Hashtag, list[Video], str | None]:
    hashtag = await get_hashtag(session, raw_tag)
    query = (select(Video).join(VideoHashtag, VideoHashtag.video_id == Video.id)
             .where(VideoHashtag.hashtag_id == hashtag.id, media.listed_filter(viewer.id if viewer else None)))
    videos, next_cursor = await _video_page(session, query, limit=limit, cursor=cursor)
    return hashtag, videos, next_cursor


async def notify_caption_mentions(session: AsyncSession, video: Video) -> list[str]:
    """Tell the users @mentioned in a video's caption, once per user and video, as soon as they
    can see it: nothing while it is uploading/processing or private (called again when it turns
    ready and after every caption or visibility edit; whoever was told already is skipped, so
    editing the caption does not repeat the notification). Followers-only videos only notify
    followers; blocks either way never notify. Returns the ids notified."""
    from clipfeed.social.comments import notify_mentions

    if video.status != VideoStatus.READY or video.visibility == Visibility.PRIVATE:
        return []
    handles = parse_mentions(video.caption or "")
    if not handles:
        return []
    told = set((await session.scalars(
        select(Notification.user_id).join(User, User.id == Notification.user_id)
        .where(Notification.video_id == video.id, Notification.kind == "mention",
               Notification.comment_id.is_(None), User.handle.in_(handles)))).all())
    author = await session.get(User, video.owner_id)
    if author is None:
        return []
    return await notify_mentions(session, video.caption, author, video_id=video.id, skip=told, audience=video)


def hashtag_out(hashtag: Hashtag) -> dict:
    return {"tag": hashtag.tag, "video_count": hashtag.video_count}


# --- sounds ----------------------------------------------------------------------------------

async def get_sound(session: AsyncSession, sound_id: str, viewer: User | None) -> Sound:
    """404 for unknown sounds, sounds whose source video the viewer may not see, and sounds of
    creators blocked with the viewer."""
    sound = await session.get(Sound, sound_id)
    if sound is None:
        raise NotFound("sound not found")
    if viewer is not None and await is_blocked(session, viewer.id, sound.owner_id):
        raise NotFound("sound not found")
    if sound.source_video_id is not None:
        try:
            await visible_video(session, sound.source_video_id, viewer)
        except NotFound:
            raise NotFound("sound not found") from None
    return sound


async def sound_out(session: AsyncSession, sound: Sound) -> dict:
    owner = await session.get(User, sound.owner_id)
    return {
        "id": sound.id,
        "title": sound.title,
        "duration_ms": sound.duration_ms,
        "use_count": sound.use_count,
        "source_video_id": sound.source_video_id,
        "owner": {"id": owner.id, "handle": owner.handle, "display_name": owner.display_name} if owner else None,
        "url": f"/media/{keys.sound_key(sound.id)}" if sound.blob_key else None,
        "created_at": sound.created_at.isoformat(),
    }


async def sound_videos(session: AsyncSession, sound_id: str, viewer: User | None, *, limit: int,
                       cursor: str | None) -> tuple[Sound, list[Video], str | None]:
    """Videos that use the sound, and the video it was extracted from."""
    sound = await get_sound(session, sound_id, viewer)
    uses = Video.sound_id == sound.id
    if sound.source_video_id is not None:
        uses = or_(uses, Video.id == sound.source_video_id)
    videos, next_cursor = await _video_page(session, select(Video).where(uses, media.listed_filter(viewer.id if viewer else None)),
                                            limit=limit, cursor=cursor)
    return sound, videos, next_cursor
