"""Snapshots, writer locks, vacuum and verify's reference checks, on tiny stores in tmp."""

import json
import threading

import pyarrow as pa
import pytest

from bonmf_pipe.errors import StoreError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.lock import store_lock
from bonmf_pipe.featurestore.manifest import Manifest, ShardEntry, write_manifest
from bonmf_pipe.featurestore.schema import RATINGS
from bonmf_pipe.featurestore.store import parquet_metadata
from bonmf_pipe.featurestore.verify import verify_store
from bonmf_pipe.featurestore.views import all_views
from bonmf_pipe.progress import ProgressEvent

IDS = pa.schema([pa.field("item_id", pa.int64(), nullable=False)])
USER_IDS = pa.schema([pa.field("user_id", pa.int64(), nullable=False)])


def _ratings(users, items):
    n = len(users)
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "item_id": pa.array(items, pa.int64()),
            "rating": pa.array([3.0] * n, pa.float32()),
            "timestamp": pa.array(range(n), pa.int64()),
        }
    )


def _dataset(store, items, users, ratings):
    """items, users and ratings written as one commit."""
    writers = []
    for name, schema, table in (
        ("items", IDS, pa.table({"item_id": pa.array(items, pa.int64())})),
        ("users", USER_IDS, pa.table({"user_id": pa.array(users, pa.int64())})),
        ("ratings", RATINGS, ratings),
    ):
        w = store.writer(name, schema)
        w.write(table)
        writers.append(w)
    return store.commit(writers, operation="test")


def test_a_commit_of_several_tables_is_all_or_nothing(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    _dataset(store, [1, 2], [10], _ratings([10, 10], [1, 2]))
    assert store.snapshot.version == 1 and sorted(store.snapshot.tables) == ["items", "ratings", "users"]
    items = store.writer("items", IDS)
    items.write(pa.table({"item_id": pa.array([7], pa.int64())}))
    broken = store.writer("ratings", RATINGS)
    broken.write(_ratings([10], [7]))
    broken._close_current = lambda: (_ for _ in ()).throw(OSError("disk full"))  # fails while finishing
    with pytest.raises(OSError, match="disk full"):
        store.commit([items, broken])
    items.abort()
    broken.abort()
    fresh = Store.open(store.root)
    assert fresh.snapshot.version == 1
    assert fresh.read_table("items").column(0).to_pylist() == [1, 2]
    assert verify_store(fresh).ok


def _pinned_reader(tmp_path) -> tuple[Store, Store]:
    """A writer that committed two datasets, and a reader that read (and so pinned) the first."""
    writer = Store.open(tmp_path / "s", create=True)
    _dataset(writer, [1, 2], [10], _ratings([10, 10], [1, 2]))
    reader = Store.open(writer.root)
    assert reader.read_table("ratings").num_rows == 2  # pins snapshot 1
    _dataset(writer, [1, 2, 3], [10, 11], _ratings([10, 11, 11], [1, 2, 3]))
    return writer, reader


def test_a_reader_keeps_its_snapshot_and_its_files(tmp_path):
    writer, reader = _pinned_reader(tmp_path)
    assert reader.snapshot.version == 1 and reader.read_table("ratings").num_rows == 2
    assert all_views(reader)["ratings"] != all_views(Store.open(writer.root))["ratings"]
    assert reader.refresh().version == 2 and reader.read_table("ratings").num_rows == 3


def test_vacuum_keeps_a_snapshot_that_a_reader_pins(tmp_path):
    writer, reader = _pinned_reader(tmp_path)
    report = writer.vacuum()
    assert report.kept_snapshots == (1, 2) and report.generations_removed == 0
    assert reader.read_table("ratings").num_rows == 2  # its files are all there
    reader.close()
    report = writer.vacuum()
    assert report.kept_snapshots == (2,) and report.generations_removed == 3
    assert reader.read_table("ratings").num_rows == 3  # the next read pins the newest
    assert verify_store(reader).problems == ()


def test_a_store_without_snapshots_reads_as_snapshot_0_and_migrates(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    folder = store.table_dir("ratings")
    gen = folder / "gen-legacy"
    gen.mkdir(parents=True)
    import pyarrow.parquet as pq

    table = _ratings([1, 2], [5, 6])
    pq.write_table(table.replace_schema_metadata(parquet_metadata("ratings", {})), gen / "part-00000.parquet")
    write_manifest(folder, Manifest("ratings", "table", (ShardEntry.of(folder, gen / "part-00000.parquet", 2),)))
    legacy = Store.open(store.root)
    assert legacy.snapshot.version == 0 and legacy.read_table("ratings").num_rows == 2
    assert verify_store(legacy).ok
    w = legacy.writer("ratings", RATINGS)
    w.write(_ratings([1], [5]))
    w.commit()
    assert Store.open(store.root).snapshot.version == 1 and Store.open(store.root).read_table("ratings").num_rows == 1
    report = legacy.vacuum()
    assert report.generations_removed == 1 and not (folder / "manifest.json").exists() and not gen.exists()
    assert verify_store(legacy).problems == ()


def test_a_busy_lock_fails_with_no_wait_and_is_waited_for_otherwise(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    busy = Store.open(store.root, no_wait=True)
    notes: list[ProgressEvent] = []
    released = threading.Event()
    with store_lock(store.root, "tables", what="ingest elsewhere"):
        with pytest.raises(StoreError, match=r"busy: process \d+ \(ingest elsewhere.*--no-wait"):
            with busy.lock("tables"):
                pass
        timer = threading.Timer(0.3, released.set)
        timer.start()

        def take():
            with store.lock("tables", progress=notes.append):
                assert released.is_set()  # only after the holder let go

        waiter = threading.Thread(target=take)
        waiter.start()
        released.wait()
    waiter.join(10)
    assert not waiter.is_alive()
    assert any("waiting for process" in e.message and "'tables'" in e.message for e in notes)


def test_vacuum_waits_for_writers_and_keeps_what_snapshots_use(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    for n in (1, 2, 3):
        with store.writer("ratings", RATINGS) as w:
            w.write(_ratings(list(range(n)), list(range(n))))
            w.commit()
    pending = store.writer("ratings", RATINGS)  # uncommitted, still being written
    with pytest.raises(StoreError, match="'writers' lock"):
        Store.open(store.root, no_wait=True).vacuum()
    pending.write(_ratings([9], [9]))
    pending.release()  # a writer that stopped without committing: its generation is garbage
    report = store.vacuum(keep=2)
    assert report.kept_snapshots == (2, 3) and report.snapshots_removed == 1
    assert report.generations_removed == 2  # the first commit's and the abandoned one
    older = Store(store.root)
    older._snapshot = older.snapshot.__class__(**{**json.loads((store.root / "snapshots" / "00000002.json").read_text())})
    assert older.read_table("ratings").num_rows == 2  # a kept older snapshot is still readable
    assert store.read_table("ratings").num_rows == 3 and verify_store(store).problems == ()


def test_verify_reports_rows_that_reference_unknown_items_and_users(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    _dataset(store, [1, 2], [10], _ratings([10, 10, 11, 12], [1, 3, 3, 3]))
    report = verify_store(store)
    assert not report.ok and report.references == 2
    reasons = {p.reason for p in report.problems}
    assert any("3 rows reference 1 item_id values that are not in items (e.g. 3)" in r for r in reasons)
    assert any("2 rows reference 2 user_id values that are not in users" in r for r in reasons)
    assert all("bonmf-pipe ingest" in r for r in reasons)


def test_verify_reports_feature_rows_of_unknown_items(tmp_path):
    from tests.trainer.conftest import write_feature_set

    import numpy as np

    store = Store.open(tmp_path / "s", create=True)
    _dataset(store, [1, 2], [10], _ratings([10], [1]))
    write_feature_set(store, "text", "k" * 16, [1, 2, 5], ["a", "b", "c"], np.ones((3, 4), np.float32), shards=1)
    folder = f"features/text/{'k' * 16}"
    report = verify_store(store)
    assert not report.ok
    assert any(p.path == folder and "1 rows reference 1 item_id values that are not in items (e.g. 5)" in p.reason
               and "bonmf-pipe encode" in p.reason for p in report.problems)


def test_verify_reports_a_broken_current_pointer_and_foreign_folders(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    _dataset(store, [1], [10], _ratings([10], [1]))
    (store.table_dir("stray") / "gen-x").mkdir(parents=True)
    report = verify_store(store)
    assert report.ok and [p.path for p in report.problems] == ["tables/stray"]
    (store.root / "CURRENT").write_text("00000009.json\n")
    report = verify_store(store)
    assert not report.ok and "snapshot cannot be read" in report.problems[0].reason
    with pytest.raises(StoreError, match="00000009.json"):
        Store.open(store.root).read_table("items")
