"""Who held the event loop during a slow page: a record of long event-loop steps and garbage
collections, matched against the pages' time spans (bench/feed.py prints the attribution).

asyncio's own debug mode (loop.slow_callback_duration) logs slow steps too, but it also turns on
coroutine origin tracking and checks on every call, which would change the timings measured here;
this wraps only `Handle._run` (one perf_counter pair per loop step) and `gc.callbacks`.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections import defaultdict


def _describe(handle) -> str:
    """The coroutine a loop step ran (a task's qualified name), else the callback's name."""
    callback = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        return getattr(coro, "__qualname__", repr(coro))
    return getattr(callback, "__qualname__", repr(callback))


def sched_snapshot() -> dict[int, tuple[int, int]]:
    """Per thread of this process: (ns on a CPU, ns runnable but waiting for one), from Linux's
    /proc/self/task/*/schedstat ({} where that is not available). The difference between two
    snapshots splits a page's wall time into running, waiting for a CPU (the machine's other
    load), and blocked (I/O, locks, waiting for another thread)."""
    out = {}
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/schedstat") as f:
                    run, wait, _ = f.read().split()
                out[int(tid)] = (int(run), int(wait))
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return out


def sched_delta(before: dict, after: dict, main: int) -> tuple[float, float, float, float]:
    """(main thread run ms, its CPU wait ms, other threads' run ms, their CPU wait ms)."""
    main_run = main_wait = other_run = other_wait = 0.0
    for tid, (run, wait) in after.items():
        run0, wait0 = before.get(tid, (0, 0))
        if tid == main:
            main_run, main_wait = (run - run0) / 1e6, (wait - wait0) / 1e6
        else:
            other_run += (run - run0) / 1e6
            other_wait += (wait - wait0) / 1e6
    return main_run, main_wait, other_run, other_wait


class LoopWatch:
    """Records loop steps longer than `threshold_ms` and every GC pause, with start times."""

    def __init__(self, threshold_ms: float = 2.0):
        self.threshold = threshold_ms / 1000
        self.steps: list[tuple[float, float, str]] = []   # (start, seconds, what)
        self.gcs: list[tuple[float, float, int]] = []     # (start, seconds, generation)
        self.db_calls: list[tuple[float, float, str]] = []  # (start, seconds, what): aiosqlite calls
        self.cpu_steps: list[tuple[str, float]] = []  # (what, CPU seconds) of the steps in `steps`
        self._gc_started = 0.0
        self._original = None

    def __enter__(self) -> LoopWatch:
        original = self._original = asyncio.events.Handle._run
        steps, threshold = self.steps, self.threshold

        cpu_steps = self.cpu_steps

        def _run(handle):
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(handle)
            finally:
                took = time.perf_counter() - started
                if took > threshold:
                    what = _describe(handle)
                    steps.append((started, took, what))
                    # The loop thread's own CPU in that step: unlike the wall time, not inflated
                    # when the machine's other load keeps the thread off a CPU.
                    cpu_steps.append((what, time.thread_time() - cpu))

        asyncio.events.Handle._run = _run
        gc.callbacks.append(self._on_gc)
        self._patch_aiosqlite()
        return self

    def _patch_aiosqlite(self) -> None:
        """SQLite calls as the loop sees them (queued to aiosqlite's thread until its answer is
        back): a slow page blocked on the database shows which call it waited for."""
        try:
            from aiosqlite import core
        except ImportError:
            self._db_original = None
            return
        original = self._db_original = core.Connection._execute
        calls, threshold = self.db_calls, self.threshold

        async def _execute(conn, fn, *args, **kwargs):
            started = time.perf_counter()
            try:
                return await original(conn, fn, *args, **kwargs)
            finally:
                took = time.perf_counter() - started
                if took > threshold:
                    what = getattr(fn, "__name__", "?")
                    if args and isinstance(args[0], str):
                        what += " " + " ".join(args[0].split())[:50]
                    calls.append((started, took, what))

        core.Connection._execute = _execute

    def __exit__(self, *exc) -> None:
        asyncio.events.Handle._run = self._original
        gc.callbacks.remove(self._on_gc)
        if self._db_original is not None:
            from aiosqlite import core

            core.Connection._execute = self._db_original

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gcs.append((self._gc_started, time.perf_counter() - self._gc_started, info["generation"]))

    def attribute(self, pages: list[tuple], own: str, over_ms: float) -> dict:
        """For each page (start, end, cpu seconds, kind, sched_delta) slower than `over_ms`: the loop steps of
        other coroutines than `own` (the client's task, which runs the page in process) that
        overlapped it, and the GC pauses inside it. Returns a summary and the slowest pages."""
        slow = [p for p in pages if (p[1] - p[0]) * 1000 > over_ms]
        blame: dict[str, float] = defaultdict(float)
        detail = []
        totals = [0.0, 0.0, 0.0, 0.0]
        for page in slow:
            for i, value in enumerate(page[4]):
                totals[i] += value
        for start, end, cpu, kind, sched in sorted(slow, key=lambda p: p[0] - p[1]):
            foreign: dict[str, float] = defaultdict(float)
            own_max = 0.0
            for s, took, what in self.steps:
                overlap = min(end, s + took) - max(start, s)
                if overlap <= 0:
                    continue
                if what == own:
                    own_max = max(own_max, took)
                else:
                    foreign[what] += overlap
            gc_ms = {}
            for s, took, gen in self.gcs:
                if start <= s < end:
                    gc_ms[gen] = gc_ms.get(gen, 0.0) + took * 1000
            db = sorted(((min(end, s + took) - max(start, s), what) for s, took, what in self.db_calls
                         if min(end, s + took) > max(start, s)), reverse=True)
            for what, seconds in foreign.items():
                blame[what] += seconds * 1000
            for gen, ms in gc_ms.items():
                blame[f"gc gen {gen}"] += ms
            detail.append({"kind": kind, "wall_ms": (end - start) * 1000, "cpu_ms": cpu * 1000,
                           "own_longest_step_ms": own_max * 1000, "sched": sched,
                           "others_ms": {k: round(v * 1000, 1) for k, v in foreign.items()},
                           "gc_ms": {k: round(v, 1) for k, v in gc_ms.items()},
                           "db": [f"{what} {seconds * 1000:.1f} ms" for seconds, what in db[:2]]})
        return {"slow_pages": len(slow), "pages": len(pages), "blame_ms": dict(blame), "slowest": detail,
                "wall_ms": sum((p[1] - p[0]) * 1000 for p in slow), "sched_ms": totals}
