"""Id maps: where external ids (user_id, item_id) sit in a sorted id array.

Every table of the store keys rows by ``user_id`` / ``item_id``; the trainer, the scorer and
the evaluation turn those into positions (embedding rows, feature rows, matrix columns) by a
binary search over a sorted array of the known ids. This module is the one place that does
it, so "unknown id" is handled the same way everywhere.
"""

from __future__ import annotations

import numpy as np


def positions(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pos, found)``: the position of each of ``ids`` in ``sorted_ids`` (ascending, unique)
    and whether it is there; ``pos`` is a valid index (0) where it is not."""
    sorted_ids = np.asarray(sorted_ids)
    ids = np.asarray(ids, dtype=np.int64)
    if sorted_ids.size == 0:
        return np.zeros(ids.shape, dtype=np.int64), np.zeros(ids.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    found = sorted_ids[pos] == ids
    return np.where(found, pos, 0).astype(np.int64), found


def lookup(sorted_ids: np.ndarray, ids: np.ndarray, offset: int = 0, missing: int = -1) -> np.ndarray:
    """``position + offset`` of each of ``ids`` in ``sorted_ids``; ``missing`` where absent."""
    pos, found = positions(sorted_ids, ids)
    return np.where(found, pos + offset, missing).astype(np.int64)


def lookup_values(sorted_ids: np.ndarray, values: np.ndarray, ids: np.ndarray, default=0) -> np.ndarray:
    """``values[k]`` for each id equal to ``sorted_ids[k]``; ``default`` for ids not there."""
    values = np.asarray(values)
    pos, found = positions(sorted_ids, ids)
    if values.size == 0:
        return np.full(pos.shape, default, dtype=values.dtype)
    return np.where(found, values[pos], default).astype(values.dtype)
