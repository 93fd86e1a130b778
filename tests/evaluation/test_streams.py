"""Re-chunking sorted streams into complete users, and per-item training counts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from bonmf_pipe.evaluation.streams import grouped_by_user, lookup_counts, user_chunks


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


def test_user_chunks_and_counts():
    table = pa.table({"user_id": [1, 1, 2, 3, 3, 3, 4]})
    sizes = [c.column("user_id").to_pylist() for c in user_chunks(table, 2)]
    assert sizes == [[1, 1, 2], [3, 3, 3, 4]]
    counts = lookup_counts(np.array([10, 20, 30]), np.array([4, 1, 9]), np.array([30, 15, 10, 99]))
    assert counts.tolist() == [9, 0, 4, 0]
