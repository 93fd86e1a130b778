"""DuckDB streams the evaluation reads: per-item training counts and rows grouped by user.

Every query runs under a memory limit (spilling to the store's ``tmp/``) and returns record
batches, so memory stays bounded by the batch size and the catalogue, never by the number
of ratings.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from bonmf_pipe.errors import StoreError
from bonmf_pipe.featurestore.sql import fetch_arrow, spill_connection
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.featurestore.views import sql_list
from bonmf_pipe.trainer.splits import split_table_name

BATCH_ROWS = 64 * 1024


@contextlib.contextmanager
def connection(store: Store, memory_limit_mb: int = 1024) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection that spills to ``<store>/tmp`` and cleans up after."""
    tmp = store.root / "tmp" / f"duckdb-eval-{uuid.uuid4().hex[:8]}"
    con = spill_connection(tmp, memory_limit_mb)
    try:
        yield con
    except duckdb.Error as exc:
        raise StoreError(f"Evaluation query failed on the store at {store.root}: {exc}") from exc
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)


def split_source(store: Store, split_id: str) -> str:
    """SQL ``read_parquet(...)`` over the split's shards (through its manifest)."""
    files = store.table_files(split_table_name(split_id))
    if not files:
        raise StoreError(f"The split '{split_id}' in {store.root} has no rows. Train a model again to rebuild it.")
    return f"read_parquet({sql_list(files)})"


def train_counts(con: duckdb.DuckDBPyConnection, split_src: str) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids sorted, training ratings of each): the items with at least one."""
    table = fetch_arrow(
        con.sql(f"SELECT item_id, count(*) AS n FROM {split_src} WHERE part = 'train' GROUP BY item_id ORDER BY item_id")
    )
    return table.column("item_id").to_numpy(), table.column("n").to_numpy()


def lookup_counts(count_ids: np.ndarray, counts: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Training ratings of each of ``item_ids`` (0 for items absent from ``count_ids``)."""
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if count_ids.size == 0:
        return np.zeros(item_ids.size, dtype=np.int64)
    pos = np.clip(np.searchsorted(count_ids, item_ids), 0, count_ids.size - 1)
    return np.where(count_ids[pos] == item_ids, counts[pos], 0).astype(np.int64)


def grouped_by_user(reader: pa.RecordBatchReader) -> Iterator[pa.Table]:
    """Re-chunk a stream sorted by ``user_id`` so each chunk holds only complete users."""
    pending: pa.Table | None = None
    for batch in reader:
        table = pa.Table.from_batches([batch])
        if pending is not None and pending.num_rows:
            table = pa.concat_tables([pending, table])
        if not table.num_rows:
            continue
        users = table.column("user_id").to_numpy()
        cut = int(np.searchsorted(users, users[-1], side="left"))
        if cut:
            yield table.slice(0, cut)
        pending = table.slice(cut)
    if pending is not None and pending.num_rows:
        yield pending


def user_chunks(table: pa.Table, max_users: int) -> Iterator[pa.Table]:
    """Slices of ``table`` (sorted by user_id) with at most ``max_users`` users each."""
    users = table.column("user_id").to_numpy()
    if not users.size:
        return
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    bounds = np.r_[starts[::max_users], users.size]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        yield table.slice(int(lo), int(hi - lo))


def predictions_stream(con: duckdb.DuckDBPyConnection, path: Path) -> pa.RecordBatchReader:
    """The run's test predictions with each item's training count, sorted by user and item."""
    src = "read_parquet('" + str(path).replace("'", "''") + "')"
    return con.sql(
        "SELECT p.user_id, p.item_id, p.rating::DOUBLE AS rating, p.prediction::DOUBLE AS prediction, "
        "coalesce(c.n, 0) AS n_train "
        f"FROM {src} p LEFT JOIN counts c USING (item_id) ORDER BY p.user_id, p.item_id"
    ).to_arrow_reader(BATCH_ROWS)


def known_rows_stream(con: duckdb.DuckDBPyConnection, split_src: str, threshold: float) -> pa.RecordBatchReader:
    """For the users in the registered ``chosen`` table: their train/valid items (``seen``)
    and their relevant test items, sorted by user."""
    return con.sql(
        "SELECT s.user_id, s.item_id, s.part IN ('train', 'valid') AS seen "
        f"FROM {split_src} s SEMI JOIN chosen c USING (user_id) "
        f"WHERE s.part IN ('train', 'valid') OR s.rating >= {float(threshold)} "
        "ORDER BY s.user_id, s.item_id"
    ).to_arrow_reader(BATCH_ROWS)


def users_with_relevant_test(con: duckdb.DuckDBPyConnection, split_src: str, threshold: float) -> np.ndarray:
    """Sorted ids of the users with at least one test rating >= ``threshold``."""
    table = fetch_arrow(
        con.sql(
            f"SELECT DISTINCT user_id FROM {split_src} WHERE part = 'test' AND rating >= {float(threshold)} "
            "ORDER BY user_id"
        )
    )
    return table.column("user_id").to_numpy()
