"""Where a ranking holds the event loop: the stretches between its consecutive await points.

A page served beside a background re-rank waits for whatever stretch of the re-rank holds the
loop when the page's own database answer arrives. `AwaitMap` marks every await point of the For
You path — the ranking's yield points (`sources.yield_to_pages`) and every `AsyncSession` call —
and records, per pair of consecutive points in one task, the wall and CPU time in between, split
into background (`in_background`) and foreground work. Inside a ranking that is one loop step;
a stretch that spans an await it does not mark (the in-process HTTP transport between two
requests of the bench's client, a model registry read) also holds what other tasks ran meanwhile
(the CPU is the loop thread's). `bench/feed.py --await-map` prints the table.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time

_SKIP = ("_let_others_run", "_marked_yield", "_marked_call")


def _location(depth: int) -> str:
    frame = sys._getframe(depth)
    while frame.f_code.co_name in _SKIP or "sqlalchemy" in frame.f_code.co_filename:
        frame = frame.f_back
    return f"{frame.f_code.co_name}:{frame.f_lineno}"


class AwaitMap:
    SESSION_CALLS = ("execute", "scalars", "scalar", "stream", "get")

    def __init__(self) -> None:
        self.stretches: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        self._resumed: dict[asyncio.Task, tuple[float, float, str]] = {}
        self._restore: list[tuple[object, str, object]] = []

    def _suspend(self, where: str) -> None:
        from clipfeed.feed.sources import in_background

        held = self._resumed.pop(asyncio.current_task(), None)
        if held is not None:
            started, cpu, since = held
            key = f"{'bg' if in_background.get() else 'fg'} {since} -> {where}"
            self.stretches[key].append(((time.perf_counter() - started) * 1000, (time.thread_time() - cpu) * 1000))

    def _resume(self, where: str) -> None:
        self._resumed[asyncio.current_task()] = (time.perf_counter(), time.thread_time(), where)

    def _patch(self, owner, name: str, replacement) -> None:
        self._restore.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    def __enter__(self) -> AwaitMap:
        from sqlalchemy.ext.asyncio import AsyncSession

        from clipfeed.feed import foryou, sources

        original_yield = sources.yield_to_pages

        async def _marked_yield():
            where = _location(2)
            self._suspend(where)
            await original_yield()
            self._resume(where)

        self._patch(sources, "yield_to_pages", _marked_yield)
        self._patch(foryou, "yield_to_pages", _marked_yield)
        for name in self.SESSION_CALLS:
            self._patch(AsyncSession, name, self._marked(getattr(AsyncSession, name), name))
        original_rank = foryou.ForYouEngine.rank

        async def rank(engine, *args, **kwargs):
            self._resume("rank start")
            result = await original_rank(engine, *args, **kwargs)
            self._suspend("rank end")
            return result

        self._patch(foryou.ForYouEngine, "rank", rank)
        return self

    def _marked(self, call, name: str):
        async def _marked_call(session, *args, **kwargs):
            where = f"{_location(2)} ({name})"
            self._suspend(where)
            try:
                return await call(session, *args, **kwargs)
            finally:
                self._resume(where)

        return _marked_call

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore.clear()

    def print(self, most: int = 30) -> None:
        rows = []
        for key, values in self.stretches.items():
            wall = sorted(v[0] for v in values)
            cpu = sorted(v[1] for v in values)
            rows.append((cpu[int(len(cpu) * 0.99)], key, len(values), wall[len(wall) // 2], wall[-1], cpu[len(cpu) // 2],
                         cpu[-1]))
        print(f"\nLoop stretches between await points of the ranking path (ms; top {most} by CPU p99):")
        for cpu99, key, n, wall50, wall_max, cpu50, cpu_max in sorted(rows, reverse=True)[:most]:
            print(f"  {key:78s} n={n:5d}  cpu p50 {cpu50:5.1f} p99 {cpu99:5.1f} max {cpu_max:6.1f}  "
                  f"wall p50 {wall50:5.1f} max {wall_max:6.1f}")
