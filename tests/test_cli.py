"""CLI tests through typer's CliRunner: the store commands, the defaults, piped output."""

import dataclasses
import importlib
import json
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.schema import RATINGS
from bonmf_pipe.evaluation import EvalSettings
from bonmf_pipe.pipeline.ablate import AblateSettings
from bonmf_pipe.pipeline.demo import DemoSettings
from bonmf_pipe.pipeline.encode import EncodeSettings
from bonmf_pipe.pipeline.features_import import ImportSettings
from bonmf_pipe.pipeline.ingest import IngestSettings
from bonmf_pipe.pipeline.sample import SampleSettings
from bonmf_pipe.pipeline.tune import TuneSettings
from bonmf_pipe.trainer import TrainSettings

runner = CliRunner()


def _store(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    table = pa.table(
        {"user_id": [1, 1, 2], "item_id": [10, 11, 10], "rating": [4.0, 3.5, 5.0], "timestamp": [1, 2, 3]},
        schema=RATINGS,
    )
    with store.writer("ratings", RATINGS) as w:
        w.write(table)
        w.commit()
    return store


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("info", "sql", "verify"):
        assert command in result.output


def test_sql_formats(tmp_path):
    store = _store(tmp_path)
    args = ["sql", "SELECT item_id, avg(rating) AS r FROM ratings GROUP BY 1 ORDER BY 1", "--store", str(store.root)]
    out = runner.invoke(app, args + ["--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == [{"item_id": 10, "r": 4.5}, {"item_id": 11, "r": 3.5}]
    out = runner.invoke(app, args + ["--format", "csv"])
    assert out.stdout.splitlines() == ['"item_id","r"', "10,4.5", "11,3.5"]
    target = tmp_path / "r.parquet"
    out = runner.invoke(app, args + ["--format", "parquet", "--output", str(target)])
    assert out.exit_code == 0 and target.exists()


def test_sql_errors_are_readable_and_exit_1(tmp_path):
    store = _store(tmp_path)
    out = runner.invoke(app, ["sql", "DELETE FROM ratings", "--store", str(store.root)])
    assert out.exit_code == 1 and "read-only" in out.output and "Traceback" not in out.output
    out = runner.invoke(app, ["sql", "SELEC 1", "--store", str(store.root)])
    assert out.exit_code == 1 and "SQL error" in out.output


def test_info_and_verify(tmp_path):
    store = _store(tmp_path)
    out = runner.invoke(app, ["info", "--store", str(store.root)])
    assert out.exit_code == 0 and "ratings" in out.output and "schema version 1" in out.output
    out = runner.invoke(app, ["verify", "--store", str(store.root)])
    assert out.exit_code == 0 and "ok" in out.output
    store.table_files("ratings")[0].write_bytes(b"garbage")
    out = runner.invoke(app, ["verify", "--store", str(store.root)])
    assert out.exit_code == 1 and "checksum" in out.output


def test_missing_store_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("BONMF_STORE", str(tmp_path / "none"))
    out = runner.invoke(app, ["info"])
    assert out.exit_code == 1 and "No bonmf-pipe store" in out.output


# -- one source of every default: each command's options default to its settings dataclass ---


class _Called(BaseException):
    """Raised by a stand-in library function once it has seen the settings the CLI built."""


def _capture(monkeypatch, module: str, name: str) -> list:
    seen: list = []

    def stand_in(*args, **kwargs):
        seen.extend(a for a in (*args, *kwargs.values()) if dataclasses.is_dataclass(a) and not isinstance(a, type))
        raise _Called

    monkeypatch.setattr(importlib.import_module(module), name, stand_in)
    return seen


DEFAULT_CASES = [
    (["sample"], "bonmf_pipe.pipeline.sample", "write_sample", lambda: SampleSettings()),
    (["ingest", "--path", "x"], "bonmf_pipe.pipeline.ingest", "ingest", lambda: IngestSettings(path=Path("x"))),
    (["encode"], "bonmf_pipe.pipeline.encode", "encode", lambda: EncodeSettings()),
    (["train"], "bonmf_pipe.pipeline.train", "train_and_evaluate", lambda: TrainSettings()),
    (["evaluate"], "bonmf_pipe.evaluation", "evaluate_run", lambda: EvalSettings()),
    (["ablate"], "bonmf_pipe.pipeline.ablate", "ablate", lambda: AblateSettings()),
    (["tune"], "bonmf_pipe.pipeline.tune", "tune", lambda: TuneSettings()),
    (["demo"], "bonmf_pipe.pipeline.demo", "run_demo", lambda: DemoSettings()),
    (["features", "import", "x.parquet", "--name", "mine"], "bonmf_pipe.pipeline.features_import", "import_features",
     lambda: ImportSettings(path=Path("x.parquet"), name="mine")),
]


@pytest.mark.parametrize("argv, module, name, expected", DEFAULT_CASES, ids=[c[0][0] for c in DEFAULT_CASES])
def test_cli_defaults_equal_the_settings_defaults(tmp_path, monkeypatch, argv, module, name, expected):
    """A command run without options builds exactly its settings dataclass's defaults, so the
    CLI, the library, the demo, the benchmarks and the tests train the same configuration."""
    monkeypatch.chdir(tmp_path)
    Store.open(tmp_path / "bonmf-store", create=True)
    (tmp_path / "x").mkdir()
    seen = _capture(monkeypatch, module, name)
    with pytest.raises(_Called):
        runner.invoke(app, argv, catch_exceptions=False)
    assert seen and seen[0] == expected()


def test_output_that_is_not_a_terminal_is_not_cut(tmp_path):
    """Piped output (CliRunner is not a terminal) prints tables in full and progress as log lines."""
    from bonmf_pipe.render import LogProgress, console

    assert not console.is_terminal and console.width >= 200
    store = _store(tmp_path)
    long = "x" * 150
    out = runner.invoke(app, ["sql", f"SELECT '{long}' AS wide_column, 0.7412345 AS v", "--store", str(store.root)])
    assert long in out.stdout and "0.741234" in out.stdout and "…" not in out.stdout

    lines = []
    clock = iter([0.0, 5.0, 11.0, 12.0, 30.0]).__next__
    progress = LogProgress(type("C", (), {"print": lambda self, text, **kw: lines.append(text)})(), 10.0, clock)
    from bonmf_pipe.progress import ProgressEvent

    for event in (ProgressEvent("begin", "epoch 1", total=100, unit="ratings"), ProgressEvent("advance", "epoch 1", advance=10),
                  ProgressEvent("advance", "epoch 1", advance=40), ProgressEvent("advance", "epoch 1", advance=50),
                  ProgressEvent("end", "epoch 1")):
        progress(event)
    assert lines[0] == "epoch 1: started (100 ratings)"
    assert lines[1].startswith("epoch 1: 50/100 ratings")  # at most one line per interval
    assert lines[-1].startswith("epoch 1: done, 100 ratings in 30.0 s") and len(lines) == 3


def test_tune_then_train_with_the_best_params(tmp_path):
    """tune on the validation slice, then train --params best: the run trains with the best
    trial's settings except what the command line says, and records where they came from."""
    from tests.trainer.conftest import build_store

    store = build_store(tmp_path / "s", n_users=40, n_items=30, per_user=15)
    common = ["--model", "svd", "--epochs", "3", "--device", "cpu", "--store", str(store.root)]
    out = runner.invoke(app, ["tune", "--trials", "2", *common])
    assert out.exit_code == 0, out.output
    assert "study svd-random0.7-s42" in out.output and "next: bonmf-pipe train --params best:svd-random0.7-s42" in out.output
    best = json.loads(runner.invoke(app, ["sql", "SELECT params FROM tuning WHERE is_best", "-f", "json",
                                          "--store", str(store.root)]).stdout)[0]["params"]
    out = runner.invoke(app, ["train", "--params", "best", "--lr", "0.002", *common])
    assert out.exit_code == 0, out.output
    run = json.loads(runner.invoke(app, ["sql", "SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1", "-f", "json",
                                         "--store", str(store.root)]).stdout)[0]["run_id"]
    config = json.loads((store.root / "runs" / run / "config.json").read_text())
    recorded = json.loads((store.root / "runs" / run / "params.json").read_text())
    assert "lr" in json.loads(best)  # the command line's --lr wins over the study's
    for name, value in json.loads(best).items():
        assert config["settings"][name] == (2e-3 if name == "lr" else value)
    assert recorded["source"] == "study" and recorded["study"] == "svd-random0.7-s42"
