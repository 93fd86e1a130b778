"""The ingest command through CliRunner, and an ingest killed before it commits."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.verify import verify_store
from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

from . import editions

runner = CliRunner()
TABLES = ("items", "users", "ratings", "tags", "rejects")

# Runs an ingest whose commit is held: it touches a marker file, then waits to be killed.
HELD_INGEST = """
import pathlib, sys, time
from bonmf_pipe.featurestore import Store
from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

def held(self, writers, operation="commit"):
    pathlib.Path(sys.argv[3]).touch()
    time.sleep(60)

Store.commit = held
ingest(Store.open(sys.argv[1]), IngestSettings(path=sys.argv[2]))
"""


def test_cli_ingest_prints_the_summary(tmp_path):
    folder = editions.ml_csv(tmp_path)
    result = runner.invoke(app, ["ingest", "--path", str(folder), "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "ml-latest-small" in out and "ratings.csv" in out
    assert "6 items, 4 users, 5 ratings, 4 tag applications" in out
    assert "duplicate" in out and "out_of_scale" in out and "malformed" in out
    assert Store.open(tmp_path / "store").manifest("ratings").rows == 5


def test_cli_ingest_without_ratings_says_so(tmp_path):
    folder = editions.ml_1m(tmp_path, with_ratings=False)
    result = runner.invoke(app, ["ingest", "--path", str(folder), "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    assert "no ratings (the edition has no ratings file)" in result.stdout
    assert "ratings are absent" in result.stderr


def test_cli_missing_folder_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["ingest", "--path", str(tmp_path / "nope"), "--store", str(tmp_path / "store")])
    assert result.exit_code == 1
    assert "no such folder" in result.stderr and "--path" in result.stderr
    bad = runner.invoke(app, ["ingest", "--path", str(tmp_path), "--dataset", "ml-2m", "--store", str(tmp_path / "s")])
    assert bad.exit_code == 1 and "--dataset 'ml-2m' is not one of" in bad.stderr
    folder = editions.ml_csv(tmp_path)
    no_posters = runner.invoke(app, ["ingest", "--path", str(folder), "--posters", str(tmp_path / "none"),
                                     "--store", str(tmp_path / "store")])
    assert no_posters.exit_code == 1 and "no such poster folder" in no_posters.stderr
    assert not Store.open(tmp_path / "store").has_table("items")  # nothing was committed


def test_killed_ingest_leaves_the_previous_tables(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    ingest(store, IngestSettings(path=editions.ml_csv(tmp_path)))
    before = {name: store.read_table(name) for name in TABLES}
    marker = tmp_path / "written"
    newer = editions.ml_10m(tmp_path)
    cmd = [sys.executable, "-c", HELD_INGEST, str(store.root), str(newer), str(marker)]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).parents[3], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the ingest never reached its commit"
            time.sleep(0.05)
        # Every new generation is written but not committed: kill it now.
        assert all(len([d for d in store.table_dir(n).iterdir() if d.is_dir()]) == 2 for n in TABLES)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    for name, table in before.items():
        assert Store.open(store.root).read_table(name).equals(table), name
    report = verify_store(store)
    assert report.ok and report.problems  # the orphaned generations show as warnings only
    assert all(p.severity == "warning" and "vacuum" in p.reason for p in report.problems)
    assert list((store.root / "tmp").glob("ingest-*"))  # its scratch folder was left behind
    # The next ingest commits and removes the stale scratch; vacuum removes the orphans.
    summary = ingest(store, IngestSettings(path=newer))
    assert summary.edition == "ml-10m" and store.manifest("ratings").rows == 3
    assert not (store.root / "tmp").exists()
    vacuumed = store.vacuum()
    assert vacuumed.generations_removed == 2 * len(TABLES)  # the killed one's and the first ingest's
    assert verify_store(store).problems == ()
