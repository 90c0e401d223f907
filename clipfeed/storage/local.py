from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import sys
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from clipfeed.storage.base import BlobInfo, InvalidKey, validate_key

READ_CHUNK = 256 * 1024
# Body chunks from the HTTP server are small; batching them keeps thread hops rare.
WRITE_BATCH = 1024 * 1024
SYNC_FILE_RANGE_WRITE = 2  # start write-back of the range, do not wait for it


def _sync_file_range():
    """libc's sync_file_range (Linux), or None elsewhere: a hint that starts writing a range to
    disk early, so the fsync that makes it durable has less left to wait for."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_START_WRITEBACK = _sync_file_range()


def _write_batch(fd: int, buffers: list[bytes], offset: int) -> None:
    """Write the buffers in order with as few system calls as possible (no joined copy), then
    start their write-back (a hint: durability still comes from the fsync at the end)."""
    if len(buffers) > 256:  # stay far below IOV_MAX
        buffers = [b"".join(buffers)]
    total = sum(len(b) for b in buffers)
    done = os.writev(fd, buffers)
    if done < total:  # a short write (rare on regular files): finish it piece by piece
        data = memoryview(b"".join(buffers))[done:]
        while data:
            data = data[os.write(fd, data):]
    if _START_WRITEBACK is not None:
        _START_WRITEBACK(fd, offset, total, SYNC_FILE_RANGE_WRITE)


class BlobTooLarge(Exception):
    pass


class LocalStore:
    """Blobs as files under one root folder (the embedded shape)."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        validate_key(key)
        path = self.root / key
        # Refuse anything that resolves outside the root (e.g. a symlink planted in the tree).
        real = Path(os.path.realpath(path))
        if real != path and not str(real).startswith(str(self.root) + os.sep):
            raise InvalidKey(f"blob key escapes the store: {key!r}")
        return path

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def signed_url(self, key: str, expires_in: int) -> str | None:
        # Local blobs are served by clipfeed's own /media route, which signs its URLs itself.
        return None

    async def _write(self, path: Path, chunks: AsyncIterable[bytes], mode: str, max_bytes: int | None) -> int:
        """Write `chunks` to `path`; returns once every byte is on stable storage (fsync).

        Pipelined, because uploads are bound by receiving and by the disk: while one batch is
        written on a worker thread (and its write-back to disk started with sync_file_range),
        the event loop receives the next. At most two batches are held, so memory stays constant;
        the final fsync then only waits for what the disk has not absorbed yet."""
        written = 0
        pending: list[bytes] = []
        pending_size = 0
        # The first bytes arrive before the file is created: a body refused before it carries any
        # data (bad form fields, a dropped connection) leaves no trace on disk.
        iterator = aiter(chunks)
        first = await anext(iterator, b"")
        handle = await asyncio.to_thread(open, path, mode, buffering=0)
        in_flight: asyncio.Future | None = None
        loop = asyncio.get_running_loop()

        async def rest() -> AsyncIterator[bytes]:
            yield first
            async for chunk in iterator:
                yield chunk

        try:
            start = os.fstat(handle.fileno()).st_size if "a" in mode else 0
            async for chunk in rest():
                if not chunk:
                    continue
                written += len(chunk)
                if max_bytes is not None and written > max_bytes:
                    raise BlobTooLarge(f"more than {max_bytes} bytes")
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= WRITE_BATCH:
                    if in_flight is not None:
                        await in_flight
                    in_flight = loop.run_in_executor(None, _write_batch, handle.fileno(), pending,
                                                     start + written - pending_size)
                    pending, pending_size = [], 0
            if in_flight is not None:
                await in_flight
                in_flight = None
            if pending:
                await asyncio.to_thread(_write_batch, handle.fileno(), pending, start + written - pending_size)
            await asyncio.to_thread(os.fsync, handle.fileno())
        finally:
            if in_flight is not None:  # a failure while a batch was being written: let it end first
                await asyncio.gather(in_flight, return_exceptions=True)
            await asyncio.to_thread(handle.close)
        return written

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        try:
            size = await self._write(tmp, chunks, "wb", None)
            os.replace(tmp, path)  # readers never see a half-written blob
        finally:
            tmp.unlink(missing_ok=True)
        return size

    async def put_file(self, key: str, path: Path, *, move: bool = False) -> int:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        if move:
            await asyncio.to_thread(shutil.move, str(path), str(tmp))
        else:
            await asyncio.to_thread(shutil.copyfile, path, tmp)
        os.replace(tmp, target)
        return target.stat().st_size

    async def append(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return await self._write(path, chunks, "ab", max_bytes)

    async def truncate(self, key: str, size: int) -> None:
        with open(self._path(key), "r+b") as handle:
            handle.truncate(size)
            os.fsync(handle.fileno())

    async def stat(self, key: str) -> BlobInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file() or path.is_symlink():
            return None
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        return BlobInfo(key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC), etag=etag)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Yield bytes [start, end) of the blob."""
        path = self._path(key)
        handle = await asyncio.to_thread(open, path, "rb")
        try:
            handle.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                size = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                data = await asyncio.to_thread(handle.read, size)
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            handle.close()

    async def read_all(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def delete_prefix(self, prefix: str) -> int:
        path = self._path(prefix.rstrip("/"))
        if path.is_dir():
            count = sum(1 for p in path.rglob("*") if p.is_file())
            await asyncio.to_thread(shutil.rmtree, path, True)
            return count
        if path.is_file():
            path.unlink()
            return 1
        return 0
