"""Recomputing stale or missing content-feature vectors of processed videos (after a release bumps
NAMES_VERSION, or for videos processed before the features existed): real videos processed by the
real pipeline and ffmpeg, their stored vectors made stale through the database, on every backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from clipfeed.accounts.models import User
from clipfeed.cli import app
from clipfeed.db import Database
from clipfeed.media import keys, pipeline
from clipfeed.media.content_features import FEATURE_NAMES, NAMES_VERSION
from clipfeed.media.feature_refresh import Outcome, refresh_content_features, retry_delay
from clipfeed.media.imports import import_local_file
from clipfeed.media.ladder import RUNG_INIT
from clipfeed.media.models import Video, VideoContentFeatureFailure, VideoContentFeatures
from clipfeed.storage import build_store
from tests import mediagen
from tests.conftest import db_run
from tests.feed import factories as f


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Two short clips that look and sound different, so their vectors cannot be confused."""
    folder = tmp_path_factory.mktemp("refresh")
    return [mediagen.make_clip(folder / "a.mp4", width=360, height=640, seconds=3, tone_hz=440),
            mediagen.make_clip(folder / "b.mp4", width=360, height=640, seconds=3, pattern="rgbtestsrc",
                               tone_hz=1200)]


def process(settings, owner_id: str, clip: Path) -> str:
    """A video made from `clip` and processed by the pipeline to the end; its id."""

    async def create(session):
        owner = await session.get(User, owner_id)
        return (await import_local_file(session, owner, clip, filename=clip.name, move=False)).id

    video_id = db_run(settings, create)
    asyncio.run(pipeline.process_video(settings, video_id))
    assert stored(settings)[video_id][0] == NAMES_VERSION, "the pipeline stored no vector"
    return video_id


def stored(settings) -> dict[str, tuple[int, np.ndarray]]:
    async def read(session):
        rows = (await session.execute(select(VideoContentFeatures.video_id, VideoContentFeatures.names_version,
                                             VideoContentFeatures.vector))).all()
        return {video_id: (version, np.frombuffer(vector, dtype="<f4")) for video_id, version, vector in rows}

    return db_run(settings, read)


def change(settings, *statements) -> None:
    async def work(session):
        for statement in statements:
            await session.execute(statement)

    db_run(settings, work)


def failures(settings) -> dict[str, VideoContentFeatureFailure]:
    async def read(session):
        return {row.video_id: row for row in (await session.scalars(select(VideoContentFeatureFailure))).all()}

    return db_run(settings, read)


def refresh(settings, **options) -> tuple:
    outcomes: list[tuple[str, str]] = []

    async def run():
        db = Database(settings, pooled=False)
        try:
            return await refresh_content_features(settings, db, build_store(settings), **options,
                                                  on_video=lambda video_id, outcome, _: outcomes.append(
                                                      (video_id, outcome)))
        finally:
            await db.dispose()

    return asyncio.run(run()), outcomes


def test_stale_and_missing_vectors_are_recomputed_and_a_broken_video_is_counted_and_passed(settings, clips):
    owner = f.make_user(settings)
    outdated, missing, broken = (process(settings, owner["id"], clip) for clip in (*clips, clips[0]))
    original = stored(settings)
    content_json = db_run(settings, lambda s: s.get(Video, outdated)).features["content"]
    change(settings,
           update(VideoContentFeatures).where(VideoContentFeatures.video_id == outdated)
           .values(names_version=NAMES_VERSION - 1),
           delete(VideoContentFeatures).where(VideoContentFeatures.video_id.in_((missing, broken))))
    renditions = db_run(settings, lambda s: s.get(Video, broken)).renditions
    lowest = min(renditions, key=lambda r: r["width"] * r["height"])["name"]
    init_key = keys.hls_key(broken, f"{lowest}/{RUNG_INIT}")
    init_segment = asyncio.run(build_store(settings).read_all(init_key))
    asyncio.run(build_store(settings).delete(init_key))

    report, outcomes = refresh(settings)

    # Newest first: the broken video (processed last) fails, and the run goes on to the others.
    assert outcomes == [(broken, Outcome.FAILED), (missing, Outcome.REFRESHED), (outdated, Outcome.REFRESHED)]
    assert (report.refreshed, report.failed, report.skipped) == (2, 1, 0) and report.elapsed_s > 0
    now = stored(settings)
    assert broken not in now, "a failure writes nothing"
    for video_id in (outdated, missing):
        version, vector = now[video_id]
        assert version == NAMES_VERSION and len(vector) == len(FEATURE_NAMES)
        # Same rung, same measurement: what the pipeline had stored.
        assert np.allclose(vector, original[video_id][1], atol=1e-5), video_id
    assert not np.allclose(now[outdated][1], now[missing][1], atol=1e-3)
    refreshed_json = db_run(settings, lambda s: s.get(Video, outdated)).features["content"]
    assert refreshed_json["names_version"] == NAMES_VERSION
    assert refreshed_json["values"] == pytest.approx(content_json["values"], abs=1e-4)

    # The failure is recorded: the next attempt waits an hour.
    failure = failures(settings)[broken]
    assert (failure.attempts, failure.names_version) == (1, NAMES_VERSION)
    assert failure.retry_at - failure.failed_at == retry_delay(1) and "init" in failure.last_error
    again, outcomes = refresh(settings)
    assert outcomes == [] and (again.refreshed, again.failed, again.waiting) == (0, 0, 1), "not retried at once"

    # Asked for, or once the wait is over, it is tried again, and each failure doubles the wait.
    _, outcomes = refresh(settings, retry_failed=True)
    assert outcomes == [(broken, Outcome.FAILED)] and failures(settings)[broken].attempts == 2
    change(settings, update(VideoContentFeatureFailure).values(retry_at=failure.failed_at))
    due, outcomes = refresh(settings)
    assert outcomes == [(broken, Outcome.FAILED)] and due.waiting == 1
    failure = failures(settings)[broken]
    assert failure.attempts == 3 and failure.retry_at - failure.failed_at == retry_delay(3) == 4 * retry_delay(1)
    # A failure under other features (an older release) holds nothing back, and counts from one again.
    change(settings, update(VideoContentFeatureFailure).values(names_version=NAMES_VERSION - 1))
    _, outcomes = refresh(settings)
    assert outcomes == [(broken, Outcome.FAILED)] and failures(settings)[broken].attempts == 1

    # The worker's periodic job does the same a few videos per run, newest first; a video
    # waiting for its retry takes none of its slots.
    from clipfeed.jobs.queue import PERIODIC
    from clipfeed.media import tasks

    assert PERIODIC["media.refresh_content_features"].fn is tasks.refresh_content_features
    change(settings, delete(VideoContentFeatures))
    tasks.refresh_content_features(settings.model_copy(update={"content_features_refresh_per_run": 1}))
    assert set(stored(settings)) == {missing}, "the waiting broken video took the one slot"
    change(settings, delete(VideoContentFeatures))
    tasks.refresh_content_features(settings.model_copy(update={"content_features_refresh_per_run": 0}))
    assert stored(settings) == {}, "0 turns the job off"

    # Repaired, the video is measured at its next attempt, and its failure record goes.
    async def put_back():
        async def chunks():
            yield init_segment

        await build_store(settings).put(init_key, chunks())

    asyncio.run(put_back())
    _, outcomes = refresh(settings, retry_failed=True)
    assert (broken, Outcome.REFRESHED) in outcomes and broken in stored(settings)
    assert failures(settings) == {}


def _env(settings) -> dict[str, str]:
    env = {"CLIPFEED_DATA_DIR": str(settings.data_dir), "CLIPFEED_SECRET_KEY": settings.secret_key, "COLUMNS": "200"}
    for name in ("database_url", "database_schema"):
        if getattr(settings, name):
            env[f"CLIPFEED_{name.upper()}"] = getattr(settings, name)
    return env


def test_the_command_counts_on_a_dry_run_and_reports_failures_without_failing(settings):
    owner = f.make_user(settings)
    # Ready rows written straight to the database, with no vector and no published rung.
    unmeasured = [f.make_video(settings, owner["id"]) for _ in range(3)]
    f.make_video(settings, owner["id"], status="processing", progress=10.0)  # its job will store one
    runner = CliRunner(env=_env(settings))

    counted = runner.invoke(app, ["features", "refresh", "--dry-run"], catch_exceptions=False)
    assert counted.exit_code == 0, counted.output
    assert "3 videos would be refreshed" in counted.output
    limited = runner.invoke(app, ["features", "refresh", "--dry-run", "--limit", "2"], catch_exceptions=False)
    assert "2 videos would be refreshed" in limited.output

    ran = runner.invoke(app, ["features", "refresh", "--limit", "2"], catch_exceptions=False)
    assert ran.exit_code == 0, ran.output
    assert ran.output.count("no published rung") == 2 and unmeasured[-1] in ran.output  # newest first
    assert "refreshed 0, failed 2, skipped 0" in ran.output
    assert stored(settings) == {}

    # The two failed ones wait for their retry; the dry run says so, and --retry-failed takes them.
    waiting = runner.invoke(app, ["features", "refresh", "--dry-run"], catch_exceptions=False)
    assert "1 videos would be refreshed; 2 more wait for the retry of a failed refresh" in waiting.output
    now = runner.invoke(app, ["features", "refresh", "--dry-run", "--retry-failed"], catch_exceptions=False)
    assert "3 videos would be refreshed" in now.output and "wait" not in now.output
    rest = runner.invoke(app, ["features", "refresh"], catch_exceptions=False)
    assert rest.exit_code == 0 and unmeasured[0] in rest.output and unmeasured[-1] not in rest.output
    assert "refreshed 0, failed 1, skipped 0" in rest.output and "3 more wait" in rest.output


def test_the_command_names_a_database_it_cannot_use(tmp_path):
    result = CliRunner(env={"CLIPFEED_DATA_DIR": str(tmp_path), "COLUMNS": "200"}).invoke(
        app, ["features", "refresh", "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "cannot refresh content features" in result.output and "clipfeed migrate" in result.output
    assert "Traceback" not in result.output
