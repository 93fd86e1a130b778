import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bonmf_pipe.errors import QueryError, StoreError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.schema import RATINGS
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.featurestore.verify import verify_store


def _ratings(n, offset=0):
    return pa.table(
        {
            "user_id": pa.array(range(offset, offset + n), pa.int64()),
            "item_id": pa.array([i % 7 for i in range(n)], pa.int64()),
            "rating": pa.array([float(i % 5 + 1) for i in range(n)], pa.float32()),
            "timestamp": pa.array(range(n), pa.int64()),
        }
    )


def test_open_missing_store_says_how_to_fix(tmp_path):
    with pytest.raises(StoreError, match="bonmf-pipe ingest"):
        Store.open(tmp_path / "nope")


def test_writer_rolls_shards_and_bounds_row_groups(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    with store.writer("ratings", RATINGS, {"a": 1}, rows_per_file=250, row_group_size=100) as w:
        w.write(_ratings(600))
        m = w.commit()
    assert [f.rows for f in m.files] == [250, 250, 100]
    first = store.table_files("ratings")[0]
    meta = pq.read_metadata(first)
    assert meta.num_row_groups == 3 and meta.row_group(0).num_rows == 100
    assert json.loads(meta.metadata[b"bonmf.settings"]) == {"a": 1}
    assert store.read_table("ratings").num_rows == 600


def test_replacing_a_table_keeps_old_version_until_commit(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    with store.writer("ratings", RATINGS) as w:
        w.write(_ratings(10))
        w.commit()
    w2 = store.writer("ratings", RATINGS)
    w2.write(_ratings(20, offset=100))
    # not committed: readers still see the old 10 rows
    assert store.read_table("ratings").num_rows == 10
    assert verify_store(store).ok
    w2.commit()
    assert store.read_table("ratings").num_rows == 20
    # the old generation stays for readers of the older snapshot until vacuum removes it
    assert len([p for p in store.table_dir("ratings").iterdir() if p.is_dir()]) == 2
    report = store.vacuum()
    assert report.generations_removed == 1 and report.snapshots_removed == 1
    assert len([p for p in store.table_dir("ratings").iterdir() if p.is_dir()]) == 1
    assert store.read_table("ratings").num_rows == 20 and verify_store(store).problems == ()


def test_sql_views_and_read_only_guard(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    with store.writer("ratings", RATINGS) as w:
        w.write(_ratings(10))
        w.commit()
    assert query(store, "SELECT count(*) AS n FROM ratings").to_pylist() == [{"n": 10}]
    for bad in (
        "CREATE TABLE x AS SELECT 1",
        "COPY ratings TO 'x.csv'",
        "INSERT INTO ratings VALUES (1,1,1,1)",
        "ATTACH 'x.db'",
        "SELECT 1; DROP VIEW ratings",
    ):
        with pytest.raises(QueryError, match="read-only"):
            query(store, bad)
    with pytest.raises(QueryError, match="Views in this store: ratings"):
        query(store, "SELECT * FROM nosuchtable")


def test_verify_detects_corruption(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    with store.writer("ratings", RATINGS) as w:
        w.write(_ratings(10))
        w.commit()
    assert verify_store(store).ok
    path = store.table_files("ratings")[0]
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    report = verify_store(store)
    assert not report.ok and "checksum" in report.problems[0].reason


def test_empty_table_is_queryable(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    with store.writer("ratings", RATINGS) as w:
        m = w.commit()
    assert m.rows == 0 and len(m.files) == 1
    assert store.read_table("ratings").schema.names == RATINGS.names
    assert query(store, "SELECT count(*) AS n FROM ratings").to_pylist() == [{"n": 0}]
    assert verify_store(store).ok
