"""The evaluate, recommend and ablate commands through typer's CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.trainer import read_run_config, split_dataset
from tests.evaluation.conftest import build_cold_store

runner = CliRunner()


def test_evaluate_latest(trained):
    store, run_id = trained
    out = runner.invoke(app, ["evaluate", "latest", "--store", str(store.root), "-k", "5", "--max-users", "20"])
    assert out.exit_code == 0, out.output
    assert run_id in out.output and "RMSE" in out.output and "full_catalogue" in out.output
    assert "@5" in out.output and "@10" not in out.output


def test_recommend_command(trained):
    store, run_id = trained
    user = split_dataset(store, read_run_config(store, run_id)["split_id"]).head(1).column("user_id")[0].as_py()
    out = runner.invoke(app, ["recommend", "--run", run_id[:20], "--user", str(user), "-k", "3", "--store", str(store.root)])
    assert out.exit_code == 0, out.output
    assert "movie " in out.output and f"top 3 for user {user}" in out.output
    bad = runner.invoke(app, ["recommend", "--run", run_id, "--user", "424242", "--store", str(store.root)])
    assert bad.exit_code == 1 and "no training ratings" in bad.output


def test_ablate_command(tmp_path):
    store = build_cold_store(tmp_path / "store")
    out = runner.invoke(
        app,
        ["ablate", "--features", "text", "--no-baselines", "--epochs", "1", "--device", "cpu", "--seed", "1",
         "--store", str(store.root)],
    )
    assert out.exit_code == 0, out.output
    assert "bonmf" in out.output and "text" in out.output and "results.png" in out.output
    assert len(list((store.root / "ablations").iterdir())) == 1
    bad = runner.invoke(app, ["ablate", "--features", "smell", "--store", str(store.root)])
    assert bad.exit_code == 1 and "smell" in bad.output
