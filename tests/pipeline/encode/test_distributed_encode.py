"""encode under torchrun: each rank encodes its own hash partition into the one store, and the
result equals a single-process encode (same rows, vectors within the float16 rounding)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore.features import item_partition, resolve_feature_set
from bonmf_pipe.featurestore.verify import verify_store
from bonmf_pipe.pipeline.encode import EncodeSettings, encode
from bonmf_pipe.pipeline.encode.run import torchrun_shard

from .conftest import N_TEXTS, THREADS, ingest_into, vectors
from .test_resume_and_shards import ATOL

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_two_torchrun_processes_encode_what_one_process_encodes(catalogue, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one = ingest_into(tmp_path / "one", catalogue)
    single = encode(one, EncodeSettings(modalities=("text",), rows_per_shard=32, **THREADS))
    two = ingest_into(tmp_path / "two", catalogue)
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "bonmf_pipe.cli", "encode",
           "--store", str(two.root), "--modality", "text", "--cpu-threads", "1", "--rows-per-shard", "32"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    assert verify_store(two).ok
    fs = resolve_feature_set(two, "text")
    assert fs.key == single.of("text").encoder_key and fs.rows == N_TEXTS
    ids, vecs = vectors(two, "text")
    clean_ids, clean = vectors(one, "text")
    assert np.array_equal(ids, clean_ids) and len(ids) == N_TEXTS
    np.testing.assert_allclose(vecs, clean, atol=ATOL, rtol=0)
    # no --shard given: rank r took partition r of 2, and each wrote only its own items
    parts = {frozenset(item_partition(pq.read_table(p, columns=["item_id"]).column("item_id"), 2).tolist())
             for p in fs.folder.glob("part-*.parquet")}
    assert parts == {frozenset({0}), frozenset({1})}


def test_the_torchrun_rank_is_the_shard_and_an_explicit_shard_is_refused(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_shard(EncodeSettings(shard=(1, 3))).shard == (1, 3)  # no torchrun: as given
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert torchrun_shard(EncodeSettings()).shard == (2, 4)
    with pytest.raises(ConfigError, match="Drop --shard"):
        torchrun_shard(EncodeSettings(shard=(0, 2)))
