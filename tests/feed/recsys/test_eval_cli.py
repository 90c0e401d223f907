"""`clipfeed simulate` and `clipfeed eval` end to end through the real CLI."""

import json

import pytest
from typer.testing import CliRunner

from clipfeed.cli import app

runner = CliRunner()
MODELS = {"popularity", "itemknn", "als", "clipfeed"}


def _eval(*args) -> dict:
    result = runner.invoke(app, ["eval", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_clipfeed_beats_als_by_ten_percent_on_a_seeded_platform():
    report = _eval("--simulate", "--seed", "0", "--users", "200", "--videos", "800")
    models = report["models"]
    assert set(models) == MODELS
    for metrics in models.values():
        # a simulated platform adds what each top 20 is worth by the behaviour model itself
        assert set(metrics) == {"recall@20", "ndcg@20", "coverage", "novelty", "watch_s@20", "completion@20"}
        assert 0 <= metrics["recall@20"] <= 1 and 0 <= metrics["ndcg@20"] <= 1 and 0 <= metrics["coverage"] <= 1
        assert 0 < metrics["completion@20"] < 1 and metrics["watch_s@20"] > 0
    # by that ground truth too, personal recommendations beat the popularity list
    assert models["als"]["completion@20"] > 1.5 * models["popularity"]["completion@20"]
    assert models["clipfeed"]["watch_s@20"] > models["popularity"]["watch_s@20"]
    # personalised models beat popularity; the full pipeline beats ALS by the goal margin
    assert models["als"]["ndcg@20"] > 1.5 * models["popularity"]["ndcg@20"]
    assert models["clipfeed"]["ndcg@20"] >= 1.10 * models["als"]["ndcg@20"], models
    # popularity recommends the same few items to everyone
    assert models["popularity"]["coverage"] < models["als"]["coverage"]


def test_simulate_writes_a_udata_log_that_eval_reads(tmp_path):
    out = tmp_path / "u.data"
    result = runner.invoke(app, ["simulate", "--seed", "2", "--users", "120", "--videos", "400", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) > 2000
    user, item, rating, stamp = lines[0].split("\t")
    assert rating in {"1", "3", "4", "5"} and int(stamp) > 1_600_000_000
    # the same seed writes the same file
    again = tmp_path / "again.data"
    runner.invoke(app, ["simulate", "--seed", "2", "--users", "120", "--videos", "400", "--out", str(again)])
    assert again.read_text() == out.read_text()
    report = _eval("--log", str(out))
    assert set(report["models"]) == MODELS
    assert "watch_s@20" not in report["models"]["als"]  # a log alone has no ground truth
    assert report["dataset"]["interactions"] == len(lines)
    assert report["models"]["als"]["ndcg@20"] > report["models"]["popularity"]["ndcg@20"]
    assert report["models"]["clipfeed"]["ndcg@20"] > 0


def test_table_output_shows_every_model_and_the_goal():
    result = runner.invoke(app, ["eval", "--simulate", "--seed", "1", "--users", "80", "--videos", "300"])
    assert result.exit_code == 0, result.output
    for name in MODELS:
        assert name in result.output
    assert "NDCG@20" in result.output and "goal" in result.output
    assert "watch" in result.output  # the ground-truth columns of a simulated platform


@pytest.mark.parametrize("args", [[], ["--simulate", "--log", "x"]])
def test_eval_needs_exactly_one_source(args, tmp_path):
    result = runner.invoke(app, ["eval", *args])
    assert result.exit_code == 2


def test_simulated_platform_options_need_a_simulated_platform(tmp_path):
    log = tmp_path / "u.data"
    log.write_text("1\t1\t5\t1700000000\n")
    result = runner.invoke(app, ["eval", "--log", str(log), "--media-signal", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "--simulate" in result.output


def test_eval_reports_a_missing_or_empty_log_clearly(tmp_path):
    result = runner.invoke(app, ["eval", "--log", str(tmp_path / "missing.data")])
    assert result.exit_code == 2 and "no interaction log" in result.output
    empty = tmp_path / "empty.data"
    empty.write_text("")
    result = runner.invoke(app, ["eval", "--log", str(empty)])
    assert result.exit_code == 2 and "empty" in result.output
