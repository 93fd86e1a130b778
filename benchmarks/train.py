"""Train: ratings/s of one epoch streamed from the split's Parquet shards vs the same network
fed from tensors already in memory (resident mode), same settings and batch size, same run.

Each mode runs in its own process (``prepare`` with a memory budget that forces the mode), so
each peak RSS is that mode's alone. The ceiling is the resident epoch.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.common import paired, run_isolated
from benchmarks.ingest import make_sample

SIZES = {"smoke": (20_000, 300, 1_000), "quick": (1_000_000, 6_000, 9_000), "full": (5_000_000, 30_000, 40_000)}
STREAM_BUDGET_MB = 512  # TrainSettings' default memory budget: sizes the streaming shuffle buffer


class _Enough(Exception):
    """Raised from the progress callback to end a subsampled epoch."""


def build_store(sample: str, store: str) -> dict[str, Any]:
    """Ingest ``sample`` into ``store`` (once) and write its random:0.7 split (seed 42)."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ingest import IngestSettings, ingest
    from bonmf_pipe.trainer import make_split

    t0 = time.perf_counter()
    if not (Path(store) / ".bench-ingested").exists():
        shutil.rmtree(store, ignore_errors=True)
        ingest(Store.open(store, create=True), IngestSettings(path=Path(sample)))
        (Path(store) / ".bench-ingested").write_text("ok")
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    make_split(Store.open(store), "random:0.7", 42)
    return {"ingest_seconds": ingest_s, "split_seconds": time.perf_counter() - t0}


def epoch_step(store: str, mode: str, model: str = "nmf", batch_size: int = 512, max_rows: int = 0,
               threads: int = 0) -> dict[str, Any]:
    """One training epoch of ``model`` in ``mode`` (resident | streaming); ``max_rows`` > 0
    stops after about that many ratings (the figure is then ratings/s of the part done)."""
    import torch

    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.progress import Reporter
    from bonmf_pipe.trainer import TrainSettings
    from bonmf_pipe.trainer.epoch import train_epoch
    from bonmf_pipe.trainer.setup import new_model, new_optimizer, prepare

    if threads:
        torch.set_num_threads(threads)
    budget = 1 << 20 if mode == "resident" else 1  # MB: everything fits / must stream
    s = TrainSettings(model=model, batch_size=batch_size, memory_budget_mb=budget, device="auto").effective()
    t0 = time.perf_counter()
    ctx = prepare(Store.open(store), s, None, None)
    if mode == "streaming":  # stream with the default budget's shuffle buffer
        ctx.mode, ctx.resident = "streaming", {}
        ctx.settings = dataclasses.replace(s, memory_budget_mb=STREAM_BUDGET_MB)
    prepare_s = time.perf_counter() - t0
    if ctx.mode != mode:
        raise RuntimeError(f"asked for {mode}, prepare chose {ctx.mode}")
    net = new_model(ctx)
    opt = new_optimizer(net, ctx.settings)
    done = [0]

    def count(event) -> None:
        if event.kind == "advance":
            done[0] += event.advance
            if max_rows and done[0] >= max_rows:
                raise _Enough

    t0 = time.perf_counter()
    try:
        train_epoch(ctx, net, opt, 1, Reporter(count), "epoch")
    except _Enough:
        pass
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"mode": ctx.mode, "device": str(ctx.device), "rows": done[0], "n_train": ctx.n_train,
            "seconds": seconds, "prepare_seconds": prepare_s,
            "buffer_rows": ctx.buffer_rows() if ctx.mode == "streaming" else None, "ratings_per_s": done[0] / seconds}


def run(size: str, work: Path, max_rows: int = 0) -> dict[str, Any]:
    ratings, users, items = SIZES[size]
    sample = work / f"sample-{ratings}"
    make_sample(str(sample), ratings, users, items)
    store = work / f"store-train-{ratings}"
    built = run_isolated("benchmarks.train:build_store", sample=str(sample), store=str(store))
    res = run_isolated("benchmarks.train:epoch_step", store=str(store), mode="resident", max_rows=max_rows)
    stream = run_isolated("benchmarks.train:epoch_step", store=str(store), mode="streaming", max_rows=max_rows)
    return {
        "settings": {"ratings": ratings, "users": users, "items": items, "model": "nmf", "batch_size": 512,
                     "split": "random:0.7 seed 42", "device": stream["device"], "rows_per_epoch": stream["rows"],
                     "stream_shuffle_buffer_rows": stream["buffer_rows"]},
        "ratings_per_s": paired(stream["ratings_per_s"], res["ratings_per_s"], "ratings/s",
                                "the same network fed from tensors already in memory (resident mode)"),
        "seconds_per_epoch_streaming": round(stream["seconds"] * stream["n_train"] / max(stream["rows"], 1), 2),
        "seconds_per_epoch_resident": round(res["seconds"] * res["n_train"] / max(res["rows"], 1), 2),
        "peak_rss_mb_streaming": stream["peak_rss_mb"],
        "peak_rss_mb_resident": res["peak_rss_mb"],
        "split_seconds": round(built["split_seconds"], 2),
    }
