"""Videos made from a file the server already has (a live stream's recording, later imports):
the file becomes the video's source blob and the normal processing job takes it from there,
exactly as if it had been uploaded with tus."""

from __future__ import annotations

import contextlib
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.media import keys
from clipfeed.media import service as media
from clipfeed.media.models import Video, VideoOrigin


async def import_local_file(session: AsyncSession, owner: User, path: Path, *, filename: str,
                            caption: str | None = None, visibility: str | None = None,
                            jobs=None, store=None, move: bool = True,
                            origin: str = VideoOrigin.UPLOAD) -> Video:
    """Create a Video owned by `owner` from the local file at `path` and enqueue its processing
    after the surrounding transaction commits. With move=True the file is moved (not copied)
    into the blob store. `origin` picks the limits the pipeline applies (a live replay is not held
    to the upload limits). `jobs`/`store` default to ones built from the session's settings.
    If the transaction rolls back, the source blob is removed again."""
    settings = session.info["settings"]
    if store is None:
        from clipfeed.storage import build_store

        store = build_store(settings)
    if jobs is None:
        from clipfeed.jobs import JobQueue

        jobs = JobQueue(settings)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    video = await media.create_video(session, owner, filename=filename, caption=caption,
                                     visibility=visibility, sound_id=None)
    if origin not in VideoOrigin.ALL:
        raise ValueError(f"unknown video origin {origin!r}")
    video.origin = origin
    source = keys.source_key(video.id)
    size = await store.put_file(source, path, move=move)

    def forget_blob(_session) -> None:
        local = store.local_path(source)
        if local is not None:
            with contextlib.suppress(OSError):
                local.unlink()

    event.listen(session.sync_session, "after_rollback", forget_blob, once=True)
    await media.upload_finished(session, jobs, video, source_key=source, size=size)
    return video
