"""Streaming: many small shards, a tiny memory budget; every row once per epoch, shuffled,
bounded buffers and host memory, and the model still learns."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bonmf_pipe import runtime
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.runtime import World
from bonmf_pipe.trainer import TrainSettings, data, make_split, read_run_config, split_dataset, train
from bonmf_pipe.trainer.data import count_part, stream_part
from bonmf_pipe.trainer.distributed import Dist
from bonmf_pipe.trainer.epoch import epoch_batches
from bonmf_pipe.trainer.setup import prepare
from bonmf_pipe.trainer.splits import split_counts, split_table_name

from .conftest import build_store

SETTINGS = TrainSettings(
    epochs=4, batch_size=256, lr=0.01, l2=0.01, memory_budget_mb=1, shuffle_buffer=2000, early_stopping_patience=0
)


def _sharded_store(tmp_path) -> tuple[Store, str]:
    store = build_store(tmp_path / "store", n_users=600, per_user=40, rows_per_file=1000, row_group_size=250)
    split_id = make_split(
        store, SETTINGS.split, SETTINGS.seed, valid_fraction=SETTINGS.valid_fraction, rows_per_file=1500, row_group_size=300
    )
    return store, split_id


def test_stream_part_reads_every_row_once_in_a_seeded_order_with_bounded_buffers(tmp_path):
    store, split_id = _sharded_store(tmp_path)
    assert len(store.table_files(split_table_name(split_id))) >= 10
    dataset = split_dataset(store, split_id)
    n_train = count_part(dataset, "train")

    def epoch(seed):
        tables = list(stream_part(dataset, "train", np.random.default_rng(seed), 2000))
        assert max(t.num_rows for t in tables) <= 2000 + 300  # the buffer, plus at most one row group
        return np.concatenate([t.column("user_id").to_numpy() * 100_000 + t.column("item_id").to_numpy() for t in tables])

    a, b, again = epoch([42, 1]), epoch([42, 2]), epoch([42, 1])
    assert len(a) == n_train == len(np.unique(a))  # every train row exactly once
    assert np.array_equal(np.sort(a), np.sort(b)) and not np.array_equal(a, b)  # reshuffled each epoch
    assert np.array_equal(a, again)  # reproducible from the seed


def test_split_counts_from_row_group_statistics_equal_a_full_count(tmp_path):
    store, split_id = _sharded_store(tmp_path)
    parts = split_dataset(store, split_id).to_table(columns=["part"]).column("part").to_pylist()
    assert split_counts(store, split_id) == {p: parts.count(p) for p in ("train", "valid", "test")}
    # most row groups hold one part (counted from statistics); the test really has mixed ones
    files = split_dataset(store, split_id).files
    mixed = sum(
        len(set(pq.ParquetFile(f).read_row_group(g, columns=["part"]).column("part").to_pylist())) > 1
        for f in files for g in range(pq.ParquetFile(f).metadata.num_row_groups)
    )
    assert mixed >= 2


def test_training_streams_with_a_tiny_budget_learns_and_keeps_memory_bounded(tmp_path):
    store, split_id = _sharded_store(tmp_path)
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        result = train(store, SETTINGS)
    finally:
        done.set()
        watcher.join()
    config = read_run_config(store, result.run_id)
    assert result.mode == config["mode"] == "streaming"
    assert config["split_id"] == split_id
    losses = [e["train_loss"] for e in result.epochs]
    assert losses[-1] < 0.8 * losses[0]
    test = pq.read_table(result.run_dir / "predictions.parquet")
    assert result.test_rmse < 0.8 * float(np.std(test.column("rating").to_numpy()))
    assert peak[0] - base < 300 * 2**20, f"RSS grew by {(peak[0] - base) / 2**20:.0f} MB"


class _Ranks(Dist):
    """Rank ``r`` of ``world`` without a process group: ``sum`` returns the given totals (what
    the all-reduce of every rank's row count would)."""

    def __init__(self, rank: int, world: int, totals: list[float]):
        super().__init__(World(rank, world, rank))
        self.totals = totals

    def sum(self, values: list[float]) -> list[float]:
        return list(self.totals)


def test_under_torchrun_each_rank_streams_its_own_row_groups_in_equal_numbers_of_steps(tmp_path):
    store, split_id = _sharded_store(tmp_path)
    settings = dataclasses.replace(SETTINGS, batch_size=257).effective()  # local batches of 129 and 128 rows
    ctx = prepare(store, settings, None, None)
    assert ctx.mode == "streaming"
    world, rng = 2, lambda: runtime.numpy_rng(settings.seed, "shuffle", 3)
    frags = [data.own_fragments(ctx.dataset, "train", rng(), r, world) for r in range(world)]
    assert sorted(f.row_groups[0].id + 1000 * ctx.dataset.files.index(f.path) for fs in frags for f in fs) == sorted(
        f.row_groups[0].id + 1000 * ctx.dataset.files.index(f.path) for f in data.own_fragments(ctx.dataset, "train", None))
    counts = [float(data.count_fragments(f, "train")) for f in frags]
    assert sum(counts) == ctx.n_train and counts[0] != counts[1]  # uneven shares: the case that must not hang
    steps = []
    for r in range(world):
        ctx.dist = _Ranks(r, world, counts)
        steps.append([(len(b.users), rows, lo, b.users * 100_000 + b.items) for b, rows, lo in epoch_batches(ctx, "train", 3)])
    assert len(steps[0]) == len(steps[1])  # every rank takes every step (each is a DDP all-reduce)
    for (n0, rows0, lo0, _), (n1, rows1, lo1, _) in zip(*steps):
        assert rows0 == rows1 == n0 + n1 <= 257 and lo0 == 0 and lo1 == n0
    assert [n for n, *_ in steps[0][:-2]] == [129] * (len(steps[0]) - 2)  # full local batches across buffers
    seen = np.concatenate([k.numpy() for rank in steps for *_, k in rank])
    train_rows = data.to_indices(ctx.maps, ctx.dataset.to_table(filter=pc.field("part") == "train"))
    assert len(seen) == ctx.n_train and np.array_equal(np.sort(seen), np.sort(train_rows[0] * 100_000 + train_rows[1]))
    # scoring (no step to agree on): each rank goes through its own rows, together every valid row once
    valid = sum(len(b.users) for r in range(world) for b, *_ in _valid_share(ctx, r, world))
    assert valid == ctx.n_valid


def _valid_share(ctx, rank: int, world: int):
    ctx.dist = _Ranks(rank, world, [])
    return list(epoch_batches(ctx, "valid", None))
