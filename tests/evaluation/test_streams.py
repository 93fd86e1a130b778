"""Re-chunking sorted streams into complete users, and per-item training counts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from bonmf_pipe.evaluation.streams import grouped_by_user, user_chunks


def test_grouped_by_user_never_splits_a_user():
    users = np.array([1, 1, 1, 2, 3, 3, 3, 3, 4, 5, 5])
    table = pa.table({"user_id": users, "x": np.arange(users.size)})
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=3))
    chunks = list(grouped_by_user(reader))
    assert pa.concat_tables(chunks).equals(table)
    for chunk in chunks:
        u = set(chunk.column("user_id").to_pylist())
        others = {v for c in chunks if c is not chunk for v in c.column("user_id").to_pylist()}
        assert not u & others


@pytest.mark.parametrize("batch", [1, 2, 3, 5, 100])
@pytest.mark.parametrize("max_rows", [1, 2, 3, 4, 7, 100])
def test_grouped_by_user_bounds_rows_per_chunk(batch, max_rows):
    users = np.array([1, 1, 1, 2, 3, 3, 3, 3, 4, 5, 5, 6, 7, 7, 7, 7, 7, 7, 8])
    table = pa.table({"user_id": users, "x": np.arange(users.size)})
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=batch))
    chunks = [c.column("user_id").to_pylist() for c in grouped_by_user(reader, max_rows)]
    assert [u for c in chunks for u in c] == users.tolist()
    for a, b in zip(chunks, chunks[1:]):
        assert a[-1] < b[0]  # complete users only
    for c in chunks:
        assert len(c) <= max_rows or len(set(c)) == 1  # over the bound: one user alone


def test_user_chunks():
    table = pa.table({"user_id": [1, 1, 2, 3, 3, 3, 4]})
    sizes = [c.column("user_id").to_pylist() for c in user_chunks(table, 2)]
    assert sizes == [[1, 1, 2], [3, 3, 3, 4]]
