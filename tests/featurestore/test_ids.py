"""The one sorted-id lookup: positions, offsets, missing ids and values by id."""

from __future__ import annotations

import numpy as np
import pytest

from bonmf_pipe.featurestore import ids


def test_positions_and_lookup():
    sorted_ids = np.array([3, 10, 42, 99])
    pos, found = ids.positions(sorted_ids, np.array([42, 3, 7, 100, 99, -1]))
    assert found.tolist() == [True, True, False, False, True, False]
    assert pos[found].tolist() == [2, 0, 3]
    assert (pos >= 0).all() and (pos < sorted_ids.size).all()  # always a valid index
    assert ids.lookup(sorted_ids, [10, 11, 99], offset=1, missing=0).tolist() == [2, 0, 4]
    assert ids.lookup(sorted_ids, [10, 11], missing=-1).tolist() == [1, -1]


def test_empty_id_arrays():
    assert ids.lookup(np.array([], np.int64), [1, 2], offset=1, missing=0).tolist() == [0, 0]
    assert ids.lookup(np.array([5]), np.array([], np.int64)).tolist() == []
    assert ids.lookup_values(np.array([], np.int64), np.array([], np.int64), [4]).tolist() == [0]


def test_lookup_values():
    counts = ids.lookup_values(np.array([10, 20, 30]), np.array([4, 1, 9]), np.array([30, 15, 10, 99]), default=0)
    assert counts.tolist() == [9, 0, 4, 0]


@pytest.mark.parametrize(("known", "dense"), [
    (np.array([3, 4, 7, 100, 2_000]), True),  # compact (MovieLens-like): a dense table
    (np.array([5, 10**12, 2 * 10**12]), False),  # sparse: the binary search
    (np.array([-(2**62), 0, 2**62]), False),
    (np.array([2**63 - 3, 2**63 - 2]), True),  # ids at the ends of int64: no overflow
    (np.array([-(2**63), -(2**63) + 5]), False),
    (np.array([-7, -3, 0]), True),
    (np.array([], dtype=np.int64), False),
])
def test_id_index_equals_the_binary_search_lookup(known, dense):
    rng = np.random.default_rng(0)
    queries = np.concatenate([known, known - 1, known + 1, rng.integers(-50, 3_000, 500),
                              [np.iinfo(np.int64).min, np.iinfo(np.int64).max]]).astype(np.int64)
    for offset, missing in ((1, 0), (0, len(known))):
        index = ids.IdIndex(known, offset=offset, missing=missing)
        assert (index.table is not None) == dense
        got = index(queries)
        assert got.dtype == np.int64
        assert np.array_equal(got, ids.lookup(known, queries, offset=offset, missing=missing))
