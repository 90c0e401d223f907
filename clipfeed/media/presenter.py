"""The public JSON shape of a video, shared by every endpoint that returns videos."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.config import Settings
from clipfeed.media import keys
from clipfeed.media.models import Video, Visibility


def _media_url(key: str, query: str) -> str:
    return f"/media/{key}" + (f"?{query}" if query else "")


def video_urls(video: Video, settings: Settings) -> dict:
    # Hidden videos are served to their owner with a signed query (cookies do not reach every
    # player, e.g. a native app or a cast device); public ones need none.
    query = ""
    if video.visibility in (Visibility.PRIVATE, Visibility.FOLLOWERS):
        from clipfeed.delivery.service import sign_video_urls

        query = sign_video_urls(settings, video.id, settings.signed_url_ttl_seconds)
    art = video.artifacts or {}
    urls: dict = {"hls": None, "poster": None, "preview": None, "storyboard": None, "storyboard_vtt": None,
                  "sound": None}
    if video.renditions:
        urls["hls"] = _media_url(keys.hls_key(video.id, "master.m3u8"), query)
    for name, filename in (("poster", "poster.jpg"), ("preview", "preview.webp"),
                           ("storyboard", "storyboard.jpg"), ("storyboard_vtt", "storyboard.vtt")):
        if filename in art.get("files", []):
            urls[name] = _media_url(keys.artifact_key(video.id, filename), query)
    if art.get("sound_id"):
        urls["sound"] = _media_url(keys.sound_key(art["sound_id"]), "")
    return urls


def video_out(video: Video, viewer: User | None, settings: Settings, *, liked: bool | None = None) -> dict:
    """No queries: `liked` is the viewer's like (None = not looked up; always False for anonymous
    viewers). Endpoints use present_video / present_videos, which look it up."""
    is_owner = viewer is not None and viewer.id == video.owner_id
    body = {
        "id": video.id,
        "owner_id": video.owner_id,
        "status": video.status,
        "progress": round(video.progress or 0.0, 1),
        "caption": video.caption,
        "visibility": video.visibility,
        "sound_id": video.sound_id,
        "original_sound_id": (video.artifacts or {}).get("sound_id"),
        "duration_ms": video.duration_ms,
        "width": video.width,
        "height": video.height,
        "fps": video.fps,
        "renditions": [
            {k: r[k] for k in ("name", "width", "height", "bandwidth") if k in r} for r in (video.renditions or [])
        ],
        "urls": video_urls(video, settings),
        "created_at": video.created_at.isoformat() if video.created_at else None,
        "published_at": video.published_at.isoformat() if video.published_at else None,
        "view_count": video.view_count or 0,
        "like_count": video.like_count or 0,
        "comment_count": video.comment_count or 0,
        "share_count": video.share_count or 0,
        "comments_enabled": video.comments_enabled is not False,
        "liked": False if viewer is None else liked,
    }
    if is_owner:
        body["rejection_code"] = video.rejection_code
        body["rejection_reason"] = video.rejection_reason
        body["original_filename"] = video.original_filename
        body["features"] = video.features or {}
    return body


async def present_videos(session: AsyncSession, videos: list[Video], viewer: User | None, settings: Settings) -> list[dict]:
    """video_out for a list, with the viewer's `liked` flags looked up in one query."""
    from clipfeed.social.interactions import liked_ids

    liked = await liked_ids(session, viewer.id if viewer else None, [v.id for v in videos])
    return [video_out(v, viewer, settings, liked=v.id in liked) for v in videos]


async def present_video(session: AsyncSession, video: Video, viewer: User | None, settings: Settings) -> dict:
    return (await present_videos(session, [video], viewer, settings))[0]
