"""Live with an object store (S3-shaped: no local paths) configured as the blob store: LL-HLS stays
on the ingest node's disk (Settings.live_dir) and plays; only the finished recording goes to the
blob store, as the replay's source."""

from __future__ import annotations

import io
import re
import time
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import av
import httpx

from tests.conftest import LiveServer, wait_for
from tests.live.ingest_support import publish, rtmp_port, start_stream

from clipfeed.media import keys
from clipfeed.storage import BlobInfo, BlobStore, validate_key


class ObjectStore:
    """A BlobStore shaped like an S3 bucket: whole objects by key, no local paths, no appends in
    place. Objects live in memory (this test needs no bucket); every write is logged."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.writes: list[str] = []

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        data = b"".join([chunk async for chunk in chunks])
        self.objects[validate_key(key)] = data
        self.writes.append(key)
        return len(data)

    async def put_file(self, key: str, path: Path, *, move: bool = False) -> int:
        data = Path(path).read_bytes()  # an upload to the bucket; the local file is gone after a move
        self.objects[validate_key(key)] = data
        self.writes.append(key)
        if move:
            Path(path).unlink()
        return len(data)

    async def append(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> int:
        data = self.objects.get(key, b"") + b"".join([chunk async for chunk in chunks])
        self.objects[validate_key(key)] = data
        self.writes.append(key)
        return len(data)

    async def truncate(self, key: str, size: int) -> None:
        self.objects[key] = self.objects.get(key, b"")[:size]

    async def stat(self, key: str) -> BlobInfo | None:
        data = self.objects.get(key)
        return None if data is None else BlobInfo(key, len(data), datetime.now(UTC), str(hash(data)))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        yield self.objects[key][start:end]

    async def read_all(self, key: str) -> bytes:
        return self.objects[key]

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def delete_prefix(self, prefix: str) -> int:
        gone = [k for k in self.objects if k.startswith(prefix)]
        for key in gone:
            del self.objects[key]
        return len(gone)

    def local_path(self, key: str) -> Path | None:
        return None

    def signed_url(self, key: str, expires_in: int) -> str | None:
        return f"https://bucket.invalid/{key}?expires={int(time.time()) + expires_in}"


def test_live_plays_from_the_ingest_disk_with_an_object_store(settings_factory, tmp_path):
    store = ObjectStore()
    assert isinstance(store, BlobStore)
    ingest_disk = tmp_path / "ingest-disk"
    settings = settings_factory(rtmp_enabled=True, rtmp_port=0, live_dir=ingest_disk)
    server = LiveServer(settings, run_workers=False, store=store).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            stream = start_stream(http)
            stream_id = stream["stream_id"]
            base = f"/media/live/{stream_id}/src"
            publisher = publish(rtmp_port(server), stream["stream_key"], seconds=5, size="320x240",
                                log=tmp_path / "pub.log")
            try:
                text = wait_for(lambda: (r := http.get(f"{base}/index.m3u8")).status_code == 200
                                and re.search(r"^s\d+\.m4s$", r.text, re.M) and r.text, timeout=30,
                                message="a segment in the playlist")
                segment = re.findall(r"^(s\d+\.m4s)$", text, re.M)[-1]
                data = http.get(f"{base}/init.mp4").content + http.get(f"{base}/{segment}").content
                with av.open(io.BytesIO(data), format="mp4") as container:
                    assert sum(1 for _ in container.decode(video=0)) >= 10
                # The files are on the ingest's disk; nothing of the live stream went to the store.
                assert (ingest_disk / stream_id / "src" / segment).is_file()
                assert not (settings.resolved_data_dir / "live").exists()
                assert store.writes == []
                assert publisher.wait(timeout=30) == 0
            finally:
                if publisher.poll() is None:
                    publisher.kill()
            ingest = server.app.state.ingest
            wait_for(lambda: ingest.ended_log, timeout=30, message="publish_ended")
            _, recording, _ = ingest.ended_log[-1]
            state = wait_for(lambda: (s := http.get(f"/api/v1/live/{stream_id}").json())
                             and s.get("replay_video_id") and s, timeout=10, message="the replay video")
            # The recording was uploaded to the object store as the replay's source and left the disk.
            source = keys.source_key(state["replay_video_id"])
            assert store.writes == [source]
            assert store.objects[source].startswith(b"FLV\x01") and len(store.objects[source]) > 10_000
            assert recording is not None and not recording.exists()
            # The ended stream's playlists still play from the ingest's disk.
            assert http.get(f"{base}/index.m3u8").text.rstrip().endswith("#EXT-X-ENDLIST")
    finally:
        server.stop()
