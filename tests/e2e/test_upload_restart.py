"""A tus upload survives `kill -9` of the server in the middle of a PATCH body.

The server runs as a real subprocess (`python -m clipfeed.cli serve`) on the test's database and
data folder; it is killed while a chunk streams, started again on the same state, and the
upload resumes from the offset the database recorded, ending byte-identical.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tusclient import client as tus_client

from clipfeed.media import keys
from clipfeed.media.models import Upload, Video
from tests.conftest import register, wait_for
from tests.conftest import db_run as _db

pytestmark = pytest.mark.slow

MB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`clipfeed serve` in a child process, configured only through CLIPFEED_* variables."""

    def __init__(self, settings, port: int, log_dir: Path):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_dir = log_dir
        self.starts = 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPFEED_")}
        values = {
            "DATA_DIR": str(settings.data_dir), "DATABASE_URL": settings.database_url,
            "DATABASE_SCHEMA": settings.database_schema, "REDIS_URL": settings.redis_url,
            "QUEUE_NAME": settings.queue_name, "SECRET_KEY": settings.secret_key,
            "HOST": "127.0.0.1", "PORT": str(port), "RUN_WORKERS": "false",
            "RTMP_PORT": "0",  # serve also starts the RTMP ingest: any free port, never a clash
        }
        env.update({f"CLIPFEED_{k}": v for k, v in values.items() if v})
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self) -> "ServerProcess":
        self.starts += 1
        self.log_path = self.log_dir / f"server-{self.starts}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clipfeed.cli", "serve", "--port", str(self.port), "--no-workers", "--no-migrate"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=60, message="the server subprocess")
        return self

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""


def test_upload_survives_kill_9_mid_patch_and_restart(settings, tmp_path):
    server = ServerProcess(settings, _free_port(), tmp_path).start()
    try:
        _scenario(server, settings)
    except BaseException:
        print(f"--- server log ---\n{server.log()}")
        raise
    finally:
        server.stop()


def _scenario(server: ServerProcess, settings) -> None:
    data = os.urandom(6 * MB + 4321)
    half = 3 * MB
    with httpx.Client(base_url=server.url, timeout=30) as http:
        user = register(http)
    headers = user["headers"]

    # The first half, in 1 MB chunks, with the real client.
    uploader = tus_client.TusClient(f"{server.url}/api/v1/uploads", headers=headers).uploader(
        file_stream=io.BytesIO(data), chunk_size=MB, metadata={"filename": "restart.mp4", "caption": "survivor"})
    uploader.upload(stop_at=half)
    url = uploader.url
    upload_id = url.rsplit("/", 1)[1]
    upload = _db(settings, lambda s: s.get(Upload, upload_id))
    assert upload.offset == half
    blob = settings.blob_root / keys.source_key(upload.video_id)

    # A chunk starts streaming; the server dies with part of it on disk but not recorded.
    host, port = "127.0.0.1", server.port
    sock = socket.create_connection((host, port), timeout=30)
    request = (f"PATCH /api/v1/uploads/{upload_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Authorization: {headers['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
               f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {half}\r\n"
               f"Content-Length: {len(data) - half}\r\n\r\n")
    sock.sendall(request.encode())
    sock.sendall(data[half:half + 2 * MB])
    wait_for(lambda: blob.stat().st_size >= half + MB, timeout=30, message="part of the chunk on disk")
    server.kill9()
    sock.close()
    assert blob.stat().st_size > half  # bytes the database never counted

    server.start()  # same port, database and data folder
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.head(url, headers={**TUS, **headers})
        assert response.status_code == 200
        assert response.headers["Upload-Offset"] == str(half)
        assert response.headers["Upload-Length"] == str(len(data))

        # The dead server's lease runs out on its own; until then a writer is told to wait.
        seen: list[int] = []

        def lease_free() -> bool:
            probe = http.patch(url, content=b"", headers={
                **TUS, **headers, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(half)})
            seen.append(probe.status_code)
            if probe.status_code == 423:
                assert int(probe.headers["Retry-After"]) >= 1
            return probe.status_code == 204

        wait_for(lease_free, timeout=30, interval=0.25, message="the dead server's lease to expire")
        assert set(seen) <= {423, 204}, seen
        assert blob.stat().st_size == half  # the uncounted tail was cut before appending

        # A fresh client resumes from the server's offset and finishes.
        resumed = tus_client.TusClient(f"{server.url}/api/v1/uploads", headers=headers).uploader(
            file_stream=io.BytesIO(data), url=url, chunk_size=MB)
        assert resumed.offset == half
        resumed.upload()
        response = http.head(url, headers={**TUS, **headers})
        assert response.headers["Upload-Offset"] == str(len(data))

    assert hashlib.sha256(blob.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    video = _db(settings, lambda s: s.get(Video, upload.video_id))
    assert video.status == "processing" and video.source_bytes == len(data)
    assert video.caption == "survivor"
