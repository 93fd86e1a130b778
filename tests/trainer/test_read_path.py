"""The streaming read path on several threads: the same buffers as a one-thread read (same row
groups, same order, same permutation draws), indices equal to the binary-search lookup, no more
than one buffer's row groups read ahead, and a worker's error raised in the consumer."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bonmf_pipe.featurestore import ids
from bonmf_pipe.trainer import data, make_split, split_dataset
from bonmf_pipe.trainer.splits import split_table_name

from .conftest import build_store


@pytest.fixture()
def split(tmp_path):
    """A split of ~24k ratings in many small files and row groups, some of them mixed (train
    rows beside valid or test rows), with its id maps."""
    store = build_store(tmp_path / "store", n_users=600, per_user=40, rows_per_file=1000, row_group_size=250)
    split_id = make_split(store, "random:0.7", 42, valid_fraction=0.05, rows_per_file=1500, row_group_size=300)
    return store, split_id, split_dataset(store, split_id), data.build_id_maps(store, split_id)


def one_thread_read(frags, part: str, rng, buffer_rows: int) -> list[pa.Table]:
    """The read path as one thread does it (the reference): each row group read with the part
    filter, in order, into a buffer that is permuted and handed out once it holds enough rows."""
    def emit(tables):
        t = pa.concat_tables(tables)
        return t.take(pa.array(rng.permutation(t.num_rows)))

    out, pending, rows = [], [], 0
    for frag in frags:
        t = frag.to_table(columns=["user_id", "item_id", "rating"], filter=pc.field("part") == part)
        if t.num_rows:
            pending.append(t)
            rows += t.num_rows
        if pending and rows >= buffer_rows:
            out.append(emit(pending))
            pending, rows = [], 0
    if pending:
        out.append(emit(pending))
    return out


def test_the_split_has_mixed_row_groups_and_many_buffers(split):
    store, split_id, dataset, _ = split
    mixed = 0
    for f in store.table_files(split_table_name(split_id)):
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(meta.schema.names.index("part")).statistics
            mixed += stats.min != stats.max
    assert mixed >= 2  # so both reads (filtered and whole) are exercised below
    assert len(data.own_fragments(dataset, "train", None)) >= 40


@pytest.mark.parametrize("threads", [2, 5])
@pytest.mark.parametrize("buffer_rows", [1, 700, 2_000, 10**9])
def test_parallel_buffers_equal_a_one_thread_read_of_the_same_row_groups(split, threads, buffer_rows):
    _, _, dataset, maps = split
    for part in ("train", "test"):
        rng_ref, rng_par = np.random.default_rng([42, 3]), np.random.default_rng([42, 3])
        expected = one_thread_read(data.own_fragments(dataset, part, rng_ref), part, rng_ref, buffer_rows)
        got = list(data.stream_part(dataset, part, rng_par, buffer_rows, threads=threads))
        assert len(got) == len(expected) > 0
        for a, b in zip(got, expected):
            assert a.equals(b)  # same rows, same order
        assert rng_par.random() == rng_ref.random()  # the same draws were taken from the stream
        # and the index arrays of the threaded conversion are those of the whole table at once
        indexed = list(data.index_buffers(maps, iter(got), pin=False, threads=threads))
        for arrays, table in zip(indexed, expected):
            for x, y in zip(arrays, data.to_indices(maps, table)):
                assert x.dtype == y.dtype and np.array_equal(x, y)


def test_indexing_in_chunks_equals_indexing_at_once(split, monkeypatch):
    _, _, dataset, maps = split
    table = next(data.stream_part(dataset, "train", np.random.default_rng(1), 10**9, threads=1))
    monkeypatch.setattr(data, "INDEX_CHUNK_ROWS", 999)  # many uneven chunks, a short last one
    (arrays,) = data.index_buffers(maps, iter([table]), pin=False, threads=3)
    assert len(arrays[0]) == table.num_rows > 10 * 999
    for x, y in zip(arrays, data.to_indices(maps, table)):
        assert np.array_equal(x, y)


class Recorded:
    """A row group that records when it is read (and fails to, when told)."""

    def __init__(self, frag, k: int, reads: list[int], fail: bool = False):
        self.frag, self.k, self.reads, self.fail, self.row_groups = frag, k, reads, fail, frag.row_groups

    def count_rows(self, **kw):
        return self.frag.count_rows(**kw)

    def to_table(self, **kw):
        self.reads.append(self.k)
        if self.fail:
            raise OSError(f"row group {self.k} is corrupt")
        return self.frag.to_table(**kw)


def test_no_more_than_one_buffer_of_row_groups_is_read_ahead(split):
    _, _, dataset, _ = split
    reads: list[int] = []
    frags = data.own_fragments(dataset, "train", None)
    counts = [f.count_rows(filter=pc.field("part") == "train") for f in frags]
    groups = [g for g, _ in data.buffer_groups(list(range(len(frags))), counts, 1_000)]
    assert len(groups) >= 5
    recorded = [Recorded(f, k, reads) for k, f in enumerate(frags)]
    stream = data.stream_fragments(recorded, "train", None, 1_000, threads=4)
    for n, table in enumerate(stream):
        assert sorted(reads) == [k for g in groups[: n + 1] for k in g]  # this buffer's groups and earlier ones only
        assert table.num_rows == sum(counts[k] for k in groups[n])


def test_an_error_in_a_read_thread_is_raised_in_the_consumer_and_the_threads_end(split):
    _, _, dataset, maps = split
    frags = data.own_fragments(dataset, "train", None)
    bad = len(frags) // 2
    recorded = [Recorded(f, k, [], fail=k == bad) for k, f in enumerate(frags)]
    before = threading.active_count()
    buffers = data.read_ahead(data.index_buffers(maps, data.stream_fragments(recorded, "train", None, 500, threads=3),
                                                 pin=False, threads=3))
    got = 0
    with pytest.raises(OSError, match=f"row group {bad} is corrupt"):
        for arrays in buffers:
            got += len(arrays[0])
    assert got > 0  # the buffers before the broken row group arrived
    assert threading.active_count() == before


def test_an_unreadable_file_fails_the_read(split):
    store, split_id, dataset, maps = split
    frags = data.own_fragments(dataset, "train", None)
    store.table_files(split_table_name(split_id))[-1].write_bytes(b"not parquet")
    with pytest.raises((OSError, pa.ArrowException)):
        for _ in data.read_ahead(data.index_buffers(maps, data.stream_fragments(frags, "train", None, 500, threads=3),
                                                    pin=False, threads=3)):
            pass


def test_closing_the_consumer_ends_the_read_threads(split):
    _, _, dataset, maps = split
    before = threading.active_count()
    buffers = data.read_ahead(data.index_buffers(maps, data.stream_part(dataset, "train", None, 500, threads=4),
                                                 pin=False, threads=4))
    assert len(next(buffers)[0]) >= 500
    buffers.close()
    assert threading.active_count() == before


def test_id_maps_use_a_dense_table_for_movielens_shaped_ids(split):
    _, _, _, maps = split
    assert maps._users.table is not None and maps._items.table is not None
    users = np.arange(-5, maps.user_ids.max() + 5)
    assert np.array_equal(maps.user_idx(users), ids.lookup(maps.user_ids, users, offset=1, missing=0))


def test_a_seeded_streaming_run_has_the_same_bits_on_one_and_on_several_read_threads(split, monkeypatch):
    from safetensors.torch import load_file

    from bonmf_pipe.trainer import TrainSettings, train

    store, *_ = split
    settings = TrainSettings(epochs=2, batch_size=256, lr=0.01, memory_budget_mb=1, shuffle_buffer=2000,
                             early_stopping_patience=0)
    weights, losses = [], []
    for threads in (1, 4):
        monkeypatch.setattr(data, "read_threads", lambda n=threads: n)
        result = train(store, settings)
        assert result.mode == "streaming"
        weights.append(load_file(str(result.run_dir / "checkpoint.safetensors")))
        losses.append([e["train_loss"] for e in result.epochs])
    assert losses[0] == losses[1]
    assert weights[0].keys() == weights[1].keys()
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])
