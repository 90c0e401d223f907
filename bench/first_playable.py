"""Upload complete -> lowest rung playable, as a fraction of the clip's duration (goal <= 0.35).

A 1080x1920 30 fps clip with audio goes through the real tus upload into a real `clipfeed serve`
(SQLite, in-process worker). t0 = the final PATCH answered; t1 = the master playlist, the rung
playlist and its first segment are all fetchable from /media. Also reports when every rung is in.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import ServerProcess, print_table, register  # noqa: E402
from clipfeed.media.ffmpeg import generate_demo_clip  # noqa: E402


def playable(http: httpx.Client, base: str, video_id: str, headers: dict) -> bool:
    video = http.get(f"{base}/api/v1/videos/{video_id}", headers=headers).json()
    hls = (video.get("urls") or {}).get("hls")
    if video.get("status") != "ready" or not hls:
        return False
    master_url = urljoin(base, hls)
    master = http.get(master_url, headers=headers)
    rung = next((line for line in master.text.splitlines() if line and not line.startswith("#")), None)
    if master.status_code != 200 or rung is None:
        return False
    playlist_url = urljoin(master_url, rung)
    playlist = http.get(playlist_url, headers=headers)
    segment = next((line for line in playlist.text.splitlines() if line and not line.startswith("#")), None)
    return segment is not None and http.get(urljoin(playlist_url, segment), headers=headers).status_code == 200


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    from tusclient import client as tus_client

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = tmp / "clip.mp4"
        generate_demo_clip(clip, width=1080, height=1920, seconds=args.seconds, fps=30, pattern="testsrc2",
                           hue=0, tone_hz=440, text="bench")
        server = ServerProcess(tmp / "data", workers=True)
        try:
            token = register(server.url, "benchcreator")
            headers = {"Authorization": f"Bearer {token}"}
            uploader = tus_client.TusClient(f"{server.url}/api/v1/uploads", headers=headers).uploader(
                str(clip), chunk_size=8 * 1024 * 1024, metadata={"filename": "clip.mp4", "caption": "bench"})
            uploader.upload()
            t0 = time.perf_counter()
            with httpx.Client(timeout=10) as http:
                video_id = None
                while video_id is None:
                    # The upload URL's video id is in the creation response; read it back via the profile list.
                    me = http.get(f"{server.url}/api/v1/me", headers=headers).json()
                    items = http.get(f"{server.url}/api/v1/users/{me['id']}/videos", headers=headers).json()["items"]
                    video_id = items[0]["id"] if items else None
                while not playable(http, server.url, video_id, headers):
                    if time.perf_counter() - t0 > 600:
                        raise SystemExit("video never became playable")
                    time.sleep(0.05)
                t1 = time.perf_counter()
                while http.get(f"{server.url}/api/v1/videos/{video_id}", headers=headers).json()["progress"] < 100:
                    time.sleep(0.1)
                t2 = time.perf_counter()
        finally:
            server.stop()
    first, full = t1 - t0, t2 - t0
    print_table(f"first_playable: {args.seconds} s 1080x1920 clip, upload complete -> playable",
                ["measure", "seconds", "x clip duration", "goal"], [
                    ["lowest rung playable", f"{first:.2f}", f"{first / args.seconds:.3f}", "<= 0.35"],
                    ["every rung published", f"{full:.2f}", f"{full / args.seconds:.3f}", ""],
                ])


if __name__ == "__main__":
    main()
