"""The clipfeed command: serve, worker, migrate, demo, bench."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console

from clipfeed.config import Settings

app = typer.Typer(help="clipfeed: a self-hostable short-video platform.", no_args_is_help=True,
                  add_completion=False)
console = Console()

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
BENCHMARKS = ("transcode", "first_playable", "upload", "social", "live")


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (SQLite file or PostgreSQL)."""
    from clipfeed.db.migrate import upgrade

    settings = Settings()
    upgrade(settings)
    console.print(f"[green]database is up to date[/] ({settings.resolved_database_url.split('@')[-1]})")


@app.command()
def serve(
    host: str = typer.Option(None, help="Interface to bind (default from CLIPFEED_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default from CLIPFEED_PORT, 8000)."),
    workers: bool = typer.Option(True, "--workers/--no-workers",
                                 help="Run the media job consumer in this process (embedded shape)."),
    demo: bool = typer.Option(False, "--demo", help="Load the demo content once, in the background."),
    auto_migrate: bool = typer.Option(True, "--migrate/--no-migrate", help="Upgrade the schema first."),
    ingest: bool = typer.Option(True, "--ingest/--no-ingest",
                                help="Run the RTMP live ingest in this process (port CLIPFEED_RTMP_PORT, 1935)."),
) -> None:
    """Serve the API, the web client, the live ingest and (by default) the media workers."""
    import uvicorn

    from clipfeed.app import create_app
    from clipfeed.db.migrate import upgrade

    _logging()
    settings = Settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    if auto_migrate:
        upgrade(settings)
    settings.rtmp_enabled = ingest
    application = create_app(settings, run_workers=workers)
    if demo:
        from clipfeed.demo import load_demo_in_background

        load_demo_in_background(settings, f"http://{_client_host(settings.host)}:{settings.port}")
    console.print(f"clipfeed serving on [bold]http://{settings.host}:{settings.port}[/]"
                  + (f", RTMP ingest on rtmp://{settings.rtmp_host}:{settings.rtmp_port}/live" if ingest else ""))
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=5)


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


@app.command()
def worker(threads: int = typer.Option(None, help="Worker threads (default CLIPFEED_WORKER_THREADS).")) -> None:
    """Consume media jobs in this process only (scale-out shape: run several)."""
    from clipfeed.jobs import JobQueue

    _logging()
    settings = Settings()
    console.print(f"clipfeed worker consuming queue [bold]{settings.queue_name}[/]")
    JobQueue(settings).run_consumer_forever(threads)


@app.command()
def ingest(
    host: str = typer.Option(None, help="Interface for RTMP (default CLIPFEED_RTMP_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, help="RTMP port (default CLIPFEED_RTMP_PORT, 1935)."),
) -> None:
    """Run only the RTMP live ingest (scale-out: K of these; the LL-HLS files go to the data dir,
    which the API processes serving /media/live/ must share)."""
    import asyncio
    import signal

    from clipfeed.db import Database
    from clipfeed.jobs import JobQueue
    from clipfeed.live.ingest import LiveIngest
    from clipfeed.storage import build_store

    _logging()
    settings = Settings()
    if host:
        settings.rtmp_host = host
    if port:
        settings.rtmp_port = port

    async def run() -> None:
        db = Database(settings)
        live = LiveIngest(settings, db, jobs=JobQueue(settings), store=build_store(settings))
        await live.start()
        console.print(f"clipfeed ingest on [bold]rtmp://{settings.rtmp_host}:{live.port}/live[/]")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await live.stop()
            await db.dispose()

    asyncio.run(run())


@app.command()
def demo(
    server: str = typer.Option("http://127.0.0.1:8000", help="A running clipfeed to upload to."),
    clips: int = typer.Option(20, help="How many generated clips to upload."),
    force: bool = typer.Option(False, help="Upload even if the demo was loaded before."),
) -> None:
    """Create demo users and upload generated clips through the real tus pipeline."""
    from clipfeed.demo import load_demo

    _logging("WARNING")
    load_demo(Settings(), server, clips=clips, force=force, console=console)


@app.command()
def bench(
    name: str = typer.Argument("all", help=f"One of {', '.join(BENCHMARKS)} or all."),
    seconds: int = typer.Option(30, help="Length of the generated clip."),
) -> None:
    """Run the benchmarks under bench/ (each prints a table with ratios to its baseline)."""
    names = BENCHMARKS if name == "all" else (name,)
    for bench_name in names:
        script = BENCH_DIR / f"{bench_name}.py"
        if not script.exists():
            raise typer.BadParameter(f"no benchmark named {bench_name}")
        console.rule(bench_name)
        code = subprocess.call([sys.executable, str(script), "--seconds", str(seconds)])
        if code:
            raise typer.Exit(code)


if __name__ == "__main__":
    app()
