from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from clipfeed.db.base import utcnow

log = logging.getLogger("clipfeed.events")

Handler = Callable[["Event"], Awaitable[None]]


@dataclass(frozen=True)
class Event:
    type: str  # e.g. "video.ready", "video.rejected", "user.registered"
    payload: dict
    at: object = field(default_factory=utcnow)


class EventBus:
    """Publish/subscribe inside one process. A failing handler is logged, never propagated:
    an event is a notification, not part of the publisher's transaction."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, event_type: str, handler: Handler) -> None:
        self._handlers[event_type].append(handler)

    async def publish(self, event: Event) -> None:
        for handler in [*self._handlers.get(event.type, ()), *self._handlers.get("*", ())]:
            try:
                await handler(event)
            except Exception:  # noqa: BLE001 - isolate subscribers from publishers
                log.exception("event handler failed for %s", event.type)
