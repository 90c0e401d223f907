"""Video lifecycle rules: creation at upload start, hand-off to processing, access, edits."""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.db import on_commit
from clipfeed.db.base import utcnow
from clipfeed.errors import Forbidden, NotFound, ValidationFailed
from clipfeed.jobs import JobQueue
from clipfeed.media import keys
from clipfeed.media.models import Sound, Video, VideoStatus, Visibility
from clipfeed.pagination import decode_cursor, encode_cursor
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


async def create_video(session: AsyncSession, owner: User, *, filename: str | None, caption: str | None,
                       visibility: str | None, sound_id: str | None) -> Video:
    """The video record exists from the first byte of an upload, in status 'uploading'."""
    sound_id = (sound_id or "").strip() or None
    if sound_id is not None and await session.get(Sound, sound_id) is None:
        raise ValidationFailed("sound_id does not name a sound", field="sound_id")
    video = Video(owner_id=owner.id, status=VideoStatus.UPLOADING, caption=validate_caption(caption),
                  visibility=validate_visibility(visibility), sound_id=sound_id,
                  original_filename=(filename or "")[:255], features={}, renditions=[], artifacts={})
    session.add(video)
    await session.flush()
    return video


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
    await session.delete(video)
    await session.flush()
    on_commit(session, lambda: store.delete_prefix(keys.video_prefix(video.id)))


def can_view(video: Video, viewer: User | None) -> bool:
    if viewer is not None and viewer.id == video.owner_id:
        return True
    if video.status != VideoStatus.READY:
        return False
    # Followers-only becomes real with the social graph; until then only the owner sees it.
    return video.visibility in (Visibility.PUBLIC, Visibility.UNLISTED)


async def get_visible(session: AsyncSession, video_id: str, viewer: User | None) -> Video:
    """404 for unknown and for someone else's hidden video alike: no existence leak."""
    video = await session.get(Video, video_id)
    if video is None or not can_view(video, viewer):
        raise NotFound("video not found")
    return video


async def get_owned(session: AsyncSession, video_id: str, user: User) -> Video:
    video = await session.get(Video, video_id)
    if video is None or not can_view(video, user):
        raise NotFound("video not found")
    if video.owner_id != user.id:
        raise Forbidden("only the creator can change this video")
    return video


async def update_video(session: AsyncSession, video: Video, *, caption: str | None, visibility: str | None) -> Video:
    if caption is not None:
        video.caption = validate_caption(caption)
    if visibility is not None:
        video.visibility = validate_visibility(visibility)
    video.updated_at = utcnow()
    await session.flush()
    return video


async def delete_video(session: AsyncSession, store: BlobStore, video: Video) -> None:
    video_id = video.id
    await session.delete(video)
    await session.flush()
    on_commit(session, lambda: store.delete_prefix(keys.video_prefix(video_id)))


async def list_user_videos(session: AsyncSession, owner_id: str, viewer: User | None, *, limit: int,
                           cursor: str | None) -> tuple[list[Video], str | None]:
    if await session.get(User, owner_id) is None:
        raise NotFound("user not found")
    query = select(Video).where(Video.owner_id == owner_id)
    if viewer is None or viewer.id != owner_id:
        # Unlisted videos play by link but are not listed on the profile.
        query = query.where(Video.status == VideoStatus.READY, Video.visibility == Visibility.PUBLIC)
    if cursor:
        created, last_id = decode_cursor(cursor)
        query = query.where(or_(Video.created_at < created, and_(Video.created_at == created, Video.id < last_id)))
    rows = list((await session.scalars(
        query.order_by(Video.created_at.desc(), Video.id.desc()).limit(limit + 1))).all())
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor
