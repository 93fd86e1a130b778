"""Scale: peak memory of ingest, train, evaluate and recommend as the ratings grow.

Synthetic samples in the ML-25M shape (162,000 users, 62,000 movies, no posters) with 5 M and
25 M ratings: the users and the catalogue stay the same, so the growth ratio (25 M peak / 5 M
peak) is what the number of ratings costs. With ``full``, the ML-32M shape too (32 M ratings,
200,948 users, 87,585 movies) when the disk has room for it. Every command runs through the
CLI, as a user would type it, in its own process (``benchmarks.common.run_isolated``), so each
peak is that command's alone:

- ``ingest --path SAMPLE``
- ``train --model svd --epochs 1 --batch-size 8192 --device cpu`` (split creation, the test
  predictions and the evaluation included; default memory settings)
- ``evaluate latest`` (both protocols, default settings)
- ``train_budget_512``: the same train with ``--memory-budget-mb 512`` (the default until it became 128)
- ``recommend --user U``

``floor`` processes (once per suite) only import what every command imports (``bonmf_pipe.cli``)
and enter the trainer's deterministic block, or only ``import torch``: no command can peak
lower than them.

``peak_rss_mb`` is the kernel's high-water mark of the process (VmHWM). ``peak_anon_mb`` is the
largest anonymous (heap) resident size seen by a 20 ms sampler: RSS less the pages of mapped
files, most of which are the shared libraries of the CUDA build of torch and cost the same
whatever the data. The ``floor`` size (20,000 ratings, same commands) shows what a command
costs before any data.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import run_isolated
from benchmarks.ingest import make_sample

USERS, ITEMS = 162_000, 62_000
SIZES = {
    "smoke": {"floor": (5_000, 300, 400), "small": (20_000, 300, 1_000), "large": (50_000, 300, 1_000)},
    "quick": {"floor": (20_000, 300, 1_000), "small": (1_000_000, USERS, ITEMS), "large": (5_000_000, USERS, ITEMS)},
    "full": {"floor": (20_000, 300, 1_000), "small": (5_000_000, USERS, ITEMS), "large": (25_000_000, USERS, ITEMS)},
}
ML32M = (32_000_000, 200_948, 87_585)  # the ML-32M shape: measured with ``full`` when the disk allows
ML32M_DISK_GB = 30  # sample, store, split and spill files of 32 M ratings, with room to spare
COMMANDS = ("ingest", "train", "evaluate", "train_budget_512", "recommend")
TRAIN_ARGS = ["--model", "svd", "--epochs", "1", "--batch-size", "8192", "--device", "cpu"]
BUDGET_ARGS = ["--memory-budget-mb", "512"]  # the default before it became 128


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def _anon_sampler(out: dict[str, float]):
    """Record the largest RssAnon of this process, sampled every 20 ms, into ``out``."""
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            out["peak_anon_mb"] = max(out.get("peak_anon_mb", 0.0), _status_mb("RssAnon"))
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        out["peak_anon_mb"] = round(max(out.get("peak_anon_mb", 0.0), _status_mb("RssAnon")), 1)


def cli_step(args: list[str]) -> dict[str, Any]:
    """Run ``bonmf-pipe ARGS`` in this (fresh) process; seconds and peak anonymous memory."""
    import io
    from contextlib import redirect_stdout

    from bonmf_pipe.cli import app

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    with _anon_sampler(out), redirect_stdout(io.StringIO()):
        app(args, standalone_mode=False)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def floor_step(what: str) -> dict[str, Any]:
    """What a command costs before any data: ``cli`` imports ``bonmf_pipe.cli`` and enters the
    trainer's deterministic block; ``torch`` only imports torch."""
    if what == "torch":
        import torch  # noqa: F401
    else:
        from bonmf_pipe import cli, runtime  # noqa: F401

        with runtime.deterministic(1):
            pass
    return {"peak_anon_mb": round(_status_mb("RssAnon"), 1)}


def first_user(store: str) -> dict[str, Any]:
    """A user with training ratings in the newest run (for ``recommend``)."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.trainer import list_runs, load_scorer

    s = Store.open(store)
    return {"user": int(load_scorer(s, str(list_runs(s)[-1]["run_id"])).user_ids[0])}


def _measure(work: Path, ratings: int, users: int, items: int) -> dict[str, Any]:
    sample = work / f"sample-scale-{ratings}-{users}-{items}"
    store = work / f"store-scale-{ratings}-{users}-{items}"
    made = make_sample(str(sample), ratings=ratings, users=users, items=items)
    shutil.rmtree(store, ignore_errors=True)
    steps = {
        "ingest": ["ingest", "--path", str(sample), "--store", str(store)],
        "train": ["train", *TRAIN_ARGS, "--store", str(store)],
        "evaluate": ["evaluate", "latest", "--store", str(store)],
        "train_budget_512": ["train", *TRAIN_ARGS, *BUDGET_ARGS, "--store", str(store)],
    }
    result: dict[str, Any] = {"ratings": ratings, "users": users, "items": items,
                              "sample_seconds": round(made["seconds"], 1)}
    for name, args in steps.items():
        result[name] = run_isolated("benchmarks.scale:cli_step", args=args)
    user = run_isolated("benchmarks.scale:first_user", store=str(store))["user"]
    result["recommend"] = run_isolated(
        "benchmarks.scale:cli_step", args=["recommend", "--user", str(user), "--store", str(store)]
    )
    shutil.rmtree(store, ignore_errors=True)  # the 25 M store is several GB
    return result


def run(size: str, work: Path) -> dict[str, Any]:
    sizes = dict(SIZES[size])
    skipped = None
    if size == "full":
        free_gb = shutil.disk_usage(work).free / 2**30
        if free_gb >= ML32M_DISK_GB:
            sizes["ml32m"] = ML32M
        else:
            skipped = f"ML-32M shape skipped: {free_gb:.0f} GB free under the work folder, {ML32M_DISK_GB} GB wanted"
    floor = {what: run_isolated("benchmarks.scale:floor_step", what=what) for what in ("torch", "cli")}
    measured = {label: _measure(work, *shape) for label, shape in sizes.items()}
    small, large = measured["small"], measured["large"]
    growth = {
        cmd: {
            "peak_rss": round(large[cmd]["peak_rss_mb"] / small[cmd]["peak_rss_mb"], 3),
            "peak_anon": round(large[cmd]["peak_anon_mb"] / small[cmd]["peak_anon_mb"], 3),
        }
        for cmd in COMMANDS
    }
    return {
        "settings": {
            "train": " ".join(TRAIN_ARGS), "train_budget_512": " ".join(TRAIN_ARGS + BUDGET_ARGS),
            "evaluate": "latest (defaults)", "posters": False,
            "sizes": {label: {"ratings": r, "users": u, "items": i} for label, (r, u, i) in sizes.items()},
            "growth_is": f"peak at {large['ratings']:,} ratings / peak at {small['ratings']:,} ratings",
            **({"skipped": skipped} if skipped else {}),
        },
        "import_floor": floor,
        **measured,
        "growth": growth,
    }
