"""The one sorted-id lookup: positions, offsets, missing ids and values by id."""

from __future__ import annotations

import numpy as np

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
