"""Versioned model artifacts in the BlobStore (local folder embedded, S3 at scale).

Layout per kind: `<prefix>/<kind>/index.json` (versions, their metrics, the promotion history)
and `<prefix>/<kind>/<version>.bin` (the artifact). A new version is served only if it beats the
current one on the holdout metric it was published with (or nothing is served yet);
`rollback` returns to the version promoted before the current one.

All methods are async because the BlobStore is. `current()` caches the loaded model by version
and re-reads the small index at most every `refresh_s` seconds, so a serving process picks up a
newly promoted (or rolled-back) version within that delay without re-reading it per request.

The index is rewritten whole (read-modify-write, atomic per blob): run one trainer at a time
(the periodic job's schedule does), or two publishes may race and one entry be lost.
The promotion gate compares holdout metrics stored at publish time; successive trainings are
scored on their own (later) holdouts, which is the usual, not a perfectly paired, comparison.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from clipfeed.storage import BlobStore

log = logging.getLogger("clipfeed.feed.registry")

KINDS = ("collab", "ranker")


class ModelUnavailable(Exception):
    """The current artifact of a kind is missing or cannot be loaded; callers degrade."""


class NothingToRollBack(Exception):
    """There is no earlier promoted version to return to."""


def _loaders() -> dict[str, Callable[[Path], object]]:
    from clipfeed.feed.recsys.collaborative import CollaborativeModel
    from clipfeed.feed.recsys.ranker import LightGBMRanker

    return {"collab": CollaborativeModel.load, "ranker": LightGBMRanker.load}


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


class ModelRegistry:
    def __init__(self, store: BlobStore, prefix: str = "models", *, refresh_s: float = 10.0):
        self.store = store
        self.prefix = prefix.strip("/")
        self.refresh_s = refresh_s
        self._loaded: dict[str, tuple[str, object]] = {}
        self._index_cache: dict[str, tuple[float, dict]] = {}
        self._lock = asyncio.Lock()

    def _key(self, kind: str, name: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r} (one of {', '.join(KINDS)})")
        return f"{self.prefix}/{kind}/{name}"

    async def _read_index(self, kind: str) -> dict:
        key = self._key(kind, "index.json")
        if await self.store.stat(key) is None:
            return {"current": None, "history": [], "versions": []}
        return json.loads(await self.store.read_all(key))

    async def _write_index(self, kind: str, index: dict) -> None:
        await self.store.put(self._key(kind, "index.json"), _one_chunk(json.dumps(index, indent=1).encode()))
        self._index_cache.pop(kind, None)

    async def publish(self, kind: str, model, metrics: dict, *, compare_on: str,
                      must_beat: float | None = None) -> tuple[str, bool]:
        """Store `model` (anything with `save(path)`) as a new version; promote it if its
        `metrics[compare_on]` beats the current version's (higher is better) or none is current.
        `must_beat`: besides, a score it must beat on its own holdout (e.g. the untrained default's
        there). Returns (version, promoted)."""
        if compare_on not in metrics:
            raise ValueError(f"metrics lack the comparison metric {compare_on!r}")
        version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "artifact.bin"
            await asyncio.to_thread(model.save, path)
            await self.store.put_file(self._key(kind, f"{version}.bin"), path)
        index = await self._read_index(kind)
        current = next((v for v in index["versions"] if v["version"] == index["current"]), None)
        new_value = float(metrics[compare_on])
        promoted = ((current is None or new_value > float(current["metrics"].get(compare_on, float("-inf"))))
                    and (must_beat is None or new_value > must_beat))
        index["versions"].append({"version": version, "created_at": datetime.now(UTC).isoformat(),
                                  "metrics": {k: float(v) for k, v in metrics.items()}, "compare_on": compare_on})
        if promoted:
            index["current"] = version
            index["history"].append(version)
        await self._write_index(kind, index)
        log.info("published %s %s (%s=%.4f) promoted=%s", kind, version, compare_on, new_value, promoted)
        return version, promoted

    async def current_version(self, kind: str) -> str | None:
        cached = self._index_cache.get(kind)
        if cached is None or time.monotonic() - cached[0] > self.refresh_s:
            cached = (time.monotonic(), await self._read_index(kind))
            self._index_cache[kind] = cached
        return cached[1]["current"]

    async def current(self, kind: str) -> tuple[str, object] | None:
        """(version, loaded model) of the served version, None if nothing was ever promoted.
        Raises ModelUnavailable if its artifact is missing or corrupt."""
        try:
            version = await self.current_version(kind)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"{kind} model index unreadable: {exc}") from exc
        if version is None:
            return None
        loaded = self._loaded.get(kind)
        if loaded is not None and loaded[0] == version:
            return loaded
        async with self._lock:
            loaded = self._loaded.get(kind)
            if loaded is not None and loaded[0] == version:
                return loaded
            model = await self._load(kind, version)
            self._loaded[kind] = (version, model)
            return version, model

    async def _load(self, kind: str, version: str):
        key = self._key(kind, f"{version}.bin")
        try:
            local = self.store.local_path(key)
            if local is not None:
                if not local.is_file():
                    raise FileNotFoundError(key)
                return await asyncio.to_thread(_loaders()[kind], local)
            data = await self.store.read_all(key)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "artifact.bin"
                path.write_bytes(data)
                return await asyncio.to_thread(_loaders()[kind], path)
        except Exception as exc:  # any failure to read or parse the artifact means "unavailable"
            log.error("cannot load %s model %s: %s", kind, version, exc)
            raise ModelUnavailable(f"{kind} model {version} cannot be loaded: {exc}") from exc

    async def list(self, kind: str) -> list[dict]:
        index = await self._read_index(kind)
        return [{"version": v["version"], "created_at": v["created_at"], "metrics": v["metrics"],
                 "current": v["version"] == index["current"]} for v in index["versions"]]

    async def rollback(self, kind: str) -> str:
        """Serve the version promoted before the current one again; returns it."""
        index = await self._read_index(kind)
        if len(index["history"]) < 2:
            raise NothingToRollBack(f"no earlier {kind} version to roll back to")
        index["history"].pop()
        index["current"] = index["history"][-1]
        await self._write_index(kind, index)
        self._loaded.pop(kind, None)
        log.warning("rolled %s back to %s", kind, index["current"])
        return index["current"]
