"""Distributed training: ratings/s of 1 process against 2 processes under torchrun (gloo on
the CPU, NCCL where a machine has 2+ GPUs), at the same global batch size, in both data modes
(resident: ratings held as tensors; streaming: read from the split's row groups, each rank its
own), pairs in one run.

``python -m benchmarks.distributed [--smoke] [--repeats N] [--baseline DIR] [--out DIR]`` writes
``results/distributed-<machine>.json``. Each figure is a training epoch of the trainer itself
(``train``, model nmf: the BoNMF network without side vectors, so any synthetic store works),
timed by the trainer (the epoch's ``ratings_per_s``: training rows / seconds of the epoch,
all-reduces included, validation and loading excluded). 1 and 2 processes alternate within
each repeat, batch size and mode, so the machine's load falls on both alike; the figures are
medians over the repeats. Scaling efficiency = median rate(2) / (2 x median rate(1)).

``--baseline DIR``: a source tree of another commit (``git worktree add DIR COMMIT``); its
``bonmf_pipe`` also trains the 2-process streaming runs, interleaved with this tree's, so a
change to the streaming path is measured against what it replaced in the same run.

The read path alone (``read_path``, in this process): one epoch of training rows from the
split's row groups through the shuffle buffer into index arrays, as one process reads it (every
row group) against each rank of 2 (its own row groups): what streaming DDP saves each rank.
Before each rank read only its own part, every rank read every row group.

Each 2-process run also times the gloo/NCCL all-reduce of one step's gradients alone (the
dense embedding tables and the MLP), the cost every step pays whatever its batch size: it is
what multi-process training must amortise.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, WORK_DIR, machine_info, paired, write_results
from benchmarks.ingest import make_sample

# ratings, users, items of the synthetic sample; batch sizes compared
SIZES = {"smoke": (30_000, 400, 1_000, (512,)), "full": (400_000, 4_000, 6_000, (512, 4096))}
EPOCHS = 2  # the second epoch is the figure (the first pays allocator and page-cache warm-up)
# The split's row groups: streaming ranks divide them, so a split of a few 64K-row groups (the
# default) would give 2 ranks very unequal shares of 400k ratings; 8,192 rows gives ~49 groups.
ROW_GROUP = 8_192
# --memory-budget-mb of each mode: resident holds the 400k ratings (~38 MB); streaming's buffer
# of 8 MB holds ~87k rows, so each rank streams its row groups through a few buffers an epoch
# (the smoke sample's 30k ratings stream with 1 MB).
BUDGET_MB = {"resident": 512, "streaming": 8}
SMOKE_STREAMING_MB = 1


def worker(store: str, batch_size: int, name: str, budget_mb: int = 512, code: str = "") -> None:
    """One process of a measurement (plain, or one rank under torchrun): train, print JSON.
    ``code``: a source tree whose ``bonmf_pipe`` to train with (a baseline commit)."""
    if code:
        sys.path.insert(0, code)
    import torch

    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.runtime import world
    from bonmf_pipe.trainer import TrainSettings, train

    w = world()
    if w.size > 1:  # our own group, so the all-reduce can be timed after the run (train leaves it open)
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    s = TrainSettings(model="nmf", epochs=EPOCHS, batch_size=batch_size, device="auto", threads=1, name=name,
                      early_stopping_patience=0, memory_budget_mb=budget_mb)
    result = train(Store.open(store), s)
    out: dict[str, Any] = {"run_id": result.run_id, "world_size": w.size, "mode": result.mode,
                           "epochs": [{k: e[k] for k in ("epoch", "seconds", "ratings_per_s", "valid_rmse")}
                                      for e in result.epochs],
                           "test_rmse": result.test_rmse}
    if w.size > 1:
        out["allreduce"] = _time_allreduce(result)
        gc.collect()  # the trainer's DDP wrapper (a reference cycle) goes before the group
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if w.rank == 0:
        import bonmf_pipe

        out["code"] = "baseline" if code and Path(bonmf_pipe.__file__).is_relative_to(code) else "this tree"
        print("RESULT " + json.dumps(out), flush=True)


def _time_allreduce(result) -> dict[str, Any]:
    """Seconds of one all-reduce of the gradient bytes of the run's model (median of 20)."""
    import torch
    import torch.distributed as td
    from safetensors.torch import load_file

    weights = load_file(str(result.run_dir / "checkpoint.safetensors"))
    numel = sum(v.numel() for k, v in weights.items() if k.startswith("model/"))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    t = torch.ones(numel, device=device)
    times = []
    for _ in range(23):
        td.barrier()
        t0 = time.perf_counter()
        td.all_reduce(t)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times = sorted(times[3:])
    return {"parameters": numel, "megabytes": round(numel * 4 / 2**20, 2),
            "median_ms": round(times[len(times) // 2] * 1e3, 3)}


def _measure(store: Path, batch_size: int, procs: int, mode: str, budget_mb: int, code: Path | None = None
             ) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    name = f"bench-w{procs}-b{batch_size}-{mode}" + ("-baseline" if code else "")
    args = ["-m", "benchmarks.distributed", "--worker", str(store), str(batch_size), name, str(budget_mb),
            str(code or "")]
    if procs == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", str(procs), *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1], env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    if out["mode"] != mode:
        raise RuntimeError(f"{name}: the run trained in {out['mode']} mode, not {mode}")
    out["wall_seconds"] = round(wall, 1)
    out["load_average"] = os.getloadavg()
    return out


def _store(sample: Path, store: Path) -> float:
    """Ingest ``sample`` into ``store`` (once) and write its random:0.7 split (seed 42) in row
    groups of ROW_GROUP rows; the seconds ingest took."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ingest import IngestSettings, ingest
    from bonmf_pipe.trainer import make_split

    t0 = time.perf_counter()
    if not (store / ".bench-ingested").exists():
        shutil.rmtree(store, ignore_errors=True)
        ingest(Store.open(store, create=True), IngestSettings(path=sample))
        (store / ".bench-ingested").write_text("ok")
    seconds = time.perf_counter() - t0
    make_split(Store.open(store), "random:0.7", 42, row_group_size=ROW_GROUP)
    return seconds


def read_path(store: Path, budget_mb: int, repeats: int) -> dict[str, Any]:
    """Seconds to read one epoch's training rows into index arrays: all row groups (one process)
    against rank 0's and rank 1's own row groups of 2 (medians over ``repeats``, interleaved)."""
    from bonmf_pipe import runtime
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.trainer import data, make_split, split_dataset

    st = Store.open(store)
    split_id = make_split(st, "random:0.7", 42, row_group_size=ROW_GROUP)
    dataset = split_dataset(st, split_id)
    maps = data.build_id_maps(st, split_id)
    buffer_rows = budget_mb * 2**20 // data.BYTES_PER_ROW

    def epoch(rank: int, world: int, n: int) -> tuple[float, int]:
        rng = runtime.numpy_rng(42, "shuffle", n)
        t0 = time.perf_counter()
        frags = data.own_fragments(dataset, "train", rng, rank, world)
        rows = sum(len(data.to_indices(maps, t)[0]) for t in data.stream_fragments(frags, "train", rng, buffer_rows))
        return time.perf_counter() - t0, rows

    times: dict[str, list[float]] = {"one_process": [], "rank_0_of_2": [], "rank_1_of_2": []}
    rows: dict[str, int] = {}
    for n in range(repeats + 1):  # the first round warms the page cache and is not kept
        for key, (rank, world) in {"one_process": (0, 1), "rank_0_of_2": (0, 2), "rank_1_of_2": (1, 2)}.items():
            seconds, rows[key] = epoch(rank, world, n)
            if n:
                times[key].append(seconds)
    med = {k: _median(v) for k, v in times.items()}
    return {"rows": rows, "seconds": {k: round(v, 4) for k, v in med.items()},
            "slower_rank_vs_one_process": paired(max(med["rank_0_of_2"], med["rank_1_of_2"]), med["one_process"],
                                                 "s", "one process reading every row group, same run (medians)"),
            "row_groups": len(data.own_fragments(dataset, "train", None))}


def _rate(m: dict[str, Any]) -> float:
    return m["epochs"][-1]["ratings_per_s"]


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def run(size: str, work: Path, repeats: int, baseline: Path | None = None) -> dict[str, Any]:
    ratings, users, items, batches = SIZES[size]
    sample = work / f"sample-{ratings}"
    make_sample(str(sample), ratings, users, items)
    store = work / f"store-distributed-{ratings}-rg{ROW_GROUP}"
    ingest_seconds = _store(sample, store)
    budgets = {**BUDGET_MB, **({"streaming": SMOKE_STREAMING_MB} if size == "smoke" else {})}
    out: dict[str, Any] = {
        "settings": {"ratings": ratings, "users": users, "items": items, "model": "nmf", "split": "random:0.7 seed 42",
                     "split_row_group_rows": ROW_GROUP, "memory_budget_mb": budgets, "threads_per_process": 1,
                     "epochs": EPOCHS, "repeats": repeats,
                     "figure": "the last epoch's ratings/s, median over the repeats"},
        "ingest_seconds": round(ingest_seconds, 1), "by_batch_size": {},
    }
    out["read_path"] = read_path(store, budgets["streaming"], repeats)
    runs: dict[tuple[int, str], dict[str, list]] = {}
    for _ in range(repeats):  # interleaved: the load of the moment falls on every variant alike
        for batch in batches:
            for mode, budget in budgets.items():
                got = runs.setdefault((batch, mode), {"one": [], "two": [], "two_baseline": []})
                got["one"].append(_measure(store, batch, 1, mode, budget))
                got["two"].append(_measure(store, batch, 2, mode, budget))
                if baseline is not None and mode == "streaming":
                    got["two_baseline"].append(_measure(store, batch, 2, mode, budget, baseline))
    for (batch, mode), got in runs.items():
        r1, r2 = [_rate(m) for m in got["one"]], [_rate(m) for m in got["two"]]
        row: dict[str, Any] = {
            "ratings_per_s_2_vs_1": paired(_median(r2), _median(r1), "ratings/s",
                                           "1 process, same global batch, same run (medians)"),
            "scaling_efficiency": round(_median(r2) / (2 * _median(r1)), 4),
            "ratio_per_repeat": [round(b / a, 4) for a, b in zip(r1, r2)],
            "one_process_ratings_per_s": [round(r) for r in r1], "two_processes_ratings_per_s": [round(r) for r in r2],
            "test_rmse_difference": round(_median([abs(b["test_rmse"] - a["test_rmse"])
                                                   for a, b in zip(got["one"], got["two"])]), 5),
            "allreduce": got["two"][-1]["allreduce"],
            "steps_per_epoch": -(-int(ratings * 0.7 * 0.95) // batch),
            "one_process": got["one"], "two_processes": got["two"],
        }
        if got["two_baseline"]:
            rb = [_rate(m) for m in got["two_baseline"]]
            row["two_processes_vs_baseline"] = paired(_median(r2), _median(rb), "ratings/s",
                                                      f"2 processes with the baseline tree {baseline.name}, same run")
            row["baseline_scaling_efficiency"] = round(_median(rb) / (2 * _median(r1)), 4)
            row["baseline_two_processes_ratings_per_s"] = [round(r) for r in rb]
            row["two_processes_baseline"] = got["two_baseline"]
        out["by_batch_size"].setdefault(str(batch), {})[mode] = row
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1], int(argv[2]), argv[3], int(argv[4]), argv[5] if len(argv) > 5 else "")
        return
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sample, one batch size (proves the code path)")
    p.add_argument("--repeats", type=int, default=3, help="measurements of each variant, interleaved")
    p.add_argument("--baseline", type=Path, default=None,
                   help="source tree of another commit whose 2-process streaming runs to measure alongside")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    p.add_argument("--work", type=Path, default=WORK_DIR, help="samples and stores (reused between runs)")
    args = p.parse_args(argv)
    size = "smoke" if args.smoke else "full"
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = run(size, args.work, args.repeats, args.baseline.resolve() if args.baseline else None)
    results["size"] = size
    results["suite_seconds"] = round(time.perf_counter() - t0, 1)
    path = write_results("distributed", results, machine_info(), args.out)
    print(json.dumps({b: {m: {k: v for k, v in r.items() if k not in ("one_process", "two_processes", "two_processes_baseline")}
                          for m, r in modes.items()} for b, modes in results["by_batch_size"].items()}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
