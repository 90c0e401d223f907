"""Per-user write limits (comments, likes, follows ...): fixed windows, in Redis when the
deployment has it (shared by every API process), else in this process's memory."""

from __future__ import annotations

import asyncio
import time

from clipfeed.config import Settings
from clipfeed.errors import RateLimited


class RateLimiter:
    def __init__(self, settings: Settings):
        self._redis = None
        if settings.redis_url:
            import redis.asyncio as redis_asyncio

            self._redis = redis_asyncio.Redis.from_url(settings.redis_url)
        self._prefix = f"clipfeed:{settings.queue_name}:rl:"
        self._windows: dict[str, tuple[int, int]] = {}  # key -> (window index, count)
        self._lock = asyncio.Lock()

    async def hit(self, action: str, subject: str, *, limit: int, window_s: int) -> None:
        """Count one `action` by `subject`; raise RateLimited (429 + Retry-After) past `limit`."""
        now = time.time()
        window = int(now // window_s)
        retry_after = int((window + 1) * window_s - now) + 1
        key = f"{action}:{subject}:{window}"
        if self._redis is not None:
            pipe = self._redis.pipeline()
            pipe.incr(self._prefix + key)
            pipe.expire(self._prefix + key, window_s + 1)
            count, _ = await pipe.execute()
        else:
            async with self._lock:
                index, count = self._windows.get(f"{action}:{subject}", (window, 0))
                count = count + 1 if index == window else 1
                self._windows[f"{action}:{subject}"] = (window, count)
                if len(self._windows) > 100_000:  # forget stale windows
                    self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        if count > limit:
            raise RateLimited(f"too many {action.replace('_', ' ')} requests; slow down", retry_after=retry_after)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
