"""Id maps: where external ids (user_id, item_id) sit in a sorted id array.

Every table of the store keys rows by ``user_id`` / ``item_id``; the trainer, the scorer and
the evaluation turn those into positions (embedding rows, feature rows, matrix columns) by a
binary search over a sorted array of the known ids (or ``IdIndex``'s dense table, for the
trainer's hot path). This module is the one place that does it, so "unknown id" is handled
the same way everywhere.
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


# An id map is a dense table over [min id, max id] when that range is at most this many slots
# per known id (or 2**20 slots in all): 8 bytes a slot, one gather per id instead of a binary search.
DENSE_SLOTS_PER_ID = 16


class IdIndex:
    """``position + offset`` of each id in a sorted, unique id array; ``missing`` for the
    others: exactly ``lookup``, but through a dense table over the id range when the range
    is compact (MovieLens ids are), one gather per id, ~40x faster than the binary search that
    otherwise set the streaming read path's speed."""

    def __init__(self, sorted_ids: np.ndarray, offset: int, missing: int):
        self.sorted_ids, self.offset, self.missing = sorted_ids, offset, missing
        self.table: np.ndarray | None = None
        if len(sorted_ids) and sorted_ids.dtype.kind in "iu":
            self.lo, hi = int(sorted_ids[0]), int(sorted_ids[-1])
            span = hi - self.lo + 1
            inside = -(2**63) < self.lo and hi < 2**63 - 1  # the slots below and above are int64 too
            if inside and span <= max(DENSE_SLOTS_PER_ID * len(sorted_ids), 1 << 20):
                # slot 0 and the last slot stand for every id below / above the range
                self.table = np.full(span + 2, missing, dtype=np.int64)
                slots = sorted_ids.astype(np.int64) - self.lo + 1
                self.table[slots] = np.arange(len(sorted_ids), dtype=np.int64) + offset

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if self.table is None:
            return lookup(self.sorted_ids, values, offset=self.offset, missing=self.missing)
        # clip first (no overflow whatever the ids), then shift into the table's slots in place
        slots = np.clip(np.asarray(values, dtype=np.int64), self.lo - 1, self.lo + len(self.table) - 2)
        slots -= self.lo - 1
        return self.table[slots]
