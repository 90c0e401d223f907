from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class InvalidKey(ValueError):
    pass


def validate_key(key: str) -> str:
    """Keys are relative, '/'-separated names built by the server; anything else is refused.

    No empty, '.' or '..' segments, no leading '/', no backslashes or control characters:
    a key can never name something outside the store, whatever the caller decoded it from.
    """
    if not key or len(key) > 512 or key.startswith("/"):
        raise InvalidKey(f"invalid blob key: {key!r}")
    for segment in key.split("/"):
        if not _KEY_SEGMENT.match(segment) or segment in (".", ".."):
            raise InvalidKey(f"invalid blob key: {key!r}")
    return key


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: datetime
    etag: str


@runtime_checkable
class BlobStore(Protocol):
    """What clipfeed needs from object storage; shaped so an S3 bucket can implement it.

    `append`/`truncate` serve resumable uploads: a local file appends in place, an S3 store
    keeps each chunk as a part object and composes them on completion.
    """

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int: ...

    async def put_file(self, key: str, path: Path, *, move: bool = False) -> int: ...

    async def append(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int: ...

    async def truncate(self, key: str, size: int) -> None: ...

    async def stat(self, key: str) -> BlobInfo | None: ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]: ...

    async def read_all(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> int: ...

    def local_path(self, key: str) -> Path | None: ...

    def signed_url(self, key: str, expires_in: int) -> str | None: ...
