"""Video lifecycle rules: creation at upload start, hand-off to processing, access, edits."""

from __future__ import annotations

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.db import on_commit
from clipfeed.db.base import utcnow
from clipfeed.errors import Forbidden, NotFound, ValidationFailed
from clipfeed.jobs import JobQueue
from clipfeed.media import keys
from clipfeed.media.models import Sound, Video, VideoStatus, Visibility
from clipfeed.pagination import decode_cursor, encode_cursor
from clipfeed.social import graph
from clipfeed.storage import BlobStore

MAX_CAPTION = 2200
PROCESS_JOB = "media.process_video"


def validate_caption(caption: str | None) -> str:
    caption = (caption or "").strip()
    if len(caption) > MAX_CAPTION:
        raise ValidationFailed(f"caption is longer than {MAX_CAPTION} characters", field="caption")
    return caption


def validate_visibility(visibility: str | None) -> str:
    visibility = (visibility or Visibility.PUBLIC).strip().lower()
    if visibility not in Visibility.ALL:
        raise ValidationFailed(f"visibility must be one of {', '.join(Visibility.ALL)}", field="visibility")
    return visibility


def validate_sound_volume(value: str | float | None, sound_id: str | None) -> float | None:
    """The level of the clip's own audio under a reused sound, 0..1 (0 or absent: the sound
    replaces it; 1: both equally loud). Only meaningful together with a sound_id."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise ValidationFailed("sound_volume must be a number from 0 to 1", field="sound_volume") from None
    if not 0.0 <= level <= 1.0:  # also refuses nan and inf
        raise ValidationFailed("sound_volume must be a number from 0 to 1", field="sound_volume")
    if sound_id is None:
        raise ValidationFailed("sound_volume needs a sound_id to mix with", field="sound_volume")
    return level


async def usable_sound(session: AsyncSession, sound_id: str, user: User) -> Sound:
    """A sound `user` may put under a new upload: it exists, its audio is ready (extracted), its
    source video (if any) is visible to them and no block stands between them and its creator.
    Every other case is the same 422, so nothing leaks about sounds the user may not see."""
    refused = ValidationFailed("sound_id does not name a sound you can use", field="sound_id")
    sound = await session.get(Sound, sound_id)
    if sound is None or not sound.blob_key:
        raise refused
    if sound.owner_id != user.id and await graph.is_blocked(session, user.id, sound.owner_id):
        raise refused
    if sound.source_video_id is not None:
        source = await session.get(Video, sound.source_video_id)
        if source is None or not await can_view(session, source, user):
            raise refused
    return sound


async def check_video_fields(session: AsyncSession, owner: User, *, caption: str | None, visibility: str | None,
                             sound_id: str | None, sound_volume: str | float | None
                             ) -> tuple[str, str, str | None, float | None]:
    """Validated (caption, visibility, sound_id, sound level) of a new video; 422 naming the field."""
    sound_id = (sound_id or "").strip() or None
    level = validate_sound_volume(sound_volume, sound_id)
    caption, visibility = validate_caption(caption), validate_visibility(visibility)
    if sound_id is not None:
        await usable_sound(session, sound_id, owner)
    return caption, visibility, sound_id, level


async def create_video(session: AsyncSession, owner: User, *, filename: str | None, caption: str | None,
                       visibility: str | None, sound_id: str | None, sound_volume: str | float | None = None) -> Video:
    """The video record exists from the first byte of an upload, in status 'uploading'. A named
    sound is checked here, before any byte of the upload is accepted."""
    caption, visibility, sound_id, level = await check_video_fields(
        session, owner, caption=caption, visibility=visibility, sound_id=sound_id, sound_volume=sound_volume)
    video = Video(owner_id=owner.id, status=VideoStatus.UPLOADING, caption=caption,
                  visibility=visibility, sound_id=sound_id, sound_volume=level,
                  original_filename=(filename or "")[:255], features={}, renditions=[], artifacts={})
    session.add(video)
    await session.flush()
    if sound_id is not None:
        await _count_sound_use(session, sound_id, 1)
    await _sync_hashtags(session, video)
    return video


async def _count_sound_use(session: AsyncSession, sound_id: str, delta: int) -> None:
    # Sound.use_count = videos that name the sound as their soundtrack (atomic, exact).
    await session.execute(update(Sound).where(Sound.id == sound_id).values(use_count=Sound.use_count + delta)
                          .execution_options(synchronize_session=False))


async def _sync_hashtags(session: AsyncSession, video: Video) -> None:
    from clipfeed.social.tags import sync_video_hashtags

    await sync_video_hashtags(session, video)


async def _forget_video(session: AsyncSession, video: Video) -> None:
    """Counters that live outside the video row (hashtag and sound use counts) before it goes."""
    from clipfeed.social.tags import unlink

    await unlink(session, video.id)
    if video.sound_id is not None:
        await _count_sound_use(session, video.sound_id, -1)


async def upload_finished(session: AsyncSession, jobs: JobQueue, video: Video, *, source_key: str,
                          size: int) -> None:
    """All bytes are in: the video goes to processing; the job starts once this commits."""
    video.source_key = source_key
    video.source_bytes = size
    video.status = VideoStatus.PROCESSING
    video.progress = 0.0
    await session.flush()
    on_commit(session, lambda: jobs.enqueue(PROCESS_JOB, video.id))


async def discard_upload(session: AsyncSession, store: BlobStore, video: Video) -> None:
    """A terminated upload leaves nothing behind: not the record, not the bytes."""
    await _forget_video(session, video)
    await session.delete(video)
    await session.flush()
    on_commit(session, lambda: store.delete_prefix(keys.video_prefix(video.id)))


def visibility_allows(video, viewer_id: str | None, *, follows_owner: bool = False, blocked: bool = False) -> bool:
    """The visibility rule without I/O (delivery evaluates it on cached facts). `video` needs
    owner_id, status and visibility; `follows_owner` / `blocked` describe viewer vs owner.

    Owner: always. Others: only ready videos, never across a block (either way); public and
    unlisted (by link) for anyone, followers-only for followers, private for nobody."""
    if viewer_id is not None and viewer_id == video.owner_id:
        return True
    if video.status != VideoStatus.READY or blocked:
        return False
    if video.visibility in (Visibility.PUBLIC, Visibility.UNLISTED):
        return True
    return video.visibility == Visibility.FOLLOWERS and follows_owner


async def can_view(session: AsyncSession, video, viewer: User | None) -> bool:
    """Whether `viewer` (None: anonymous) may see this one video (by id or link)."""
    viewer_id = viewer.id if viewer is not None else None
    if viewer_id is not None and viewer_id == video.owner_id:
        return True
    if video.status != VideoStatus.READY or video.visibility == Visibility.PRIVATE:
        return False
    if viewer_id is None:
        return visibility_allows(video, None)
    rel = await graph.relation(session, viewer_id, video.owner_id)
    return visibility_allows(video, viewer_id, follows_owner=rel.following, blocked=rel.blocked)


def listed_filter(viewer_id: str | None):
    """SQL condition on Video for every list of other people's videos (feeds, search, hashtag
    and sound pages): ready; public, or followers-only when the viewer follows the owner (or is
    the owner); never unlisted or private; never across a block."""
    ready_public = and_(Video.status == VideoStatus.READY, Video.visibility == Visibility.PUBLIC)
    if viewer_id is None:
        return ready_public
    followers_only = and_(Video.visibility == Visibility.FOLLOWERS,
                          or_(Video.owner_id == viewer_id, graph.follows_clause(viewer_id, Video.owner_id)))
    return and_(Video.status == VideoStatus.READY,
                or_(Video.visibility == Visibility.PUBLIC, followers_only),
                ~graph.blocked_clause(viewer_id, Video.owner_id))


async def get_visible(session: AsyncSession, video_id: str, viewer: User | None) -> Video:
    """404 for unknown and for someone else's hidden video alike: no existence leak."""
    video = await session.get(Video, video_id)
    if video is None or not await can_view(session, video, viewer):
        raise NotFound("video not found")
    return video


async def get_owned(session: AsyncSession, video_id: str, user: User) -> Video:
    video = await session.get(Video, video_id)
    if video is None or not await can_view(session, video, user):
        raise NotFound("video not found")
    if video.owner_id != user.id:
        raise Forbidden("only the creator can change this video")
    return video


async def update_video(session: AsyncSession, video: Video, *, caption: str | None, visibility: str | None,
                       comments_enabled: bool | None = None) -> Video:
    if caption is not None:
        video.caption = validate_caption(caption)
    if visibility is not None:
        video.visibility = validate_visibility(visibility)
    if comments_enabled is not None:
        video.comments_enabled = comments_enabled
    video.updated_at = utcnow()
    await session.flush()
    if caption is not None:
        await _sync_hashtags(session, video)
    if caption is not None or visibility is not None:
        await notify_caption_mentions(session, video)
    return video


async def notify_caption_mentions(session: AsyncSession, video: Video) -> None:
    """Mentions in the caption, once the video is visible (see social.tags)."""
    from clipfeed.social.tags import notify_caption_mentions as notify

    await notify(session, video)


async def delete_video(session: AsyncSession, store: BlobStore, video: Video) -> None:
    video_id = video.id
    # The video's row before anything else, as the processing job's steps take it
    # (pipeline.load_for_update). Unlinking the hashtags first rewrote the video's search document
    # (a trigger) and then waited for the video's row held by a job step, whose update of the video
    # rewrote the same document: "deadlock detected", a 500 (CI, a live replay deleted while its
    # later rungs were being published). One order for both: the delete waits for the step.
    await session.execute(select(Video.id).where(Video.id == video_id).with_for_update())
    await _forget_video(session, video)
    await session.delete(video)
    await session.flush()
    on_commit(session, lambda: store.delete_prefix(keys.video_prefix(video_id)))


async def _profile_video_query(session: AsyncSession, owner_id: str, viewer: User | None):
    """The videos of owner_id's profile as `viewer` sees them; None when the list is empty by rule."""
    if await session.get(User, owner_id) is None:
        raise NotFound("user not found")
    query = select(Video).where(Video.owner_id == owner_id)
    if viewer is not None and viewer.id == owner_id:
        return query
    rel = await graph.relation(session, viewer.id if viewer else None, owner_id)
    if rel.blocked_by:
        raise NotFound("user not found")  # like the profile itself: no existence leak
    if rel.blocking:
        return None
    # Unlisted videos play by link but are not listed; followers-only ones are listed to followers.
    shown = (Visibility.PUBLIC, Visibility.FOLLOWERS) if rel.following else (Visibility.PUBLIC,)
    return query.where(Video.status == VideoStatus.READY, Video.visibility.in_(shown))


async def list_user_videos(session: AsyncSession, owner_id: str, viewer: User | None, *, limit: int,
                           cursor: str | None) -> tuple[list[Video], str | None]:
    query = await _profile_video_query(session, owner_id, viewer)
    if query is None:
        return [], None
    if cursor:
        created, last_id = decode_cursor(cursor)
        query = query.where(or_(Video.created_at < created, and_(Video.created_at == created, Video.id < last_id)))
    rows = list((await session.scalars(
        query.order_by(Video.created_at.desc(), Video.id.desc()).limit(limit + 1))).all())
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


async def count_user_videos(session: AsyncSession, owner_id: str, viewer: User | None) -> int:
    """How many videos owner_id's profile lists for `viewer` (the profile's video count)."""
    query = await _profile_video_query(session, owner_id, viewer)
    if query is None:
        return 0
    return int(await session.scalar(select(func.count()).select_from(query.subquery())) or 0)
