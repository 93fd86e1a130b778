"""CLI tests for the store commands (info, sql, verify) through typer's CliRunner."""

import json

import pyarrow as pa
from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.schema import RATINGS

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
