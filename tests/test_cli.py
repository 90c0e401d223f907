"""The command line reports a bad configuration by name, whatever the command."""

from typer.testing import CliRunner

from clipfeed.cli import app


def test_a_bad_setting_is_named_instead_of_a_traceback(tmp_path):
    runner = CliRunner(env={"CLIPFEED_DATA_DIR": str(tmp_path), "CLIPFEED_FEED_RANKER_LABELS": "clicks",
                            "CLIPFEED_FEED_TRAINING_HOLDOUT": "a fifth", "COLUMNS": "200"})
    for command in (["train"], ["model", "list"], ["migrate"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert "invalid configuration" in result.output
        assert "CLIPFEED_FEED_RANKER_LABELS" in result.output and "'outcome' or 'future'" in result.output
        assert "CLIPFEED_FEED_TRAINING_HOLDOUT" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "clipfeed.sqlite3").exists()  # nothing ran


def test_a_good_configuration_runs_the_command(tmp_path):
    runner = CliRunner(env={"CLIPFEED_DATA_DIR": str(tmp_path), "CLIPFEED_FEED_RANKER_LABELS": "future"})
    result = runner.invoke(app, ["model", "list"])
    assert result.exit_code == 0, result.output
    assert "models" in result.output
