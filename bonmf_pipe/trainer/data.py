"""What the trainer feeds the network: ID maps, item feature matrices, rating batches.

Ratings stream from the split's Parquet row groups in a seeded per-epoch order through an
in-memory shuffle buffer (streaming mode), or, when every training rating fits the memory
budget, are held as index tensors on the device and permuted each epoch (resident mode).
Both orders derive from (seed, epoch) alone, so an epoch replays identically on resume.

The streaming read path runs on several cores: the row groups that make the next buffer are
read concurrently and its rows are turned into embedding indices in parallel chunks (Arrow and
numpy release the GIL), with the same buffers, in the same order, as one thread would make.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from bonmf_pipe import runtime
from bonmf_pipe.featurestore.features import load_feature_matrix, resolve_feature_set
from bonmf_pipe.featurestore import ids
from bonmf_pipe.featurestore.sql import fetch_arrow, spill_connection
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.trainer.splits import SPLIT_MEMORY_MB, split_table_name

# Host bytes per buffered rating: three int64/float32 columns as Arrow, numpy copies and the
# index arrays built from them (measured: 127 with the system allocator, 25 M-rating store).
BYTES_PER_ROW = 128
# Streaming reads the next buffer in a background thread while the current one trains, so two
# buffers are alive at once (the one training, the next being read): each gets half the budget.
BUFFERS_ALIVE = 2
# Most threads that read and index one buffer: a buffer holds a few to a few dozen row groups,
# and beyond ~8 cores the training thread, not the read, sets the pace (see read_threads).
MAX_READ_THREADS = 8
# Rows each indexing job converts: small enough to spread a buffer over the threads and keep
# each job's temporaries in cache, large enough that the per-job Python overhead is noise.
INDEX_CHUNK_ROWS = 1 << 16

T = TypeVar("T")
R = TypeVar("R")


def read_threads() -> int:
    """Threads the streaming read path uses: the cores this process may run on, shared among
    the processes torchrun started on this machine (``LOCAL_WORLD_SIZE``), at most
    ``MAX_READ_THREADS``. The threads are idle while the training thread works on a buffer."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    return max(1, min(MAX_READ_THREADS, runtime.available_cores() // local))


@dataclass
class IdMaps:
    """Sorted id arrays; index 0 of every embedding is the "unknown" id."""

    user_ids: np.ndarray  # users with training ratings (embedding index = position + 1)
    item_ids: np.ndarray  # every item of the items table (feature row = position)
    item_index: np.ndarray  # embedding index of each item (0 = no training ratings)

    @property
    def n_users(self) -> int:
        return len(self.user_ids) + 1

    @property
    def n_item_embeddings(self) -> int:
        return int(self.item_index.max(initial=0)) + 1

    def user_idx(self, users: np.ndarray) -> np.ndarray:
        """Embedding index of each user (0 = a user without training ratings)."""
        return self._users(users)

    def item_pos(self, items: np.ndarray) -> np.ndarray:
        """Feature row of each item; unknown items get the extra last row (no vectors)."""
        return self._items(items)

    def item_idx_at(self, pos: np.ndarray) -> np.ndarray:
        """Embedding index of the item at each feature row (0 for the unknown-item row)."""
        return self._item_index_by_pos[pos]

    # built on first use (the arrays are not changed afterwards)
    @cached_property
    def _users(self) -> ids.IdIndex:
        return ids.IdIndex(self.user_ids, offset=1, missing=0)

    @cached_property
    def _items(self) -> ids.IdIndex:
        return ids.IdIndex(self.item_ids, offset=0, missing=len(self.item_ids))

    @cached_property
    def _item_index_by_pos(self) -> np.ndarray:
        return np.append(self.item_index, 0)


def build_id_maps(store: Store, split_id: str, memory_limit_mb: int = SPLIT_MEMORY_MB) -> IdMaps:
    """Users and items with training ratings (a DuckDB aggregation over the split's shards,
    held to ``memory_limit_mb`` and spilling to ``<store>/tmp`` beyond it)."""
    files = store.table_files(split_table_name(split_id))
    tmp = store.root / "tmp" / f"duckdb-ids-{uuid.uuid4().hex[:8]}"
    con = spill_connection(tmp, memory_limit_mb)
    try:
        src, params = "read_parquet($files) WHERE part = 'train'", {"files": [str(f) for f in files]}
        users = fetch_arrow(con.sql(f"SELECT DISTINCT user_id FROM {src} ORDER BY 1", params=params)).column(0).to_numpy()
        rated = fetch_arrow(con.sql(f"SELECT DISTINCT item_id FROM {src} ORDER BY 1", params=params)).column(0).to_numpy()
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)
    items = np.sort(store.read_table("items", columns=["item_id"]).column(0).to_numpy().astype(np.int64))
    items = np.union1d(items, rated)  # ratings of items missing from the items table still train
    index = np.zeros(len(items), dtype=np.int64)
    index[np.isin(items, rated)] = np.arange(1, len(rated) + 1)
    return IdMaps(user_ids=users.astype(np.int64), item_ids=items, item_index=index)


@dataclass
class SideFeatures:
    """One modality's matrix for every item (+ a last all-zero row for unknown items)."""

    modality: str
    key: str
    dim: int
    matrix: np.ndarray  # float32 [n_items + 1, dim], standardised when asked
    found: np.ndarray  # bool [n_items + 1]
    mean: np.ndarray
    std: np.ndarray


def load_side_features(
    store: Store, modality: str, key: str | None, item_ids: np.ndarray, normalize: str,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> SideFeatures:
    """One modality's vectors of ``item_ids``: ``normalize`` is none, l2 (unit length) or
    standardize (z-score per dimension over the items that have a vector; ``stats`` reuses
    a trained run's mean and std)."""
    fs = resolve_feature_set(store, modality, key)
    matrix, found = load_feature_matrix(store, fs, item_ids)
    matrix = np.concatenate([matrix, np.zeros((1, fs.dim), np.float32)])
    found = np.concatenate([found, [False]])
    if normalize == "l2":
        matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    if stats is not None:
        mean, std = stats
    elif normalize == "standardize" and found.any():
        mean = matrix[found].mean(axis=0)
        std = matrix[found].std(axis=0) + 1e-6
    else:
        mean, std = np.zeros(fs.dim, np.float32), np.ones(fs.dim, np.float32)
    matrix = np.where(found[:, None], (matrix - mean) / std, 0.0).astype(np.float32)
    return SideFeatures(modality, fs.key, fs.dim, matrix, found, mean.astype(np.float32), std.astype(np.float32))


@dataclass
class Batch:
    users: torch.Tensor  # embedding index (0 = unknown)
    items: torch.Tensor  # embedding index (0 = unknown)
    item_pos: torch.Tensor  # feature row
    ratings: torch.Tensor


def to_indices(maps: IdMaps, table: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    users = table.column("user_id").to_numpy()
    items = table.column("item_id").to_numpy()
    pos = maps.item_pos(items)
    item_idx = maps.item_idx_at(pos)
    ratings = table.column("rating").to_numpy().astype(np.float32)
    return maps.user_idx(users), item_idx, pos, ratings


def _fragments(dataset: pads.Dataset, part: str) -> list[pads.Fragment]:
    """Every row group of the split that may hold ``part`` rows (by column statistics)."""
    out = []
    for frag in dataset.get_fragments():
        out.extend(frag.split_by_row_group(filter=pc.field("part") == part))
    return out


def count_part(dataset: pads.Dataset, part: str) -> int:
    return dataset.count_rows(filter=pc.field("part") == part)


def own_fragments(
    dataset: pads.Dataset, part: str, rng: np.random.Generator | None, rank: int = 0, world: int = 1
) -> list[pads.Fragment]:
    """The row groups of ``part`` that rank ``rank`` of ``world`` reads: every ``world``-th of
    the split's row groups (in the order ``rng`` draws, which is the same on every rank given
    the same seed), starting at the ``rank``-th. One process reads them all."""
    frags = _fragments(dataset, part)
    if rng is not None:
        frags = [frags[i] for i in rng.permutation(len(frags))]
    return frags[rank::world]


def count_fragments(frags: list[pads.Fragment], part: str) -> int:
    """Rows of ``part`` in ``frags`` (row-group statistics where a group holds one part)."""
    return sum(f.count_rows(filter=pc.field("part") == part) for f in frags)


def stream_part(
    dataset: pads.Dataset, part: str, rng: np.random.Generator | None, buffer_rows: int, threads: int | None = None
) -> Iterator[pa.Table]:
    """Tables of ``part`` rows, at most ~``buffer_rows`` each; shuffled when ``rng`` is given.

    Row groups are read in a random order into a buffer; each full buffer is permuted and
    handed out, so host memory stays bounded by the buffer whatever the number of ratings.
    """
    yield from stream_fragments(own_fragments(dataset, part, rng), part, rng, buffer_rows, threads)


def stream_fragments(
    frags: list[pads.Fragment], part: str, rng: np.random.Generator | None, buffer_rows: int,
    threads: int | None = None,
) -> Iterator[pa.Table]:
    """``stream_part`` over the row groups ``frags``, in their order: buffers of ~``buffer_rows``
    rows, each permuted with ``rng`` when it is given.

    Each fragment's ``part`` rows are counted first (row-group statistics; the ``part`` column
    of a mixed group), so the groups that make each buffer are known before any is read; the
    ``threads`` (default ``read_threads()``) then read one buffer's groups at once, and no
    more than one buffer's groups are ever in flight. The buffers are those a one-thread read
    would make: the same groups, concatenated in the same order, permuted by the same draws.
    """
    keep = pc.field("part") == part
    with _Workers(threads or read_threads()) as workers:
        counts = workers.map(lambda f: f.count_rows(filter=keep), frags)
        plan = [(f, n == sum(g.num_rows for g in f.row_groups)) for f, n in zip(frags, counts)]
        for group, rows in buffer_groups(plan, counts, buffer_rows):
            tables = workers.start(lambda fw: _read_group(*fw, keep), group)
            perm = rng.permutation(rows) if rng is not None else None  # drawn while the groups are read
            # this frame keeps no reference: the row groups go once permuted, the buffer once used
            yield _emit(tables(), perm)


def _read_group(frag: pads.Fragment, whole: bool, keep: pc.Expression) -> pa.Table:
    """The rows of one row group that ``keep`` selects; a group whose rows all belong to the
    part (most: the split writes each part's rows together) is read without evaluating the
    filter, which cost more than decoding the columns (2.3x the read)."""
    cols = ["user_id", "item_id", "rating"]
    return frag.to_table(columns=cols) if whole else frag.to_table(columns=cols, filter=keep)


def buffer_groups(frags: list[T], counts: list[int], buffer_rows: int) -> Iterator[tuple[list[T], int]]:
    """The fragments of each buffer, in order, and its rows: groups with rows are added until
    the buffer holds ``buffer_rows`` or more (so a buffer exceeds it by less than one group);
    the last buffer takes what is left."""
    group: list[T] = []
    rows = 0
    for frag, n in zip(frags, counts):
        if n == 0:
            continue
        group.append(frag)
        rows += n
        if rows >= buffer_rows:
            yield group, rows
            group, rows = [], 0
    if group:
        yield group, rows


def _emit(pending: list[pa.Table], perm: np.ndarray | None) -> pa.Table:
    """One table of the buffered row groups, in the order ``perm`` gives when it is given: the
    permutation gathers straight from the row groups (no intermediate contiguous copy)."""
    t = pa.concat_tables(pending)
    if perm is None:
        return t.combine_chunks()
    if len(perm) != t.num_rows:  # the counts and the read disagree: a bug, not bad data
        raise RuntimeError(f"a shuffle buffer read {t.num_rows} rows where its row groups count {len(perm)}")
    return t.take(pa.array(perm))


def index_buffers(maps: IdMaps, tables: Iterator[pa.Table], pin: bool, threads: int | None = None) -> Iterator[tuple]:
    """Index arrays of each streamed table; with ``pin`` (CUDA) as page-locked tensors, so every
    batch's copy to the device is asynchronous. ``threads`` (default ``read_threads()``) convert
    chunks of ``INDEX_CHUNK_ROWS`` rows at once, each straight into its slice of the output."""
    with _Workers(threads or read_threads()) as workers:
        for table in tables:
            arrays = index_table(maps, table, pin, workers)
            del table  # only the index arrays stay alive while the consumer trains on them
            yield arrays


def index_table(maps: IdMaps, table: pa.Table, pin: bool, workers: _Workers) -> tuple:
    """``to_indices`` of ``table``, chunk by chunk on ``workers``: numpy arrays, or page-locked
    tensors with ``pin`` (allocated pinned and filled in place: no second copy to pin them)."""
    n = table.num_rows
    dtypes = (torch.int64, torch.int64, torch.int64, torch.float32)
    # pinned: the tensors the batches are cut from (the host allocator tracks their copies)
    out = tuple(torch.empty(n, dtype=d, pin_memory=pin) for d in dtypes)
    views = [t.numpy() for t in out]

    def fill(start: int) -> None:
        for view, values in zip(views, to_indices(maps, table.slice(start, INDEX_CHUNK_ROWS))):
            view[start : start + len(values)] = values

    workers.map(fill, range(0, n, INDEX_CHUNK_ROWS))
    return out if pin else tuple(views)


class _Workers:
    """``map`` on a pool of ``threads`` threads (in the calling thread when ``threads`` is 1):
    results in the order of the items, and a worker's exception raised in the caller. Leaving
    the ``with`` block cancels what has not started and waits for what has."""

    def __init__(self, threads: int):
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="bonmf-read") if threads > 1 else None

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        return self.start(fn, items)()

    def start(self, fn: Callable[[T], R], items: Iterable[T]) -> Callable[[], list[R]]:
        """Start ``fn`` on each of ``items`` (on one thread: when the results are asked for);
        the returned function waits for the results."""
        if self.pool is None:
            return lambda: [fn(x) for x in items]
        futures = [self.pool.submit(fn, x) for x in items]
        return lambda: [f.result() for f in futures]

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool:
            self.pool.shutdown(wait=True, cancel_futures=True)


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """``items`` in their order, each produced by a background thread while the consumer works
    on the one before: reading and decoding the next shuffle buffer (Arrow and numpy release
    the GIL) overlaps the training steps on the current one. The producer starts an item only
    once the consumer has taken the previous one, so at most two are alive (``BUFFERS_ALIVE``).
    It alone draws from the epoch's random stream, in the same order as without it, so runs keep
    their bits. An exception in the producer is raised here; closing this generator stops it,
    and the producer closes ``items`` (a generator's read threads end with it)."""
    done, stop = object(), threading.Event()
    slot = threading.Semaphore(0)  # released when the consumer takes an item: only then is the next made
    q: queue.Queue = queue.Queue(maxsize=1)

    def wait(acquire) -> bool:
        while not stop.is_set():
            if acquire(timeout=0.1):
                return True
        return False

    def produce() -> None:
        try:
            for x in items:
                if not wait(lambda timeout: _try_put(q, (True, x), timeout)) or not wait(slot.acquire):
                    return
            wait(lambda timeout: _try_put(q, (True, done), timeout))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            wait(lambda timeout: _try_put(q, (False, exc), timeout))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="bonmf-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            ok, x = q.get()
            slot.release()
            if not ok:
                raise x
            if x is done:
                return
            yield x
            del x  # the consumed buffer goes before the next is taken
    finally:
        stop.set()
        worker.join()


def _try_put(q: queue.Queue, x, timeout: float) -> bool:
    try:
        q.put(x, timeout=timeout)
        return True
    except queue.Full:
        return False


def tensor_batches(
    arrays: tuple[np.ndarray, ...] | tuple[torch.Tensor, ...], batch_size: int, device: torch.device
) -> Iterator[Batch]:
    """Cut index arrays (already in the wanted order) into batches on ``device``."""
    n = len(arrays[0])
    tensors = [a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    for start in range(0, n, batch_size):
        u, i, p, r = (t[start : start + batch_size].to(device, non_blocking=True) for t in tensors)
        yield Batch(u, i, p, r)
