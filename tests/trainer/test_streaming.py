"""Streaming: many small shards, a tiny memory budget; every row once per epoch, shuffled,
bounded buffers and host memory, and the model still learns."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pyarrow.parquet as pq

from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.trainer import TrainSettings, make_split, read_run_config, split_dataset, train
from bonmf_pipe.trainer.data import count_part, stream_part
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
