"""Killed runs resume to the same vectors; --shard i/N processes add up to one run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bonmf_pipe.featurestore.features import feature_dir, item_partition, resolve_feature_set
from bonmf_pipe.featurestore.schema import ITEMS
from bonmf_pipe.featurestore.verify import verify_store
from bonmf_pipe.pipeline.encode import EncodeSettings, encode

from .conftest import N_TEXTS, THREADS, ingest_into, vectors

# Resumed or sharded runs put items in other batches (other neighbours, other padding
# widths, other kernel blockings), which moves float32 results by ~1e-7 (texts) to ~5e-6
# (posters); stored as float16 most values are bit-identical, the rest one float16 step off.
ATOL = 2e-3

_SLOW_ENCODE = """
import sys, time
from bonmf_pipe.featurestore import Store
from bonmf_pipe.pipeline.encode import EncodeSettings, encode
slow = lambda event: time.sleep(0.25) if event.kind == "forward" else None
encode(Store.open(sys.argv[1]), EncodeSettings(modalities=("text",), rows_per_shard=16, batch_size=8, cpu_threads=1),
       forward_hook=slow)
"""


def _wait_for_shards(folder, proc, timeout=120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            files = json.loads((folder / "manifest.json").read_text())["files"]
        except (FileNotFoundError, json.JSONDecodeError):
            files = []
        if files:
            return len(files)
        time.sleep(0.02)
    raise AssertionError("the encode subprocess committed no shard in time")


def test_killed_encode_leaves_a_valid_store_and_resumes_to_the_clean_vectors(encoded, catalogue, tmp_path):
    store = ingest_into(tmp_path / "store", catalogue)
    key = encoded.summary.of("text").encoder_key
    folder = feature_dir(store, "text", key)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_ENCODE, str(store.root)], stderr=subprocess.PIPE)
    try:
        _wait_for_shards(folder, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    report = verify_store(store)
    assert report.ok, report.problems
    committed = resolve_feature_set(store, "text").rows
    assert 16 <= committed < N_TEXTS  # killed after its first shard, long before the end
    summary = encode(store, EncodeSettings(modalities=("text",), **THREADS))
    assert summary.of("text").encoder_key == key
    assert (summary.of("text").encoded, summary.of("text").skipped) == (N_TEXTS - committed, committed)
    assert verify_store(store).ok and not verify_store(store).problems  # the resumed run tidied up
    ids, vecs = vectors(store, "text")
    clean_ids, clean = vectors(encoded.store, "text")
    assert np.array_equal(ids, clean_ids)
    np.testing.assert_allclose(vecs, clean, atol=ATOL, rtol=0)
    assert (vecs == clean).all(axis=1).mean() > 0.5


def _keep_posters(store, n: int) -> int:
    """Leave only the first ``n`` posters in the items table (fewer posters to encode)."""
    items = store.read_table("items")
    with_poster = sorted(i for i, s in zip(items.column("item_id").to_pylist(), items.column("poster_sha256").to_pylist(),
                                            strict=True) if s)
    keep = pa.array(np.isin(items.column("item_id").to_numpy(), with_poster[:n]))
    for col in ("poster_path", "poster_sha256"):
        items = items.set_column(items.schema.get_field_index(col), col, pc.if_else(keep, items.column(col), None))
    with store.writer("items", ITEMS, store.manifest("items").settings) as w:
        w.write(items)
        w.commit()
    return n


def test_two_shard_processes_add_up_to_one_run(encoded, catalogue, tmp_path):
    """--shard 1/2 in a CLI subprocess while --shard 0/2 runs in this process, into one store."""
    store = ingest_into(tmp_path / "store", catalogue)
    posters = _keep_posters(store, 60)
    cmd = [sys.executable, "-m", "bonmf_pipe.cli", "encode", "--store", str(store.root), "--cpu-threads", "1",
           "--rows-per-shard", "20", "--num-workers", "0", "--shard", "1/2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        mine = encode(store, EncodeSettings(shard=(0, 2), rows_per_shard=20, num_workers=0, **THREADS))
    finally:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert 0 < mine.of("text").items < N_TEXTS and 0 < mine.of("image").items < posters
    assert verify_store(store).ok
    for modality, total in (("text", N_TEXTS), ("image", posters)):
        fs = resolve_feature_set(store, modality)
        assert fs.key == encoded.summary.of(modality).encoder_key and fs.rows == total
        ids, vecs = vectors(store, modality)
        clean_ids, clean = vectors(encoded.store, modality)
        rows = np.isin(clean_ids, ids)
        assert rows.sum() == total
        assert np.array_equal(ids, clean_ids[rows])
        np.testing.assert_allclose(vecs, clean[rows], atol=ATOL, rtol=0)
        # Each shard file holds items of one partition only: the processes split the work.
        parts = {frozenset(item_partition(pq.read_table(p, columns=["item_id"]).column("item_id"), 2).tolist())
                 for p in fs.folder.glob("part-*.parquet")}
        assert parts == {frozenset({0}), frozenset({1})}


def test_item_partition_is_stable():
    ids = np.arange(1, 4001)
    parts = item_partition(ids, 4)
    assert item_partition(ids[::-1], 4).tolist() == parts[::-1].tolist()  # no dependence on order
    assert sorted(np.bincount(parts).tolist())[0] > 900  # balanced
    assert item_partition(np.array([1, 2, 3, 3114, 527]), 7).tolist() == [2, 4, 2, 0, 0]  # pinned: changing the rule breaks existing --shard layouts
