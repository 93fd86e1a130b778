"""Distributed training: ratings/s of 1 process against 2 processes under torchrun (gloo on
the CPU, NCCL where a machine has 2+ GPUs), at the same global batch size, pairs in one run.

``python -m benchmarks.distributed [--smoke] [--out DIR]`` writes
``results/distributed-<machine>.json``. Each figure is a training epoch of the trainer itself
(``train``, model nmf: the BoNMF network without side vectors, so any synthetic store works),
timed by the trainer (the epoch's ``ratings_per_s``: training rows / seconds of the epoch,
all-reduces included, validation and loading excluded). 1 and 2 processes alternate per batch
size, so the machine's load falls on both alike. Scaling efficiency = rate(2) / (2 x rate(1)).

Each 2-process run also times the gloo/NCCL all-reduce of one step's gradients alone (the
dense embedding tables and the MLP), the cost every step pays whatever its batch size: it is
what multi-process training must amortise.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
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


def worker(store: str, batch_size: int, name: str) -> None:
    """One process of a measurement (plain, or one rank under torchrun): train, print JSON."""
    import torch

    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.runtime import world
    from bonmf_pipe.trainer import TrainSettings, train

    w = world()
    if w.size > 1:  # our own group, so the all-reduce can be timed after the run (train leaves it open)
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    s = TrainSettings(model="nmf", epochs=EPOCHS, batch_size=batch_size, device="auto", threads=1, name=name,
                      early_stopping_patience=0)
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


def _measure(store: Path, batch_size: int, procs: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    args = ["-m", "benchmarks.distributed", "--worker", str(store), str(batch_size), f"bench-w{procs}-b{batch_size}"]
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
    out["wall_seconds"] = round(wall, 1)
    out["load_average"] = os.getloadavg()
    return out


def run(size: str, work: Path) -> dict[str, Any]:
    from benchmarks.train import build_store

    ratings, users, items, batches = SIZES[size]
    sample = work / f"sample-{ratings}"
    make_sample(str(sample), ratings, users, items)
    store = work / f"store-distributed-{ratings}"
    built = build_store(str(sample), str(store))
    out: dict[str, Any] = {
        "settings": {"ratings": ratings, "users": users, "items": items, "model": "nmf", "split": "random:0.7 seed 42",
                     "threads_per_process": 1, "epochs": EPOCHS, "figure": "the last epoch's ratings/s"},
        "ingest_seconds": round(built["ingest_seconds"], 1), "by_batch_size": {},
    }
    for batch in batches:
        one = _measure(store, batch, 1)
        two = _measure(store, batch, 2)
        r1, r2 = one["epochs"][-1]["ratings_per_s"], two["epochs"][-1]["ratings_per_s"]
        out["by_batch_size"][str(batch)] = {
            "ratings_per_s_2_vs_1": paired(r2, r1, "ratings/s", "1 process, same global batch, same run"),
            "scaling_efficiency": round(r2 / (2 * r1), 4),
            "one_process": one, "two_processes": two,
            "test_rmse_difference": round(abs(two["test_rmse"] - one["test_rmse"]), 5),
            "steps_per_epoch": -(-int(ratings * 0.7 * 0.95) // batch),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1], int(argv[2]), argv[3])
        return
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sample, one batch size (proves the code path)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    p.add_argument("--work", type=Path, default=WORK_DIR, help="samples and stores (reused between runs)")
    args = p.parse_args(argv)
    size = "smoke" if args.smoke else "full"
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = run(size, args.work)
    results["size"] = size
    results["suite_seconds"] = round(time.perf_counter() - t0, 1)
    path = write_results("distributed", results, machine_info(), args.out)
    print(json.dumps({b: {k: v for k, v in r.items() if k not in ("one_process", "two_processes")}
                      for b, r in results["by_batch_size"].items()}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
