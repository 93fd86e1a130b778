"""`bonmf-pipe train` through typer's CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.trainer import list_runs

runner = CliRunner()


def test_train_command_trains_and_prints_the_run(small_store):
    args = ["train", "--store", str(small_store.root), "--model", "svd", "--epochs", "3", "--batch-size", "128"]
    result = runner.invoke(app, [*args, "--name", "cli-svd"])
    assert result.exit_code == 0, result.output
    runs = list_runs(small_store)
    assert len(runs) == 1 and runs[0]["effective"]["model"] == "svd" and runs[0]["settings"]["epochs"] == 3
    assert runs[0]["run_id"] in result.output and "cli-svd" in runs[0]["run_id"]
    assert "valid RMSE" in result.output


def test_train_command_with_text_only_paper_network(small_store):
    args = ["train", "--store", str(small_store.root), "--features", "text", "--paper", "--epochs", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = list_runs(small_store)
    assert run["effective"]["features"] == ["text"] and run["effective"]["paper"] is True
    assert list(run["features"]) == ["text"]


def test_train_command_reports_bad_options_in_red_and_exits_1(small_store):
    result = runner.invoke(app, ["train", "--store", str(small_store.root), "--model", "lightgcn"])
    assert result.exit_code == 1
    assert "--model" in result.output
    result = runner.invoke(app, ["train", "--store", str(small_store.root), "--resume", "nope"])
    assert result.exit_code == 1 and "is not a run" in result.output
