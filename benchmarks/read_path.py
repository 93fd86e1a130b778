"""Train read path: rows/s of the streaming trainer's read path alone, no model.

One epoch of the train part of the train suite's store (5 M ratings, random:0.7) goes through
``stream_part`` + ``index_buffers``: the row groups in the epoch's seeded order, shuffle
buffers of the default memory budget, each permuted and turned into embedding indices: what
the background read-ahead must deliver while the training thread steps. Variants, interleaved
within each repeat (the load of the moment falls on all alike; medians over the repeats; the
first round warms the page cache and is not kept):

- ``previous``: the read path as it was before it ran on several threads (commit 96953c9),
  replicated here: each row group read with the part filter, one after another, ids looked up
  by binary search (``ids.lookup``) over the whole buffer;
- ``threads_<n>``: this tree's read path on ``n`` threads, for n = 1, 2, 4, ... up to
  ``data.read_threads()`` (the trainer's default on this machine).

Every variant's buffers are checked to hold the same indices in the same order. Beside them: a
one-thread breakdown (counting row groups, reading them, the permutation, indexing), and, from
one resident epoch of nmf at batch 16,384 in its own process, the training step ceiling of this
machine (forward + backward + step on batches already on the device), the rate a read path
must feed. On 2 cores the threads can at most double the rate (and only on an idle machine).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks.common import paired, run_isolated
from benchmarks.ingest import make_sample
from benchmarks.train import SIZES

# nmf on one H200 (issue 11, measured by gpu_check): resident epoch at batch 16,384, and the goal
H200_RESIDENT_RATINGS_PER_S = 2.79e6
H200_STREAMING_GOAL = 0.70
H200_CORES = 16
STEP_BATCH = 16_384


def _previous_epoch(frags, part: str, rng, buffer_rows: int, maps) -> list[tuple[np.ndarray, ...]]:
    """The one-thread read path of commit 96953c9 (reference and baseline)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from bonmf_pipe.featurestore import ids

    def indices(table):
        pos = ids.lookup(maps.item_ids, table.column("item_id").to_numpy(), offset=0, missing=len(maps.item_ids))
        return (ids.lookup(maps.user_ids, table.column("user_id").to_numpy(), offset=1, missing=0),
                np.append(maps.item_index, 0)[pos], pos, table.column("rating").to_numpy().astype(np.float32))

    def emit(tables):
        t = pa.concat_tables(tables)
        return t.take(pa.array(rng.permutation(t.num_rows)))

    out, pending, rows = [], [], 0
    for frag in frags:
        t = frag.to_table(columns=["user_id", "item_id", "rating"], filter=pc.field("part") == part)
        if t.num_rows == 0:
            continue
        pending.append(t)
        rows += t.num_rows
        if rows >= buffer_rows:
            out.append(_fingerprint(indices(emit(pending))))
            pending, rows = [], 0
    if pending:
        out.append(_fingerprint(indices(emit(pending))))
    return out


def _fingerprint(arrays) -> tuple[int, ...]:
    """A cheap check that two variants made the same buffer (sampled sums, not timed apart)."""
    return tuple(int(np.asarray(a[::97], dtype=np.float64).sum() * 4) for a in arrays) + (len(arrays[0]),)


def _epoch(variant: str, dataset, maps, buffer_rows: int, seed: int) -> tuple[float, float, list]:
    """Wall seconds, CPU seconds (all threads) and the buffers' fingerprints of one epoch."""
    from bonmf_pipe import runtime
    from bonmf_pipe.trainer import data

    rng = runtime.numpy_rng(42, "shuffle", seed)
    t0, c0 = time.perf_counter(), time.process_time()
    if variant == "previous":
        prints = _previous_epoch(data.own_fragments(dataset, "train", rng), "train", rng, buffer_rows, maps)
    else:
        n = int(variant.split("_")[1])
        tables = data.stream_part(dataset, "train", rng, buffer_rows, threads=n)
        prints = [_fingerprint(a) for a in data.index_buffers(maps, tables, pin=False, threads=n)]
    return time.perf_counter() - t0, time.process_time() - c0, prints


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent outside idle and iowait since boot."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _breakdown(dataset, maps, buffer_rows: int) -> dict[str, float]:
    """Seconds of each stage of one epoch on one thread."""
    import pyarrow.compute as pc

    from bonmf_pipe import runtime
    from bonmf_pipe.trainer import data

    rng = runtime.numpy_rng(42, "shuffle", 0)
    keep, seconds = pc.field("part") == "train", dict.fromkeys(("count", "read", "draw", "take", "index"), 0.0)
    workers = data._Workers(1)
    t0 = time.perf_counter()
    frags = data.own_fragments(dataset, "train", rng)
    counts = [f.count_rows(filter=keep) for f in frags]
    plan = [(f, n == sum(g.num_rows for g in f.row_groups)) for f, n in zip(frags, counts)]
    seconds["count"] = time.perf_counter() - t0
    for group, rows in data.buffer_groups(plan, counts, buffer_rows):
        t0 = time.perf_counter()
        tables = [data._read_group(f, whole, keep) for f, whole in group]
        t1 = time.perf_counter()
        perm = rng.permutation(rows)
        t2 = time.perf_counter()
        table = data._emit(tables, perm)
        t3 = time.perf_counter()
        data.index_table(maps, table, False, workers)
        t4 = time.perf_counter()
        for stage, seconds_of in zip(("read", "draw", "take", "index"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            seconds[stage] += seconds_of
    return {k: round(v, 4) for k, v in seconds.items()}


def measure(store: str, repeats: int) -> dict[str, Any]:
    """The variants interleaved over ``repeats`` (+ 1 warm-up round), in this process."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.trainer import TrainSettings, data, make_split, split_dataset
    from bonmf_pipe.trainer.setup import Context

    st = Store.open(store)
    split_id = make_split(st, "random:0.7", 42)  # the suite's split (already made: found, not rewritten)
    dataset = split_dataset(st, split_id)
    maps = data.build_id_maps(st, split_id)
    settings = TrainSettings()
    buffer_rows = Context.buffer_rows(SimpleNamespace(settings=settings.effective()))  # the trainer's rule
    n_train = data.count_part(dataset, "train")
    most = data.read_threads()
    threads = sorted({1, most} | {2**k for k in range(1, 4) if 2**k < most})
    variants = ["previous", *(f"threads_{n}" for n in threads)]
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    load = [os.getloadavg()[0]]
    machine0, own0, wall0 = _busy_cpu_seconds(), time.process_time(), time.perf_counter()
    for r in range(repeats + 1):
        reference = None
        for v in variants:
            s, c, prints = _epoch(v, dataset, maps, buffer_rows, r)
            if reference is None:
                reference = prints
            elif prints != reference:
                raise RuntimeError(f"{v} made other buffers than previous in round {r}")
            if r:
                seconds[v].append(s)
                cpu[v].append(c)
        load.append(os.getloadavg()[0])
    others = (_busy_cpu_seconds() - machine0 - (time.process_time() - own0)) / (time.perf_counter() - wall0)
    rate = {v: n_train / statistics.median(s) for v, s in seconds.items()}
    return {"n_train": n_train, "buffer_rows": buffer_rows, "memory_budget_mb": settings.memory_budget_mb,
            "row_groups": len(data.own_fragments(dataset, "train", None)), "threads": threads,
            "read_threads_default": most, "variants": variants, "repeats": repeats,
            "rows_per_s": {v: round(x) for v, x in rate.items()},
            "runs_seconds": {v: [round(x, 4) for x in s] for v, s in seconds.items()},
            # CPU seconds / wall seconds: the cores a variant kept busy (about 1 when no other core was free)
            "cores_busy": {v: round(statistics.median(c / w for c, w in zip(cpu[v], seconds[v])), 2) for v in variants},
            "one_thread_breakdown_seconds": _breakdown(dataset, maps, buffer_rows),
            "load_average_1min": [round(x, 2) for x in load],
            # cores kept busy by other processes while the variants ran (machine CPU time less this process's)
            "other_processes_cores_busy": round(max(others, 0.0), 2)}


def run(size: str, work: Path) -> dict[str, Any]:
    ratings, users, items = SIZES[size]
    sample = work / f"sample-{ratings}"
    make_sample(str(sample), ratings, users, items)
    store = work / f"store-train-{ratings}"
    run_isolated("benchmarks.train:build_store", sample=str(sample), store=str(store))
    repeats = 1 if size == "smoke" else 7
    m = run_isolated("benchmarks.read_path:measure", store=str(store), repeats=repeats)
    step = run_isolated("benchmarks.train:epoch_step", store=str(store), mode="resident", model="nmf",
                        batch_size=STEP_BATCH, max_rows=0 if size == "smoke" else 400_000, ceiling=True)
    rate, most = m["rows_per_s"], f"threads_{m['read_threads_default']}"
    same_run = "in the same process, interleaved with it (medians over the repeats)"
    per_core = rate["threads_1"]
    target = H200_STREAMING_GOAL * H200_RESIDENT_RATINGS_PER_S
    m.pop("peak_rss_mb", None)
    parts = m["one_thread_breakdown_seconds"]
    serial = parts["take"] / sum(parts.values())  # the buffer's permuting gather: one thread
    return {
        "settings": {"ratings": ratings, "users": users, "items": items, "split": "random:0.7 seed 42",
                     "store": store.name, "pin": False,
                     "what": "one epoch of the train part: row groups in the epoch's order, shuffle buffers of the "
                             "default --memory-budget-mb, permuted, indexed; no model"},
        **m,
        "default_threads_vs_one": paired(rate[most], per_core, "rows/s", f"this read path on 1 thread, {same_run}"),
        "default_threads_vs_previous": paired(rate[most], rate["previous"], "rows/s",
                                              f"the previous one-thread read path (commit 96953c9), {same_run}"),
        "one_thread_vs_previous": paired(per_core, rate["previous"], "rows/s",
                                         f"the previous one-thread read path (commit 96953c9), {same_run}"),
        "threads_bound": {
            "serial_share": round(serial, 3),
            "what": "Amdahl bound on the threads' gain: the permuting gather (take) stays serial; counting, "
                    "reading and indexing run on the threads, and the permutation is drawn (one thread, the "
                    "epoch's stream) while the buffer's row groups are read. On this 2-core machine the threads "
                    "can give at most the 2-thread bound, and only with the second core free (see "
                    "other_processes_cores_busy and cores_busy: other jobs share the machine)",
            **{f"at_{n}_threads": round(1 / (serial + (1 - serial) / n), 2) for n in (2, 8, 16)}},
        "step_ceiling_this_machine": {
            "batch_size": step["batch_size"], "device": step["device"], "rows_measured": step["rows"],
            "ceiling_ratings_per_s": round(step["ceiling_ratings_per_s"]),
            "resident_steady_ratings_per_s": round(step["steady_ratings_per_s"]),
            "ceiling_is": "nmf forward + backward + optimiser step alone on batches already on the device, "
                          "1 torch thread, its own process after one resident epoch (benchmarks.train:epoch_step)",
            "read_path_per_core_vs_ceiling": round(per_core / step["ceiling_ratings_per_s"], 2)},
        "h200": {
            "resident_ratings_per_s": H200_RESIDENT_RATINGS_PER_S,
            "resident_source": "issue 11 (observed on one H200, 16 cores, with benchmarks.gpu_check): "
                               "nmf, batch 16,384, resident",
            "streaming_goal_ratings_per_s": round(target),
            "cores_needed_at_this_machines_per_core_rate": round(target / per_core, 2),
            "needed": (f">= {target / 1e6:.2f} M rows/s from the read path beside the training thread: "
                       f"{target / per_core:.2f} of this machine's cores at its one-thread rate; the H200 has "
                       f"{H200_CORES} and the trainer reads on min(8, cores) threads. Whether streaming then reaches "
                       f"70% depends on the rest of the step (pinned copies, the producer's GIL share): measure it "
                       f"there with the train suite"),
        },
    }
