"""`bonmf-pipe train` through typer's CliRunner."""

from __future__ import annotations

import pyarrow.parquet as pq
from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.trainer import list_runs, read_run_config, run_dir

runner = CliRunner()


def test_train_command_trains_and_prints_the_run(small_store):
    args = ["train", "--store", str(small_store.root), "--model", "svd", "--epochs", "3", "--batch-size", "128"]
    result = runner.invoke(app, [*args, "--name", "cli-svd"])
    assert result.exit_code == 0, result.output
    runs = list_runs(small_store)
    assert len(runs) == 1 and runs[0]["effective"]["model"] == "svd" and runs[0]["settings"]["epochs"] == 3
    assert runs[0]["run_id"] in result.output and "cli-svd" in runs[0]["run_id"]
    assert "valid RMSE" in result.output


def test_train_command_with_text_only_paper_network_trains_the_epochs_asked_for(small_store):
    # --paper used to reset --epochs 30 to the paper's 10 (it compared with the class default)
    args = ["train", "--store", str(small_store.root), "--features", "text", "--paper", "--epochs", "30"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = list_runs(small_store)
    assert run["effective"]["features"] == ["text"] and run["effective"]["paper"] is True
    assert list(run["features"]) == ["text"]
    assert run["effective"]["epochs"] == 30 and run["epochs_run"] == 30
    assert pq.read_metadata(run_dir(small_store, run["run_id"]) / "epochs.parquet").num_rows == 30


def test_a_diverging_train_exits_1_and_the_run_is_marked_failed(small_store):
    args = ["train", "--store", str(small_store.root), "--model", "svd", "--epochs", "2", "--lr", "1e12"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "diverged" in result.output and "Traceback" not in result.output
    (run,) = list_runs(small_store)
    assert run["status"] == "failed" and "diverged" in run["error"]


def test_resume_refuses_options_that_contradict_the_run(small_store):
    base = ["train", "--store", str(small_store.root)]
    assert runner.invoke(app, [*base, "--model", "nmf", "--epochs", "2"]).exit_code == 0
    (run,) = list_runs(small_store)
    result = runner.invoke(app, [*base, "--resume", run["run_id"], "--epochs", "8", "--model", "svd", "--seed", "99"])
    assert result.exit_code == 1, result.output
    for what in ("model", "seed", "epochs"):
        assert what in result.output
    assert read_run_config(small_store, run["run_id"])["effective"]["epochs"] == 2


def test_train_command_reports_bad_options_in_red_and_exits_1(small_store):
    result = runner.invoke(app, ["train", "--store", str(small_store.root), "--model", "lightgcn"])
    assert result.exit_code == 1
    assert "--model" in result.output
    result = runner.invoke(app, ["train", "--store", str(small_store.root), "--resume", "nope"])
    assert result.exit_code == 1 and "is not a run" in result.output
