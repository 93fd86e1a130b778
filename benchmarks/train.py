"""Train: ratings/s of one epoch streamed from the split's Parquet shards vs the same network
fed from tensors already in memory (resident mode), same settings and batch size, same run.

Each mode runs in its own process (``prepare`` with a memory budget that forces the mode), so
each peak RSS is that mode's alone, and each process then measures the ceiling: forward +
backward + optimiser step alone on batches already on the device. The modes alternate over
3 repeats (medians). Measured at batch 512 (the earlier default) and at the model's default
batch size for the device.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import paired, run_isolated
from benchmarks.ingest import make_sample

SIZES = {"smoke": (20_000, 300, 1_000), "quick": (1_000_000, 6_000, 9_000), "full": (5_000_000, 30_000, 40_000)}
STREAM_BUDGET_MB = 512  # sizes the streaming shuffle buffer (TrainSettings' default until it became 128)


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


def epoch_step(store: str, mode: str, model: str = "nmf", batch_size: int | None = None, max_rows: int = 0,
               threads: int = 1, ceiling: bool = False, stream_budget_mb: int = STREAM_BUDGET_MB,
               read_ahead: bool = True) -> dict[str, Any]:
    """One training epoch of ``model`` in ``mode`` (resident | streaming); ``max_rows`` > 0
    stops after about that many ratings (the figure is then ratings/s of the part done).
    ``batch_size`` None = the model's default for the device.

    ``ceiling``: afterwards, in the same process, time forward + backward + optimiser step
    alone over the same number of rows, cut beforehand into shuffled batches already on the
    device (no shuffling, gathering, unknown-ID draws or loss bookkeeping): what the training
    step itself allows, the bound both modes are measured against.

    ``read_ahead`` False: streaming reads each shuffle buffer in the training thread, between
    steps (the trainer before its background read-ahead; the baseline of ``read_ahead_pair``)."""
    import torch

    from bonmf_pipe import runtime
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.progress import Reporter
    from bonmf_pipe.trainer import TrainSettings
    from bonmf_pipe.trainer.epoch import epoch_batches, train_epoch
    from bonmf_pipe.trainer.setup import new_model, new_optimizer, prepare

    if not read_ahead:
        from bonmf_pipe.trainer import data

        data.read_ahead = iter  # the same items in the same order, read in this thread

    budget = 1 << 20 if mode == "resident" else 1  # MB: everything fits / must stream
    s = TrainSettings(model=model, batch_size=batch_size, memory_budget_mb=budget, device="auto",
                      threads=threads).effective()
    with runtime.deterministic(s.threads):  # as train() runs it
        t0 = time.perf_counter()
        ctx = prepare(Store.open(store), s, None, None)
        if mode == "streaming":  # stream with the default budget's shuffle buffer
            ctx.mode, ctx.resident = "streaming", {}
            ctx.settings = dataclasses.replace(s, memory_budget_mb=stream_budget_mb)
        prepare_s = time.perf_counter() - t0
        if ctx.mode != mode:
            raise RuntimeError(f"asked for {mode}, prepare chose {ctx.mode}")
        warm = []  # a few steps of a throwaway model first: allocator and kernels warm in both modes
        for b, _n, _lo in epoch_batches(ctx, "train", 3):
            warm.append(b)
            if len(warm) == 3:
                break
        _step_seconds(ctx, warm)
        net = new_model(ctx)
        opt = new_optimizer(net, ctx.settings)
        done, first = [0], []  # rows so far; (seconds, rows) when the first step had finished

        def count(event) -> None:
            if event.kind == "advance":
                done[0] += event.advance
                if not first:
                    first.append((time.perf_counter() - t0, done[0]))
                if max_rows and done[0] >= max_rows:
                    raise _Enough

        t0 = time.perf_counter()
        try:
            train_epoch(ctx, net, opt, 1, Reporter(count), "epoch")
        except _Enough:
            pass
        _sync(ctx.device)
        seconds = time.perf_counter() - t0
        out = {"mode": ctx.mode, "device": str(ctx.device), "batch_size": s.batch_size, "lr": s.lr, "rows": done[0],
               "n_train": ctx.n_train, "seconds": seconds, "prepare_seconds": prepare_s,
               "buffer_rows": ctx.buffer_rows() if ctx.mode == "streaming" else None,
               "ratings_per_s": done[0] / seconds,
               # the epoch's start (first permutation or shuffle buffer read and indexed, first step)
               # apart from the steps after it: a subsampled epoch would otherwise overweight the start
               "startup_seconds": first[0][0],
               "steady_ratings_per_s": (done[0] - first[0][1]) / max(seconds - first[0][0], 1e-9)}
        if ceiling:
            batches, rows = [], 0
            for b, n, _lo in epoch_batches(ctx, "train", 2):  # another epoch's order, cut ahead of time
                batches.append(b)
                rows += n
                if rows >= done[0]:
                    break
            out["ceiling_ratings_per_s"] = rows / _step_seconds(ctx, batches)
    return out


def _step_seconds(ctx, batches) -> float:
    """Seconds of forward + MSE/L2 loss + backward + step over ``batches`` (on the device)."""
    from bonmf_pipe.trainer.setup import new_model, new_optimizer

    net = new_model(ctx)
    opt = new_optimizer(net, ctx.settings)
    net.train()
    l2 = ctx.settings.l2
    t0 = time.perf_counter()
    for b in batches:
        pred, penalty = net(b.users, b.items, b.item_pos)
        loss = (pred - b.ratings).pow(2).mean() + l2 * penalty.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(ctx.device)
    return time.perf_counter() - t0


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _mode_pair(store: Path, batch_size: int | None, max_rows: int, repeats: int) -> dict[str, Any]:
    """Resident and streaming, ``repeats`` times interleaved (a busy machine slows both alike),
    each process measuring its own ceiling right after its epoch; medians over the repeats."""
    runs: dict[str, list[dict[str, Any]]] = {"resident": [], "streaming": []}
    for _ in range(repeats):
        for mode in runs:
            runs[mode].append(run_isolated("benchmarks.train:epoch_step", store=str(store), mode=mode,
                                           batch_size=batch_size, max_rows=max_rows, ceiling=True))
    res, stream = runs["resident"], runs["streaming"]
    ceiling_is = ("forward + backward + optimiser step alone on shuffled batches already on the device, "
                  "measured in the same process right after the mode's epoch (median over the repeats)")

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rs))

    def figure(rs: list[dict[str, Any]]) -> dict[str, Any]:
        """Steady-state ratings/s (the steps after the first) against the ceiling."""
        fig = paired(med(rs, "steady_ratings_per_s"), med(rs, "ceiling_ratings_per_s"), "ratings/s", ceiling_is)
        fig["runs"] = [[round(r["steady_ratings_per_s"]), round(r["ceiling_ratings_per_s"])] for r in rs]
        fig["with_startup"] = round(med(rs, "ratings_per_s"), 1)  # the measured rows over all their seconds
        fig["startup_seconds"] = round(med(rs, "startup_seconds"), 3)
        return fig

    def epoch_seconds(rs: list[dict[str, Any]]) -> float:
        return round(med(rs, "startup_seconds") + rs[0]["n_train"] / med(rs, "steady_ratings_per_s"), 2)

    return {
        "batch_size": res[0]["batch_size"], "lr": res[0]["lr"], "device": res[0]["device"],
        "rows_measured": res[0]["rows"], "repeats": repeats,
        "resident_ratings_per_s": figure(res),
        "streaming_ratings_per_s": figure(stream),
        "streaming_vs_resident": round(med(stream, "steady_ratings_per_s") / med(res, "steady_ratings_per_s"), 3),
        # startup + n_train / steady rate (this store's epoch fills one shuffle buffer; a larger one
        # pays the buffer's read and indexing once per buffer)
        "seconds_per_epoch_streaming": epoch_seconds(stream),
        "seconds_per_epoch_resident": epoch_seconds(res),
        "prepare_seconds_resident": round(med(res, "prepare_seconds"), 2),
        "prepare_seconds_streaming": round(med(stream, "prepare_seconds"), 2),
        "peak_rss_mb_streaming": max(r["peak_rss_mb"] for r in stream),
        "peak_rss_mb_resident": max(r["peak_rss_mb"] for r in res),
        "stream_shuffle_buffer_rows": stream[0]["buffer_rows"],
    }


def read_ahead_pair(store: Path, budget_mb: int, repeats: int) -> dict[str, Any]:
    """Whole streaming epochs (nmf, the CPU default batch) through shuffle buffers of a
    ``budget_mb`` budget, with the background read-ahead and without it (each buffer read
    between steps), interleaved; medians of the epoch's wall seconds."""
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(repeats):
        for on in (False, True):
            runs[on].append(run_isolated("benchmarks.train:epoch_step", store=str(store), mode="streaming",
                                         stream_budget_mb=budget_mb, read_ahead=on))
    on, off = (float(statistics.median(r["seconds"] for r in runs[k])) for k in (True, False))
    return {"budget_mb": budget_mb, "buffer_rows": runs[True][0]["buffer_rows"],
            "buffers_per_epoch": -(-runs[True][0]["n_train"] // runs[True][0]["buffer_rows"]),
            "epoch_seconds_read_ahead": round(on, 2), "epoch_seconds_inline": round(off, 2),
            "speedup": round(off / on, 3), "repeats": repeats,
            "peak_rss_mb_read_ahead": max(r["peak_rss_mb"] for r in runs[True]),
            "peak_rss_mb_inline": max(r["peak_rss_mb"] for r in runs[False]),
            "runs_seconds": {"read_ahead": [round(r["seconds"], 2) for r in runs[True]],
                             "inline": [round(r["seconds"], 2) for r in runs[False]]}}


def run(size: str, work: Path, max_rows: int = 0) -> dict[str, Any]:
    ratings, users, items = SIZES[size]
    sample = work / f"sample-{ratings}"
    make_sample(str(sample), ratings, users, items)
    store = work / f"store-train-{ratings}"
    built = run_isolated("benchmarks.train:build_store", sample=str(sample), store=str(store))
    by_batch = {}
    for batch in (512, None):  # the old default, then the device's default
        pair = _mode_pair(store, batch, max_rows, 1 if size == "smoke" else 3)
        by_batch[str(pair["batch_size"])] = pair
    return {
        "settings": {"ratings": ratings, "users": users, "items": items, "model": "nmf", "threads": 1,
                     "split": "random:0.7 seed 42", "device": pair["device"],
                     "rows_per_measurement": max_rows or "one epoch",
                     "modes": "each mode in its own process; resident = the split held as tensors on the device, "
                              "permuted once per epoch, gathered per batch; streaming = Parquet row groups through "
                              "a 512 MB budget's shuffle buffers"},
        "by_batch_size": by_batch,
        # the trainer reads the next shuffle buffer in a background thread: whole epochs with and without
        "streaming_read_ahead": read_ahead_pair(store, 64 if size != "smoke" else 1, 1 if size == "smoke" else 2),
        "split_seconds": round(built["split_seconds"], 2),
    }


# -- the evidence behind the default (batch_size, lr) pairs (trainer/models/registry.py) ------------


def batch_lr_runs(store: str, model: str, pairs: list[tuple[int, float]], seeds: list[int]) -> list[dict[str, Any]]:
    """Train ``model`` (TrainSettings defaults otherwise, CPU, 1 thread) once per (batch, lr) pair
    and seed (each seed its own random:0.7 split); one row per run: best valid RMSE, test RMSE,
    epochs, seconds of the training epochs."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.trainer import TrainSettings, train

    rows = []
    for batch, lr in pairs:
        for seed in seeds:
            s = TrainSettings(model=model, seed=seed, threads=1, device="cpu", batch_size=batch, lr=lr)
            r = train(Store.open(store), s)
            rows.append({"model": model, "batch_size": batch, "lr": lr, "seed": seed,
                         "valid_rmse": min(e["valid_rmse"] for e in r.epochs), "test_rmse": r.test_rmse,
                         "epochs_run": len(r.epochs), "best_epoch": r.best_epoch,
                         "fit_seconds": sum(e["seconds"] for e in r.epochs)})
    return rows


def summarize_batch_lr(rows: list[dict[str, Any]], reference: tuple[int, float] = (512, 1e-3)) -> dict[str, Any]:
    """Per model and (batch, lr): mean valid/test RMSE over the seeds, and the paired valid RMSE
    difference against ``reference`` (the pre-change default) with its 95% interval."""
    from bonmf_pipe.pipeline.stats import mean_std, paired_difference

    out: dict[str, Any] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        by = {(r["batch_size"], r["lr"], r["seed"]): r for r in mine}
        table = {}
        for batch, lr in dict.fromkeys((r["batch_size"], r["lr"]) for r in mine):
            seeds = sorted(s for (b, l_, s) in by if (b, l_) == (batch, lr))
            entry: dict[str, Any] = {"seeds": seeds}
            for k in ("valid_rmse", "test_rmse", "epochs_run", "fit_seconds"):
                mean, std = mean_std([by[(batch, lr, s)][k] for s in seeds])
                entry[k] = {"mean": round(mean, 5), "std": None if std != std else round(std, 5)}
            both = [s for s in seeds if (*reference, s) in by]
            if (batch, lr) != reference and len(both) >= 2:
                d = paired_difference([by[(batch, lr, s)]["valid_rmse"] for s in both],
                                      [by[(*reference, s)]["valid_rmse"] for s in both], 0.95).as_dict()
                entry[f"valid_rmse_minus_batch{reference[0]}"] = {
                    k: round(v, 5) if isinstance(v, float) else v for k, v in d.items()}
            table[f"{batch}@{lr:g}"] = entry
        out[model] = table
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.train --read-ahead [--budget-mb 64] [--repeats 3]``: the read-ahead
    pair alone on the full train store (built by ``--suite train``), into ``train-read-ahead-<machine>.json``."""
    import argparse

    from benchmarks.common import RESULTS_DIR, WORK_DIR, machine_info, write_results

    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=main.__doc__)
    p.add_argument("--read-ahead", action="store_true", required=True)
    p.add_argument("--budget-mb", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", type=Path, default=WORK_DIR)
    args = p.parse_args(argv)
    ratings, users, items = SIZES["full"]
    sample, store = args.work / f"sample-{ratings}", args.work / f"store-train-{ratings}"
    make_sample(str(sample), ratings, users, items)
    run_isolated("benchmarks.train:build_store", sample=str(sample), store=str(store))
    result = {"settings": {"ratings": ratings, "model": "nmf", "threads": 1, "batch": "CPU default"},
              "streaming_read_ahead": read_ahead_pair(store, args.budget_mb, args.repeats)}
    print(f"wrote {write_results('train-read-ahead', result, machine_info(), RESULTS_DIR)}")


if __name__ == "__main__":
    main()
