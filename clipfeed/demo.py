"""Demo content: a few creators and ~20 generated portrait clips, uploaded through real tus."""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

from clipfeed.config import Settings
from clipfeed.media.ffmpeg import generate_demo_clip

log = logging.getLogger("clipfeed.demo")

DEMO_PASSWORD = "clipfeed-demo-password"
CREATORS = [
    ("maya.moves", "Maya Moves"), ("chef_tomas", "Chef Tomás"), ("pixel.paws", "Pixel Paws"),
    ("skate.lab", "Skate Lab"), ("sunny.sketch", "Sunny Sketch"),
]
TOPICS = [
    ("morning stretch routine", "#fitness #morning"), ("30 second pasta", "#food #recipe"),
    ("cat vs laser pointer", "#cats #funny"), ("kickflip slow motion", "#skate #slowmo"),
    ("drawing a fox in one line", "#art #drawing"), ("city lights timelapse", "#travel #timelapse"),
    ("desk setup tour", "#tech #setup"), ("rainy day lo-fi", "#music #lofi"),
    ("3 plants that never die", "#plants #home"), ("guess the song", "#music #challenge"),
]
PATTERNS = ("testsrc2", "mandelbrot", "life", "cellauto", "smptehdbars", "rgbtestsrc", "gradients")


def _marker(settings: Settings) -> Path:
    return settings.resolved_data_dir / "demo-loaded"


def _token(http: httpx.Client, handle: str, name: str) -> str:
    response = http.post("/api/v1/auth/register", json={"handle": handle, "password": DEMO_PASSWORD,
                                                         "display_name": name})
    if response.status_code == 409:
        response = http.post("/api/v1/auth/login", json={"handle": handle, "password": DEMO_PASSWORD})
    response.raise_for_status()
    return response.json()["token"]


def _clip_plan(count: int) -> list[dict]:
    rng = random.Random(20261125)
    plan = []
    for index in range(count):
        title, tags = TOPICS[index % len(TOPICS)]
        plan.append({
            "creator": index % len(CREATORS),
            "seconds": rng.randint(5, 20),
            "pattern": PATTERNS[index % len(PATTERNS)],
            "hue": rng.randint(0, 359),
            "tone_hz": rng.choice((220, 262, 330, 392, 440, 523, 659, 784)),
            "caption": f"{title} {tags} #clipfeed",
            "text": f"clip {index + 1}",
        })
    return plan


def load_demo(settings: Settings, server: str, *, clips: int = 20, force: bool = False,
              console: Console | None = None) -> int:
    from tusclient import client as tus_client

    console = console or Console()
    if _marker(settings).exists() and not force:
        console.print("demo content already loaded (use --force to add it again)")
        return 0
    cache = settings.resolved_data_dir / "demo-cache"
    cache.mkdir(parents=True, exist_ok=True)
    uploaded = 0
    with httpx.Client(base_url=server, timeout=60) as http, Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TransferSpeedColumn(), console=console, transient=False,
    ) as progress:
        tokens = [_token(http, handle, name) for handle, name in CREATORS]
        overall = progress.add_task("demo clips", total=clips)
        for index, item in enumerate(_clip_plan(clips)):
            path = cache / f"demo-{index:02d}-{item['pattern']}-{item['seconds']}s.mp4"
            if not path.exists():
                generate_demo_clip(path, width=720, height=1280, seconds=item["seconds"], fps=30,
                                   pattern=item["pattern"], hue=item["hue"], tone_hz=item["tone_hz"],
                                   text=item["text"], ffmpeg=settings.ffmpeg_path)
            task = progress.add_task(f"  {path.name}", total=path.stat().st_size)
            uploader = tus_client.TusClient(
                f"{server}/api/v1/uploads", headers={"Authorization": f"Bearer {tokens[item['creator']]}"},
            ).uploader(str(path), chunk_size=8 * 1024 * 1024, metadata={
                "filename": path.name, "caption": item["caption"], "visibility": "public"})
            while uploader.offset < uploader.get_file_size():
                uploader.upload_chunk()
                progress.update(task, completed=uploader.offset)
            progress.remove_task(task)
            progress.advance(overall)
            uploaded += 1
    _marker(settings).write_text(f"{uploaded} clips\n")
    console.print(f"[green]uploaded {uploaded} demo clips[/]; they appear as each one finishes processing")
    return uploaded


def load_demo_in_background(settings: Settings, server: str) -> threading.Thread:
    """`clipfeed serve --demo`: wait until the server answers, then load the demo once."""

    def run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{server}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        try:
            load_demo(settings, server, console=Console(stderr=True))
        except Exception:  # noqa: BLE001 - the server keeps running without demo content
            log.exception("loading the demo content failed")

    thread = threading.Thread(target=run, name="clipfeed-demo", daemon=True)
    thread.start()
    return thread
