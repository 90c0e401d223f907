"""A small in-process event bus. The feed work grows it to Redis Streams."""

from clipfeed.events.bus import Event, EventBus

__all__ = ["Event", "EventBus"]
