"""The processing job: probe -> ladder (lowest rung published first) -> artefacts -> sound.

Runs on a worker thread inside its own event loop. ffmpeg work happens in a further thread;
its callbacks hop back onto this loop to touch the database and the blob store.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import and_, delete, or_, select, update

from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.db import Database
from clipfeed.db.base import utcnow
from clipfeed.media import keys
from clipfeed.media import service as media
from clipfeed.media.ffmpeg import Rung, Soundtrack, plan_ladder, transcode_ladder, write_master_playlist
from clipfeed.media.ladder import RUNG_INIT, RUNG_PLAYLIST
from clipfeed.media.content_features import (ANALYSE_MAX_S, NAMES_VERSION, ContentFeatures,
                                              extract_content_features)
from clipfeed.media.models import (Sound, Video, VideoContentFeatureFailure, VideoContentFeatures, VideoOrigin,
                                   VideoStatus)
from clipfeed.media.probe import MediaRejected, ProbeResult, probe_media
from clipfeed.social.notifications import notify
from clipfeed.storage import BlobStore, build_store

log = logging.getLogger("clipfeed.media.pipeline")

ARTIFACT_FILES = ("poster.jpg", "preview.webp", "storyboard.jpg", "storyboard.vtt")


@dataclass(frozen=True)
class Limits:
    """What a source may be and what processing it may cost, by the video's origin."""

    max_bytes: int
    min_duration_s: float
    max_duration_s: float
    max_output_bytes: int
    timeout_factor: float  # the transcode may take this many times the duration, when longer than ffmpeg_timeout_s

    def timeout_s(self, settings: Settings, duration_s: float) -> float:
        return max(settings.ffmpeg_timeout_s, self.timeout_factor * duration_s)


def limits_for(settings: Settings, origin: str | None) -> Limits:
    """Uploads get the VOD limits. A live replay is the recording of a stream that already ran
    (up to rtmp_max_session_s): it must become a video whatever the upload limits, so it has its
    own caps, sized for hours; every other hostile-media check (sniff, probe, decode test,
    dimensions, fps, protocol whitelist, time and output limits) applies all the same."""
    if origin == VideoOrigin.LIVE_REPLAY:
        return Limits(max_bytes=settings.live_max_recording_bytes, min_duration_s=settings.min_duration_s,
                      max_duration_s=settings.live_replay_max_s,
                      max_output_bytes=settings.live_replay_max_output_bytes,
                      timeout_factor=settings.live_replay_timeout_factor)
    return Limits(max_bytes=settings.max_upload_bytes, min_duration_s=settings.min_duration_s,
                  max_duration_s=settings.max_duration_s, max_output_bytes=settings.max_output_bytes,
                  timeout_factor=0.0)


class VideoGone(Exception):
    """The video was deleted while it was being processed."""


def _max_attempts(settings: Settings) -> int:
    return settings.job_retries + 1


async def claim(db: Database, settings: Settings, video_id: str) -> bool:
    """Atomically take the job: only one worker processes a video at a time, and a video whose
    worker died (stale heartbeat) can be taken over."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.job_lease_seconds)
    async with db.transaction() as session:
        result = await session.execute(
            update(Video)
            .where(Video.id == video_id,
                   Video.status.in_((VideoStatus.PROCESSING, VideoStatus.READY)),
                   Video.progress < 100,
                   or_(Video.heartbeat_at.is_(None), Video.heartbeat_at < stale))
            .values(heartbeat_at=now, attempts=Video.attempts + 1))
        return result.rowcount == 1


async def _heartbeat(db: Database, video_id: str, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        async with db.transaction() as session:
            await session.execute(update(Video).where(Video.id == video_id).values(heartbeat_at=utcnow()))


class Processor:
    def __init__(self, settings: Settings, db: Database, store: BlobStore, video_id: str, attempt: int):
        self.settings = settings
        self.db = db
        self.store = store
        self.video_id = video_id
        # One folder per attempt: an ffmpeg orphaned by a killed worker can never write into
        # the files of the attempt that replaced it.
        self.jobdir = settings.resolved_data_dir / "work" / video_id
        self.workdir = self.jobdir / f"attempt-{attempt}"
        self.published: list[dict] = []
        self.has_audio = False  # whether the renditions carry audio (the source's or a reused sound)
        self._last_progress = -1.0

    async def _load(self, session) -> Video:
        return await load_for_update(session, self.video_id)

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            # Work files are scratch: the original stays in the store, the outputs were published.
            shutil.rmtree(self.jobdir, ignore_errors=True)

    async def _run(self) -> None:
        async with self.db.transaction() as session:
            video = await self._load(session)
            source_key, owner_id = video.source_key, video.owner_id
            limits = limits_for(self.settings, video.origin)
            self.published = list(video.renditions or [])
            named_sound = video.sound_id
            sound = await session.get(Sound, named_sound) if named_sound else None
            sound_key = sound.blob_key if sound is not None else None
            sound_level = video.sound_volume or 0.0
        shutil.rmtree(self.jobdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        source = await self._local_source(source_key)
        soundtrack = None
        if sound_key:
            soundtrack = Soundtrack(await self._local_blob(sound_key, "soundtrack"), original_level=sound_level)
        elif named_sound:
            # The sound (or its creator) was deleted after this upload named it: keep the clip's own audio.
            log.warning("video %s names a sound that is gone; processing it with its own audio", self.video_id)
        probe = await asyncio.to_thread(
            probe_media, source, max_bytes=limits.max_bytes,
            min_duration_s=limits.min_duration_s, max_duration_s=limits.max_duration_s,
            max_dimension=self.settings.max_dimension, max_fps=self.settings.max_fps)
        self.has_audio = probe.has_audio or soundtrack is not None
        await self._save_probe(probe)
        rungs = plan_ladder(probe.display_width, probe.display_height)
        loop = asyncio.get_running_loop()

        def on_progress(fraction: float) -> None:
            asyncio.run_coroutine_threadsafe(self._progress(fraction), loop).result()

        def on_rung_ready(rung: Rung) -> None:
            asyncio.run_coroutine_threadsafe(self._publish_rung(rung, rungs, probe), loop).result()

        result = await asyncio.to_thread(
            transcode_ladder, source, self.workdir, rungs, has_audio=probe.has_audio,
            duration_s=probe.duration_s, preset=self.settings.x264_preset,
            timeout_s=limits.timeout_s(self.settings, probe.duration_s), max_output_bytes=limits.max_output_bytes,
            on_progress=on_progress, on_rung_ready=on_rung_ready, ffmpeg=self.settings.ffmpeg_path,
            soundtrack=soundtrack)
        content = await self._content_features(rungs[0], probe, limits)
        await self._finish(result, owner_id, probe, content)

    async def _content_features(self, rung: Rung, probe: ProbeResult, limits: Limits) -> ContentFeatures | None:
        """How the video looks and sounds (`content_features`), for content-based recommendation.
        Measured on the lowest rung as published: the smallest to decode, and its audio is what
        viewers hear, a reused sound included. Best effort: the video already plays, and one
        without a vector is still placed by its caption and hashtags; a failure is logged."""
        try:
            clip = await asyncio.to_thread(join_rung, self.workdir / rung.name, self.workdir / "content_input.mp4")
            return await asyncio.to_thread(
                extract_content_features, clip, self.workdir, duration_s=probe.duration_s, has_audio=self.has_audio,
                timeout_s=limits.timeout_s(self.settings, probe.duration_s), ffmpeg=self.settings.ffmpeg_path)
        except Exception:  # noqa: BLE001 - never fails the job: the video is served without it
            log.warning("video %s: content features not computed", self.video_id, exc_info=True)
            return None

    async def _local_source(self, source_key: str) -> Path:
        return await self._local_blob(source_key, "source")

    async def _local_blob(self, key: str, name: str) -> Path:
        path = self.store.local_path(key)
        if path is not None and path.exists():
            return path
        # A remote store: fetch the blob next to the work files, under a server-made name.
        target = self.jobdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            async for chunk in self.store.read(key):
                handle.write(chunk)
        return target

    async def _save_probe(self, probe: ProbeResult) -> None:
        async with self.db.transaction() as session:
            video = await self._load(session)
            video.duration_ms = int(round(probe.duration_s * 1000))
            video.width, video.height = probe.display_width, probe.display_height
            video.fps = probe.fps
            video.bitrate = probe.bitrate
            video.has_audio = self.has_audio
            video.features = {**(video.features or {}), "probe": {
                "container": probe.container, "video_codec": probe.video_codec, "audio_codec": probe.audio_codec,
                "rotation": probe.rotation, "coded_width": probe.width, "coded_height": probe.height,
                "size_bytes": probe.size_bytes}}

    async def _progress(self, fraction: float) -> None:
        percent = max(0.0, min(99.0, fraction * 100.0))
        if percent - self._last_progress < 1.0:
            return
        self._last_progress = percent
        async with self.db.transaction() as session:
            await session.execute(update(Video).where(Video.id == self.video_id, Video.progress < percent)
                                  .values(progress=percent, heartbeat_at=utcnow()))

    async def _put_tree(self, local_dir: Path, key_prefix: str) -> None:
        # Segments first, playlist last: a reader that sees the playlist finds every segment.
        files = sorted((p for p in local_dir.rglob("*") if p.is_file()), key=lambda p: p.suffix == ".m3u8")
        for path in files:
            await self.store.put_file(f"{key_prefix}/{path.relative_to(local_dir).as_posix()}", path)

    async def _publish_rung(self, rung: Rung, all_rungs: list[Rung], probe: ProbeResult) -> None:
        await self._put_tree(self.workdir / rung.name, keys.hls_key(self.video_id, rung.name))
        ready_names = {r["name"] for r in self.published} | {rung.name}
        ready = [r for r in all_rungs if r.name in ready_names]
        master = self.workdir / "master.m3u8"
        write_master_playlist(ready, master, has_audio=self.has_audio)
        await self.store.put_file(keys.hls_key(self.video_id, "master.m3u8"), master)
        self.published = [r for r in self.published if r["name"] != rung.name] + [
            {"name": rung.name, "width": rung.width, "height": rung.height,
             "bandwidth": rung.maxrate_kbps * 1000, "playlist": f"{rung.name}/playlist.m3u8"}]
        files = await self._publish_artifacts()
        async with self.db.transaction() as session:
            video = await self._load(session)
            video.renditions = sorted(self.published, key=lambda r: r["height"] * r["width"])
            video.artifacts = {**(video.artifacts or {}), "files": sorted(set((video.artifacts or {}).get("files", [])) | set(files))}
            if video.status == VideoStatus.PROCESSING:
                video.status = VideoStatus.READY
                video.published_at = utcnow()
                await notify(session, video.owner_id, "video_ready", video_id=video.id)
                await media.notify_caption_mentions(session, video)
            video.heartbeat_at = utcnow()

    async def _publish_artifacts(self) -> list[str]:
        published = []
        for name in ARTIFACT_FILES:
            path = self.workdir / name
            if path.exists():
                await self.store.put_file(keys.artifact_key(self.video_id, name), path)
                published.append(name)
        return published

    async def _finish(self, result, owner_id: str, probe: ProbeResult, content: ContentFeatures | None = None) -> None:
        files = await self._publish_artifacts()
        sound_path = self.workdir / "sound.m4a"
        async with self.db.transaction() as session:
            video = await self._load(session)
            artifacts = dict(video.artifacts or {})
            artifacts["files"] = sorted(set(artifacts.get("files", [])) | set(files))
            if sound_path.exists() and not artifacts.get("sound_id"):
                owner = await session.get(User, owner_id)
                sound = await session.scalar(select(Sound).where(Sound.source_video_id == video.id))
                if sound is None:
                    sound = Sound(owner_id=owner_id, source_video_id=video.id,
                                  title=f"original sound - @{owner.handle if owner else 'unknown'}",
                                  duration_ms=video.duration_ms or 0, blob_key="")
                    session.add(sound)
                    await session.flush()
                sound.blob_key = keys.sound_key(sound.id)
                await self.store.put_file(sound.blob_key, sound_path)
                artifacts["sound_id"] = sound.id
            video.artifacts = artifacts
            video.features = {**(video.features or {}), **(getattr(result, "features", None) or {})}
            if content is not None:
                await store_content_features(session, video, content)
            video.progress = 100.0
            video.heartbeat_at = None
            if video.status == VideoStatus.PROCESSING:  # a source with no rung would be a bug
                video.status = VideoStatus.READY
                video.published_at = utcnow()
                await notify(session, video.owner_id, "video_ready", video_id=video.id)
                await media.notify_caption_mentions(session, video)


async def store_content_features(session, video: Video, content: ContentFeatures) -> None:
    """The one place a video's content features are written (the processing job, and
    `feature_refresh` for videos processed earlier): the vector that the content index and the
    training job read, and the values shown under `features.content`, in the caller's
    transaction, so one is never stored without the other. A vector stored ends the refresh's
    backoff of an earlier failure."""
    video.features = {**(video.features or {}), "content": content.as_json()}
    await session.merge(VideoContentFeatures(
        video_id=video.id, names_version=NAMES_VERSION, vector=np.asarray(content.vector(), dtype="<f4").tobytes()))
    await session.execute(delete(VideoContentFeatureFailure).where(VideoContentFeatureFailure.video_id == video.id))


def rung_segments(playlist: str, max_seconds: float = ANALYSE_MAX_S) -> list[str]:
    """The media segments of a rung's playlist, in its order, up to the first that reaches
    `max_seconds`: what `join_rung` reads, so a copy of a rung needs only these."""
    segments, covered = [], 0.0
    for line in playlist.splitlines():
        line = line.strip()
        if line.startswith("#EXTINF:"):
            covered += float(line[len("#EXTINF:"):].split(",")[0] or 0)
        elif line and not line.startswith("#"):
            segments.append(line)
            if covered >= max_seconds:
                break
    return segments


def join_rung(rung_dir: Path, out: Path, max_seconds: float = ANALYSE_MAX_S) -> Path:
    """One file of a published CMAF rung: its init segment and media segments back to back, in
    the playlist's order, make a fragmented MP4 that ffmpeg reads as a plain file (no HLS demuxer,
    no playlist to follow). Only the segments of the first `max_seconds` (what the content
    features look at: a long live replay is not copied whole)."""
    segments = rung_segments((rung_dir / RUNG_PLAYLIST).read_text(), max_seconds)
    with open(out, "wb") as joined:
        for name in [RUNG_INIT, *segments]:
            path = (rung_dir / name).resolve()
            if path.parent != rung_dir.resolve():  # the playlist is ours, but names stay inside the rung
                raise ValueError(f"unexpected segment name {name!r}")
            with open(path, "rb") as part:
                shutil.copyfileobj(part, joined)
    return out


async def load_for_update(session, video_id: str) -> Video:
    """The video, its row locked first (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes
    writers), for a job transaction that writes it: every transaction that writes a video and the
    rows around it (its search document, sound, notifications) takes the video's row before any
    of them, as a delete does (media.service.delete_video), so they queue instead of deadlocking."""
    video = await session.get(Video, video_id, with_for_update=True, populate_existing=True)
    if video is None:
        raise VideoGone(video_id)
    return video


async def _mark(db: Database, video_id: str, *, status: str, code: str, reason: str) -> None:
    async with db.transaction() as session:
        owner_id = await session.scalar(select(Video.owner_id).where(Video.id == video_id))
        await session.execute(update(Video).where(Video.id == video_id).values(
            status=status, rejection_code=code, rejection_reason=reason, heartbeat_at=None, updated_at=utcnow()))
        if owner_id is not None:  # rejected or failed: the creator hears why
            await notify(session, owner_id, "video_rejected", video_id=video_id, text=reason)


async def process_video(settings: Settings, video_id: str) -> None:
    db = Database(settings, pooled=False)
    store = build_store(settings)
    try:
        if not await claim(db, settings, video_id):
            return  # done already, gone, or another worker holds a fresh lease
        async with db.transaction() as session:
            attempts = (await session.get(Video, video_id)).attempts
        if attempts > _max_attempts(settings):
            await _mark(db, video_id, status=VideoStatus.FAILED, code="processing_failed",
                        reason=f"processing stopped after {attempts - 1} attempts (the worker kept dying)")
            return
        beat = asyncio.create_task(_heartbeat(db, video_id, max(0.5, settings.job_lease_seconds / 4)))
        try:
            await Processor(settings, db, store, video_id, attempts).run()
        except MediaRejected as rejected:
            await _mark(db, video_id, status=VideoStatus.REJECTED, code=rejected.code, reason=rejected.message)
        except VideoGone:
            log.info("video %s was deleted during processing", video_id)
        except Exception as exc:
            log.exception("processing %s failed (attempt %s)", video_id, attempts)
            if attempts >= _max_attempts(settings):
                await _mark(db, video_id, status=VideoStatus.FAILED, code="processing_failed",
                            reason=f"processing failed: {str(exc)[:500]}")
                return
            async with db.transaction() as session:  # release the lease so the retry can claim it
                await session.execute(update(Video).where(Video.id == video_id).values(heartbeat_at=None))
            raise
        finally:
            beat.cancel()
    finally:
        await db.dispose()


async def recover_stale(settings: Settings) -> list[str]:
    """Videos whose worker stopped heart-beating (killed, machine lost): enqueue them again."""
    db = Database(settings, pooled=False)
    try:
        now = utcnow()
        stale = now - timedelta(seconds=settings.job_lease_seconds)
        # Never claimed for a long time: the enqueue after the commit was lost (queue down).
        # Generous, because a busy queue legitimately keeps videos waiting; claim() dedupes.
        forgotten = now - timedelta(seconds=max(10 * settings.job_lease_seconds, 900))
        async with db.transaction() as session:
            return list((await session.scalars(select(Video.id).where(
                Video.status.in_((VideoStatus.PROCESSING, VideoStatus.READY)), Video.progress < 100,
                or_(and_(Video.heartbeat_at.is_not(None), Video.heartbeat_at < stale),
                    and_(Video.heartbeat_at.is_(None), Video.updated_at < forgotten))))).all())
    finally:
        await db.dispose()
