"""DuckDB streams the evaluation reads: per-item training counts and rows grouped by user.

Every query runs under a memory limit (spilling to the store's ``tmp/``; sorts go out of
core) and returns record batches, re-chunked here into tables of whole users with a bounded
number of rows, so memory stays bounded by the chunk size and the catalogue, never by the
number of ratings. Values reach SQL as bound parameters, never pasted into the text.
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
from bonmf_pipe.trainer import split_dataset

BATCH_ROWS = 64 * 1024
MEMORY_LIMIT_MB = 128


@contextlib.contextmanager
def connection(store: Store, memory_limit_mb: int = MEMORY_LIMIT_MB) -> Iterator[duckdb.DuckDBPyConnection]:
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


def split_files(store: Store, split_id: str) -> list[str]:
    """The split's Parquet shards (through its manifest), as paths for ``read_parquet($files)``."""
    files = list(split_dataset(store, split_id).files)
    if not files:
        raise StoreError(f"The split '{split_id}' in {store.root} has no rows. Train a model again to rebuild it.")
    return files


def train_counts(con: duckdb.DuckDBPyConnection, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids sorted, training ratings of each): the items with at least one."""
    table = fetch_arrow(
        con.sql(
            "SELECT item_id, count(*) AS n FROM read_parquet($files) WHERE part = 'train' "
            "GROUP BY item_id ORDER BY item_id",
            params={"files": files},
        )
    )
    return table.column("item_id").to_numpy(), table.column("n").to_numpy()


def grouped_by_user(reader: pa.RecordBatchReader, max_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """Re-chunk a stream sorted by ``user_id`` into tables of complete users, at most
    ``max_rows`` rows each (a user with more rows than that comes alone, whole).

    Holds at most one incoming batch plus the rows of the user it ends with."""
    pending: pa.Table | None = None
    for batch in reader:
        if not batch.num_rows:
            continue
        table = pa.Table.from_batches([batch])
        if pending is not None:
            table = pa.concat_tables([pending, table])
        starts = _user_starts(table)
        done = int(starts[-1])  # the last user may go on in the next batch
        yield from _pieces(table, np.r_[starts[:-1], done], max_rows)
        pending = table.slice(done)
    if pending is not None and pending.num_rows:
        yield from _pieces(pending, np.r_[_user_starts(pending), pending.num_rows], max_rows)


def _user_starts(table: pa.Table) -> np.ndarray:
    users = table.column("user_id").to_numpy()
    return np.flatnonzero(np.r_[True, users[1:] != users[:-1]])


def _pieces(table: pa.Table, bounds: np.ndarray, max_rows: int) -> Iterator[pa.Table]:
    """Slices of ``table`` between user boundaries ``bounds`` (0 first, the end last), each
    as many whole users as fit in ``max_rows`` rows (at least one)."""
    lo, end = int(bounds[0]), int(bounds[-1])
    while lo < end:
        i = int(np.searchsorted(bounds, lo + max_rows, side="right")) - 1
        hi = int(bounds[i]) if bounds[i] > lo else int(bounds[np.searchsorted(bounds, lo, side="right")])
        yield table.slice(lo, hi - lo)
        lo = hi


def user_chunks(table: pa.Table, max_users: int) -> Iterator[pa.Table]:
    """Slices of ``table`` (sorted by user_id) with at most ``max_users`` users each."""
    users = table.column("user_id").to_numpy()
    if not users.size:
        return
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    bounds = np.r_[starts[::max_users], users.size]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        yield table.slice(int(lo), int(hi - lo))


def predictions_stream(con: duckdb.DuckDBPyConnection, path: Path, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
    """The run's test predictions with each item's training count (from the registered
    ``counts`` table), sorted by user and item; DuckDB sorts out of core under its limit."""
    return con.sql(
        "SELECT p.user_id, p.item_id, p.rating::DOUBLE AS rating, p.prediction::DOUBLE AS prediction, "
        "coalesce(c.n, 0) AS n_train "
        "FROM read_parquet($path) p LEFT JOIN counts c USING (item_id) ORDER BY p.user_id, p.item_id",
        params={"path": str(path)},
    ).to_arrow_reader(batch_rows)


def known_rows_stream(
    con: duckdb.DuckDBPyConnection, files: list[str], threshold: float, batch_rows: int = BATCH_ROWS
) -> pa.RecordBatchReader:
    """For the users in the registered ``chosen`` table: their train/valid items (``seen``)
    and their relevant test items, sorted by user."""
    return con.sql(
        "SELECT s.user_id, s.item_id, s.part IN ('train', 'valid') AS seen "
        "FROM read_parquet($files) s SEMI JOIN chosen c USING (user_id) "
        "WHERE s.part IN ('train', 'valid') OR s.rating >= $threshold "
        "ORDER BY s.user_id, s.item_id",
        params={"files": files, "threshold": float(threshold)},
    ).to_arrow_reader(batch_rows)


def users_with_relevant_test(con: duckdb.DuckDBPyConnection, files: list[str], threshold: float) -> np.ndarray:
    """Sorted ids of the users with at least one test rating >= ``threshold``."""
    table = fetch_arrow(
        con.sql(
            "SELECT DISTINCT user_id FROM read_parquet($files) WHERE part = 'test' AND rating >= $threshold "
            "ORDER BY user_id",
            params={"files": files, "threshold": float(threshold)},
        )
    )
    return table.column("user_id").to_numpy()


def rated_in_training(con: duckdb.DuckDBPyConnection, files: list[str], user_id: int) -> np.ndarray:
    """The items ``user_id`` rated in the split's train and valid parts."""
    table = fetch_arrow(
        con.sql(
            "SELECT item_id FROM read_parquet($files) WHERE user_id = $user AND part IN ('train', 'valid')",
            params={"files": files, "user": int(user_id)},
        )
    )
    return table.column("item_id").to_numpy().astype(np.int64)
