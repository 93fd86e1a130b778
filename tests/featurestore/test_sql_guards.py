"""`bonmf-pipe sql` cannot write, reach out or crash (issue 10 rows 1, 2, 10, 12, 15).

Each repro runs through the library and through the CLI; afterwards the store must be
intact: verify passes, the row counts and every store file's bytes are unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest
from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.errors import QueryError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.sql import csv_bytes, query, read_only_statements, write_result
from bonmf_pipe.featurestore.verify import verify_store
from bonmf_pipe.pipeline.ingest import IngestSettings, ingest
from tests.pipeline.ingest import editions

runner = CliRunner()
COUNTS = "SELECT (SELECT count(*) FROM items) AS items, (SELECT count(*) FROM ratings) AS ratings"


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    ingest(store, IngestSettings(path=editions.ml_csv(tmp_path)))
    return store


def _fingerprint(store: Store) -> dict[str, str]:
    """Every store file's hash, lock files aside (a writer notes itself in them)."""
    return {
        str(p.relative_to(store.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.root.rglob("*")) if p.is_file() and p.relative_to(store.root).parts[0] != "locks"
    }


def _shard(store: Store, table: str):
    return store.table_files(table)[0]


def _assert_intact(store: Store, before: dict[str, str], counts: list[dict]) -> None:
    assert _fingerprint(store) == before
    assert verify_store(store).ok
    assert query(store, COUNTS).to_pylist() == counts


def _sql(store: Store, *args: str):
    return runner.invoke(app, ["sql", *args, "--store", str(store.root)])


def _writing_queries(store: Store, outside) -> list[str]:
    ratings, items = _shard(store, "ratings"), _shard(store, "items")
    return [
        # row 1: EXPLAIN ANALYZE runs what it explains
        f"EXPLAIN ANALYZE COPY (SELECT 1 AS user_id) TO '{ratings}' (FORMAT parquet)",
        f"explain analyze copy (select 1 as user_id) to '{ratings}' (format parquet, use_tmp_file false)",
        f"/* a comment */ EXPLAIN (ANALYZE, FORMAT json) COPY (SELECT 1) TO '{items}' (FORMAT parquet)",
        "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
        "EXPLAIN ANALYZE SET memory_limit = '1GB'",
        "EXPLAIN ANALYZE INSTALL httpfs",
        # plain writes and configuration changes
        f"COPY (SELECT 1 AS user_id) TO '{ratings}' (FORMAT parquet, USE_TMP_FILE false)",
        f"COPY items TO '{outside}'",
        f"ATTACH '{store.root / 'x.duckdb'}'",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "INSTALL httpfs",
        "LOAD httpfs",
        "PRAGMA enable_profiling",
        "CALL checkpoint()",
        "SELECT 1; DROP VIEW ratings",
        "CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')",
    ]


def test_writing_statements_are_refused_and_the_store_is_intact(store, tmp_path):
    before, counts = _fingerprint(store), query(store, COUNTS).to_pylist()
    outside = tmp_path / "elsewhere.csv"
    bad = _writing_queries(store, outside)
    for sql in bad:
        with pytest.raises(QueryError, match="read-only"):
            query(store, sql)
        out = _sql(store, sql)
        assert out.exit_code == 1 and "read-only" in out.stderr and "Traceback" not in out.output, sql
    assert not outside.exists() and not (store.root / "x.duckdb").exists()
    _assert_intact(store, before, counts)
    assert counts == [{"items": 6, "ratings": 5}]


def test_duckdb_itself_keeps_the_connection_inside_the_store(store, tmp_path):
    """The statement check aside, DuckDB's own guards refuse files, URLs and extensions."""
    (tmp_path / "other.csv").write_text("a\n1\n")
    for sql in (
        f"SELECT * FROM read_csv('{tmp_path / 'other.csv'}')",
        "SELECT * FROM read_parquet('https://example.org/x.parquet')",
        f"SELECT * FROM glob('{tmp_path}/*')",
        "SELECT * FROM read_text('/etc/hostname')",
    ):
        with pytest.raises(QueryError, match="reads only the store's own files"):
            query(store, sql)
    settings = query(store, "SELECT name, value FROM duckdb_settings() WHERE name IN "
                     "('enable_external_access', 'lock_configuration', 'autoinstall_known_extensions', "
                     "'autoload_known_extensions')").to_pylist()
    assert {r["name"]: r["value"] for r in settings} == {
        "enable_external_access": "false", "lock_configuration": "true",
        "autoinstall_known_extensions": "false", "autoload_known_extensions": "false",
    }
    # The store's own files stay readable, directly too.
    direct = query(store, f"SELECT count(*) AS n FROM read_parquet('{_shard(store, 'ratings')}')")
    assert direct.to_pylist() == [{"n": 5}]


def test_explain_of_a_select_runs(store):
    plan = query(store, "EXPLAIN ANALYZE SELECT count(*) FROM ratings")
    assert plan.num_rows == 1 and "analyzed_plan" in plan.column(0).to_pylist()
    assert query(store, "EXPLAIN SELECT * FROM items").num_rows >= 1
    assert read_only_statements("DESCRIBE items; SUMMARIZE ratings; FROM users") == [
        "DESCRIBE items;", " SUMMARIZE ratings;", " FROM users"
    ]


def test_several_statements_run_in_turn_and_the_last_is_returned(store):
    # row 15: used to fail with "Resource In Use Error"
    assert query(store, "SELECT 1 AS a; SELECT 2 AS b").to_pylist() == [{"b": 2}]
    assert query(store, "SELECT count(*) AS n FROM items; SELECT count(*) AS n FROM ratings;").to_pylist() == [
        {"n": 5}
    ]
    out = _sql(store, "SELECT 1 AS a; SELECT 2 AS b", "--format", "json")
    assert out.exit_code == 0 and json.loads(out.stdout) == [{"b": 2}]
    with pytest.raises(QueryError, match="empty"):
        query(store, " ; ")


@pytest.mark.parametrize("target", ["ratings shard", "items shard", "store.json", "new file in the store"])
def test_output_inside_the_store_is_refused(store, target):
    # row 2: `--output` used to overwrite the store's own files
    path = {
        "ratings shard": _shard(store, "ratings"),
        "items shard": _shard(store, "items"),
        "store.json": store.root / "store.json",
        "new file in the store": store.root / "tables" / "result.parquet",
    }[target]
    before, counts = _fingerprint(store), query(store, COUNTS).to_pylist()
    with pytest.raises(QueryError, match="inside the store"):
        query(store, "SELECT 1 AS x", output=path)
    for fmt in ("parquet", "json", "csv"):
        out = _sql(store, "SELECT * FROM items LIMIT 1", "--format", fmt, "--output", str(path))
        assert out.exit_code == 1 and "inside the store" in out.stderr and "Traceback" not in out.output
    _assert_intact(store, before, counts)
    assert runner.invoke(app, ["info", "--store", str(store.root)]).exit_code == 0


def test_output_through_a_symlink_into_the_store_is_refused(store, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(store.table_dir("ratings"))
    before = _fingerprint(store)
    out = _sql(store, "SELECT 1 AS x", "--format", "parquet", "--output", str(link / "part.parquet"))
    assert out.exit_code == 1 and "inside the store" in out.stderr
    assert _fingerprint(store) == before


def test_output_to_a_folder_or_a_missing_folder_is_a_clear_error(store, tmp_path):
    out = _sql(store, "SELECT 1 AS x", "--format", "csv", "--output", str(tmp_path))
    assert out.exit_code == 1 and "is a folder" in out.stderr and "Traceback" not in out.output
    out = _sql(store, "SELECT 1 AS x", "--format", "csv", "--output", str(tmp_path / "no" / "r.csv"))
    assert out.exit_code == 1 and "does not exist" in out.stderr
    with pytest.raises(QueryError, match="is a folder"):
        write_result(query(store, "SELECT 1 AS x"), "csv", tmp_path)


def test_csv_writes_list_columns_as_json_arrays(store, tmp_path):
    # row 10: `sql -f csv "SELECT * FROM items"` used to exit 3 with ArrowInvalid
    out = _sql(store, "SELECT * FROM items ORDER BY item_id", "--format", "csv")
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 6
    toy = rows[0]
    assert json.loads(toy["genres"]) == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert json.loads(toy["tags"]) == ["pixar", "fun"]
    target = tmp_path / "items.csv"
    out = _sql(store, "SELECT item_id, genres, [1.5, 2.0]::FLOAT[] AS v, {'a': 1} AS s FROM items",
               "--format", "csv", "--output", str(target))
    assert out.exit_code == 0, out.output
    first = next(csv.DictReader(target.open(encoding="utf-8")))
    assert json.loads(first["v"]) == [1.5, 2.0] and json.loads(first["s"]) == {"a": 1}
    empty_list = query(store, "SELECT []::VARCHAR[] AS l, NULL::INT[] AS n")
    assert csv_bytes(empty_list).decode().splitlines() == ['"l","n"', '"[]",']


def test_sql_errors_are_query_errors_never_raw_duckdb(store):
    for sql, message in (
        ("SELEC 1", "SQL error"),
        ("SELECT * FROM nosuchview", "Views in this store"),
        ("SELECT 1/0::INT AS x, 'a'::INT", "SQL error"),
        ("SELECT * FROM items WHERE item_id = 'x'", "SQL error"),
    ):
        with pytest.raises(QueryError, match=message):
            query(store, sql)
        out = _sql(store, sql)
        assert out.exit_code == 1 and "Traceback" not in out.output, sql


def test_each_query_reads_the_newest_snapshot_once(store, tmp_path):
    """A Store object kept by the caller does not pin old data: each query opens the newest snapshot."""
    assert query(store, "SELECT count(*) AS n FROM items").to_pylist() == [{"n": 6}]
    other = Store.open(store.root)  # another writer commits a different dataset
    (tmp_path / "b").mkdir()
    ingest(other, IngestSettings(path=editions.ml_10m(tmp_path / "b")))
    assert query(store, COUNTS).to_pylist() == [{"items": 3, "ratings": 3}]
    assert verify_store(Store.open(store.root)).ok


@pytest.mark.parametrize(
    "select",
    ["'101'::BIT AS v", "INTERVAL 1 DAY AS v", "union_value(k := 1) AS v", "map([1], [2]) AS v", "'x'::BLOB AS v"],
)
def test_every_result_type_exports_or_says_why_not(store, tmp_path, select):
    for fmt in ("table", "csv", "json"):
        out = _sql(store, f"SELECT {select}", "--format", fmt)
        assert out.exit_code == 0 and "Traceback" not in out.output, (fmt, out.output)
    out = _sql(store, f"SELECT {select}", "--format", "parquet", "--output", str(tmp_path / "r.parquet"))
    assert out.exit_code in (0, 1) and "Traceback" not in out.output
    if out.exit_code == 1:  # intervals and unions: Parquet has no such type
        assert "cannot hold this result" in out.stderr and "::VARCHAR" in out.stderr
        assert not (tmp_path / "r.parquet").exists()
