from __future__ import annotations

import asyncio
import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from huey import Huey, PriorityRedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer

from clipfeed.config import Settings

log = logging.getLogger("clipfeed.jobs")

# Every domain that declares jobs; importing them fills the registries below.
TASK_MODULES = ("clipfeed.accounts.tasks", "clipfeed.media.tasks", "clipfeed.feed.tasks", "clipfeed.search.tasks")


@dataclass(frozen=True)
class JobSpec:
    name: str
    fn: Callable  # fn(settings, *args) -> None
    retries: int
    retry_delay: int
    priority: int
    # Documented here, enforced by the job itself (Huey has no hard time limit for threads).
    time_limit_s: int


@dataclass(frozen=True)
class PeriodicSpec:
    name: str
    fn: Callable  # fn(settings) -> None
    schedule: dict  # crontab() keyword arguments


@dataclass(frozen=True)
class SweeperSpec:
    name: str
    fn: Callable  # fn(settings, queue) -> None
    every_s: Callable  # every_s(settings) -> seconds between runs


class _EmbeddedConsumer(Consumer):
    """Huey's consumer inside another program's process: signals belong to the host server."""

    def _set_signal_handlers(self) -> None:
        pass


JOBS: dict[str, JobSpec] = {}
PERIODIC: dict[str, PeriodicSpec] = {}
SWEEPERS: dict[str, SweeperSpec] = {}


def job(name: str, *, retries: int = 2, retry_delay: int = 2, priority: int = 0, time_limit_s: int = 900):
    """Declare a job. The function receives the worker's Settings first, then its arguments."""

    def register(fn: Callable) -> Callable:
        JOBS[name] = JobSpec(name, fn, retries, retry_delay, priority, time_limit_s)
        return fn

    return register


def periodic(name: str, **schedule):
    def register(fn: Callable) -> Callable:
        PERIODIC[name] = PeriodicSpec(name, fn, schedule)
        return fn

    return register


def sweeper(name: str, *, every_s: Callable):
    """A short check every consumer process runs on a timer, finer than crontab's minute
    (e.g. re-enqueue the jobs of a worker that died, as soon as its lease expires)."""

    def register(fn: Callable) -> Callable:
        SWEEPERS[name] = SweeperSpec(name, fn, every_s)
        return fn

    return register


def run_async(coro_fn: Callable, *args):
    """Jobs are plain functions on worker threads; async service code gets its own loop."""
    return asyncio.run(coro_fn(*args))


def _build_huey(settings: Settings) -> Huey:
    if settings.redis_url:
        # Jobs declare priorities; plain RedisHuey refuses them (NotImplementedError on enqueue).
        return PriorityRedisHuey(settings.queue_name, url=settings.redis_url, blocking=True, read_timeout=1)
    path = settings.resolved_data_dir / "jobs.sqlite3"
    return SqliteHuey(settings.queue_name, filename=str(path))


class JobQueue:
    """The project's one handle on Huey: enqueue by name, run consumers in or out of process."""

    def __init__(self, settings: Settings):
        for module in TASK_MODULES:
            importlib.import_module(module)
        self.settings = settings
        self.huey = _build_huey(settings)
        self._tasks = {}
        for spec in JOBS.values():
            self._tasks[spec.name] = self.huey.task(
                retries=spec.retries, retry_delay=spec.retry_delay, priority=spec.priority, name=spec.name,
            )(self._bind(spec.fn))
        for spec in PERIODIC.values():
            self.huey.periodic_task(crontab(**spec.schedule), name=spec.name)(self._bind(spec.fn))
        self._consumer: Consumer | None = None
        self._sweeping = threading.Event()
        self._sweep_thread: threading.Thread | None = None
        self._streams: list = []

    def _bind(self, fn: Callable) -> Callable:
        settings = self.settings

        def run(*args):
            return fn(settings, *args)

        run.__name__ = fn.__name__
        return run

    def enqueue(self, name: str, *args) -> None:
        self._tasks[name](*args)

    def pending_count(self) -> int:
        return self.huey.pending_count()

    def start_consumer(self, workers: int | None = None) -> None:
        """Consume in background threads of this process (`clipfeed serve`, tests)."""
        # A short max_delay keeps pickup latency low on SQLite, which is polled.
        self._consumer = _EmbeddedConsumer(
            self.huey, workers=workers or self.settings.worker_threads, worker_type="thread",
            initial_delay=0.05, backoff=1.2, max_delay=0.5, periodic=True, check_worker_health=True,
        )
        self._consumer.start()
        self._start_sweepers()
        self._start_streams()

    def stop_consumer(self) -> None:
        self._stop_streams()
        self._sweeping.set()
        if self._sweep_thread is not None:
            self._sweep_thread.join(timeout=10)
            self._sweep_thread = None
        if self._consumer is not None:
            self._consumer.stop(graceful=False)
            self._consumer = None

    def _start_streams(self) -> None:
        """Event-stream consumers (Redis Streams; nothing to consume in the embedded shape, where
        events are applied in process): the For You feature store's consumer group."""
        if not self.settings.redis_url or self._streams:
            return
        from clipfeed.feed.events import StreamConsumer

        self._streams.append(StreamConsumer(self.settings).start())

    def _stop_streams(self) -> None:
        for consumer in self._streams:
            consumer.stop()
        self._streams = []

    def _start_sweepers(self) -> None:
        self._sweeping.clear()
        self._sweep_thread = threading.Thread(target=self._sweep_loop, name="clipfeed-sweepers", daemon=True)
        self._sweep_thread.start()

    def _sweep_loop(self) -> None:
        next_run = {name: 0.0 for name in SWEEPERS}
        while not self._sweeping.is_set():
            now = time.monotonic()
            for spec in SWEEPERS.values():
                if now >= next_run[spec.name]:
                    next_run[spec.name] = now + spec.every_s(self.settings)
                    try:
                        spec.fn(self.settings, self)
                    except Exception:  # noqa: BLE001 - a failed sweep is retried next tick
                        log.exception("sweeper %s failed", spec.name)
            wait = min(next_run.values(), default=now + 1.0) - time.monotonic()
            self._sweeping.wait(max(0.05, wait))

    def run_consumer_forever(self, workers: int | None = None) -> None:
        """Block in a dedicated process (`clipfeed worker`), with Huey's signal handling."""
        consumer = Consumer(
            self.huey, workers=workers or self.settings.worker_threads, worker_type="thread",
            initial_delay=0.05, backoff=1.2, max_delay=0.5, periodic=True,
        )
        self._start_sweepers()
        self._start_streams()
        try:
            consumer.run()
        finally:
            self._stop_streams()
            self._sweeping.set()
