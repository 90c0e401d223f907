"""The clipfeed command: serve, worker, migrate, demo, bench, simulate, eval, train, model, features."""

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
BENCHMARKS = ("transcode", "first_playable", "upload", "social", "live", "content_features")


@app.callback()
def _configuration_is_valid() -> None:
    """Every command reads its configuration from CLIPFEED_* variables: a bad one is reported
    here, by name, instead of as a traceback from whichever command first reads it."""
    from pydantic import ValidationError

    try:
        Settings()
    except ValidationError as exc:
        problems = [f"  CLIPFEED_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
                    for error in exc.errors()]
        console.print("[red]invalid configuration:[/]\n" + "\n".join(problems))
        raise typer.Exit(2) from None


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
    """Run only the RTMP live ingest (scale-out: K of these; the LL-HLS files go to CLIPFEED_LIVE_DIR
    (default data_dir/live) on this node's disk, never to the blob store; the API process serving
    /media/live/ for these streams must see that folder: run it on the same node)."""
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
            from clipfeed.live.presence import close_clients

            await live.stop()
            await close_clients()
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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: str = typer.Argument("all", help=f"One of {', '.join(BENCHMARKS)} or all."),
    seconds: int = typer.Option(30, help="Length of the generated clip."),
) -> None:
    """Run the benchmarks under bench/ (each prints a table with ratios to its baseline); options
    after the name go to the script, e.g. `clipfeed bench swipe --minutes 3`."""
    names = BENCHMARKS if name == "all" else (name,)
    for bench_name in names:
        script = BENCH_DIR / f"{bench_name}.py"
        if not script.exists():
            raise typer.BadParameter(f"no benchmark named {bench_name}")
        console.rule(bench_name)
        code = subprocess.call([sys.executable, str(script), "--seconds", str(seconds), *ctx.args])
        if code:
            raise typer.Exit(code)


# -- For You models: simulator, offline evaluation, training, registry ------------------------------

model_app = typer.Typer(help="Published recommendation models: list versions, roll back.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@app.command()
def simulate(
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same platform and log."),
    users: int = typer.Option(500, min=1),
    videos: int = typer.Option(2000, min=1),
    interactions: int = typer.Option(80, min=1, help="Mean interactions per user."),
    out: Path = typer.Option(..., help="Where to write the log (MovieLens u.data layout)."),
) -> None:
    """Generate a synthetic platform and write its interaction log (user item rating timestamp)."""
    from clipfeed.feed.recsys.evaluation import simulated_log

    log = simulated_log(seed=seed, users=users, videos=videos, interactions_per_user=interactions)
    out.parent.mkdir(parents=True, exist_ok=True)
    log.write_udata(out)
    console.print(f"wrote {len(log)} interactions of {users} users on {videos} videos to {out}")


@app.command("eval")
def eval_command(
    simulate_: bool = typer.Option(False, "--simulate", help="Evaluate on a generated platform."),
    seed: int = typer.Option(0),
    users: int = typer.Option(500, min=1),
    videos: int = typer.Option(2000, min=1),
    media_signal: float = typer.Option(
        0.0, min=0.0, max=10.0, help="With --simulate: give videos media vectors whose topic share is this strong "
                                     "(0: none; 1: topic, creator style and noise alike)."),
    untagged_share: float = typer.Option(0.0, min=0.0, max=1.0,
                                         help="With --simulate: share of videos without caption or hashtags."),
    log_path: Path = typer.Option(None, "--log", help="A MovieLens u.data-format log to evaluate on."),
    k: int = typer.Option(20, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help="Print {\"models\": {...}} instead of a table."),
) -> None:
    """Compare popularity, item-kNN, ALS and clipfeed on a temporal split (Recall, NDCG, coverage, novelty)."""
    import json

    from clipfeed.feed.recsys.evaluation import load_log, render_table, run_evaluation, simulated

    if simulate_ == (log_path is not None):
        raise typer.BadParameter("give exactly one of --simulate or --log PATH")
    if not simulate_ and (media_signal or untagged_share):
        raise typer.BadParameter("--media-signal and --untagged-share shape a simulated platform: use them with --simulate")
    try:
        log, platform = (simulated(seed=seed, users=users, videos=videos, media_signal=media_signal,
                                   untagged_share=untagged_share) if simulate_ else (load_log(log_path), None))
        result = run_evaluation(log, k=k, seed=seed, weights=Settings().feed_score_weights, platform=platform)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]cannot evaluate:[/] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(result.as_json()))
    else:
        console.print(render_table(result, k=k))


@app.command()
def train(
    force: bool = typer.Option(True, "--force/--if-due", help="Train now, or only if the training period has passed."),
) -> None:
    """Train the collaborative model and the ranker from the event log; publish (promoted if better)."""
    from clipfeed.feed.training import TrainingSkipped, train_and_publish
    from clipfeed.jobs import run_async

    _logging("WARNING")
    try:
        report = run_async(train_and_publish, Settings(), force)
    except TrainingSkipped as exc:
        console.print(f"[yellow]not trained:[/] {exc}")
        raise typer.Exit(1) from exc
    for kind, outcome in report.published.items():
        state = "[green]promoted[/]" if outcome["promoted"] else "kept the current version"
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in outcome["metrics"].items())
        console.print(f"{kind} {outcome['version']}: {metrics} — {state}")


def _registry(settings: Settings):
    from clipfeed.feed.recsys.registry import ModelRegistry
    from clipfeed.storage import build_store

    return ModelRegistry(build_store(settings), prefix=settings.feed_model_prefix, refresh_s=0)


@model_app.command("list")
def model_list(kind: str = typer.Option(None, help="collab or ranker (default: both).")) -> None:
    """Published versions with their offline metrics; the served one is marked."""
    from rich.table import Table

    from clipfeed.feed.recsys.registry import KINDS
    from clipfeed.jobs import run_async

    kinds = (kind,) if kind else KINDS
    if kind and kind not in KINDS:
        raise typer.BadParameter(f"kind must be one of {', '.join(KINDS)}")
    registry = _registry(Settings())
    table = Table(title="models")
    table.add_column("kind")
    table.add_column("version", no_wrap=True)
    table.add_column("created")
    table.add_column("holdout metrics", overflow="fold")
    table.add_column("served")
    for name in kinds:
        for entry in run_async(registry.list, name):
            metrics = " ".join(f"{k}={v:.4g}" for k, v in entry["metrics"].items())
            table.add_row(name, entry["version"], entry["created_at"][:19], metrics, "*" if entry["current"] else "")
    console.print(table)


@model_app.command("rollback")
def model_rollback(kind: str = typer.Option(..., help="collab or ranker.")) -> None:
    """Serve the version that was served before the current one."""
    from clipfeed.feed.recsys.registry import KINDS, NothingToRollBack
    from clipfeed.jobs import run_async

    if kind not in KINDS:
        raise typer.BadParameter(f"kind must be one of {', '.join(KINDS)}")
    try:
        version = run_async(_registry(Settings()).rollback, kind)
    except NothingToRollBack as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"{kind} now serves {version}")


# -- Content features of processed videos ------------------------------------------------------------

features_app = typer.Typer(help="Content-feature vectors of processed videos.", no_args_is_help=True)
app.add_typer(features_app, name="features")


@features_app.command("refresh")
def features_refresh(
    limit: int = typer.Option(None, min=1, help="Refresh at most this many videos (default: all)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count the videos that would be refreshed."),
    retry_failed: bool = typer.Option(False, "--retry-failed",
                                      help="Also retry videos whose last refresh failed, before their wait is over."),
) -> None:
    """Recompute missing or outdated content-feature vectors of ready videos, newest first.

    Run it after upgrading to a release that bumps the features' NAMES_VERSION, and once for
    videos processed before content features existed. Each is measured on its published lowest
    rung, as the processing job does. A video that fails waits before its next attempt (1 h,
    doubling with each failure, at most a week); --retry-failed tries those now too."""
    import asyncio
    import shutil

    from sqlalchemy.exc import SQLAlchemyError

    from clipfeed.db import Database
    from clipfeed.media.feature_refresh import (Outcome, count_stale_videos, count_waiting_videos,
                                                refresh_content_features)
    from clipfeed.media.ffmpeg import ffmpeg_executable
    from clipfeed.storage import build_store

    _logging("ERROR")  # each video's outcome is printed below; the tracebacks stay out of the way
    settings = Settings()
    colours = {Outcome.REFRESHED: "green", Outcome.FAILED: "red", Outcome.SKIPPED: "yellow"}
    seen = [0, 0]  # videos done, videos to do

    def show(video_id: str, outcome: str, reason: str | None) -> None:
        seen[0] += 1
        console.print(f"[{seen[0]}/{seen[1]}] {video_id} [{colours[outcome]}]{outcome}[/]"
                      + (f": {reason}" if reason else ""), highlight=False)

    async def run():
        db = Database(settings, pooled=False)
        try:
            stale = await count_stale_videos(db, retry_failed=retry_failed)
            seen[1] = stale if limit is None else min(stale, limit)
            if dry_run:
                return seen[1], 0 if retry_failed else await count_waiting_videos(db)
            return await refresh_content_features(settings, db, build_store(settings), limit=limit,
                                                  retry_failed=retry_failed, on_video=show)
        finally:
            await db.dispose()

    ffmpeg = ffmpeg_executable(settings.ffmpeg_path)
    if not dry_run and shutil.which(ffmpeg) is None:
        console.print(f"[red]cannot refresh content features:[/] no ffmpeg at {ffmpeg} (CLIPFEED_FFMPEG_PATH)",
                      highlight=False)
        raise typer.Exit(2)
    try:
        result = asyncio.run(run())
    except (SQLAlchemyError, OSError, ValueError) as exc:
        # The database or the store is unusable (a video's own failure is counted, never raised).
        console.print(f"[red]cannot refresh content features:[/] {getattr(exc, 'orig', None) or exc}\n"
                      "(is CLIPFEED_DATABASE_URL / CLIPFEED_STORAGE_URL right, and has `clipfeed migrate` run?)",
                      highlight=False)
        raise typer.Exit(2) from None
    if dry_run:
        due, waiting = result
        console.print(f"{due} videos would be refreshed" + _waiting_note(waiting))
        return
    console.print(f"refreshed {result.refreshed}, failed {result.failed}, skipped {result.skipped} "
                  f"in {result.elapsed_s:.1f} s" + _waiting_note(result.waiting))


def _waiting_note(waiting: int) -> str:
    return f"; {waiting} more wait for the retry of a failed refresh (--retry-failed: now)" if waiting else ""


if __name__ == "__main__":
    app()
