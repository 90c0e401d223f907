"""Media delivery: /media/{key} with Range, ETag, Cache-Control, access rules and signed URLs."""

from clipfeed.delivery.service import sign_video_urls

__all__ = ["sign_video_urls"]
