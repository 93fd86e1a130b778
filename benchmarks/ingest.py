"""Ingest: rows/s and peak RSS of ``ingest`` on a synthetic ml-latest-small-format sample.

Ceiling: a plain ``pyarrow.csv.read_csv`` of the same ratings.csv into memory (multi-threaded
C++ parsing, no validation, deduplication or Parquet writing), in its own process.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.common import paired, run_isolated

SIZES = {"smoke": (20_000, 300, 1_000), "quick": (1_000_000, 6_000, 9_000), "full": (5_000_000, 30_000, 40_000)}


def make_sample(out: str, ratings: int, users: int, items: int) -> dict[str, Any]:
    """Write (or reuse) a synthetic ml-latest-small-format sample without posters."""
    from bonmf_pipe.pipeline.sample import SampleSettings, write_sample

    folder = Path(out)
    stamp = folder / f".bench-{ratings}-{users}-{items}"
    if stamp.exists():
        return {"reused": True, "seconds": 0.0}
    t0 = time.perf_counter()
    write_sample(SampleSettings(out=folder, users=users, items=items, ratings=ratings, posters=False))
    stamp.write_text("ok")
    return {"reused": False, "seconds": time.perf_counter() - t0}


def ingest_step(path: str, store: str) -> dict[str, Any]:
    """Ingest ``path`` into a fresh store; child process, so peak RSS is this stage's alone."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    summary = ingest(Store.open(store, create=True), IngestSettings(path=Path(path)))
    return {"seconds": time.perf_counter() - t0, "ratings": summary.ratings, "items": summary.items}


def csv_ceiling_step(path: str) -> dict[str, Any]:
    """The ceiling: read ratings.csv into one Arrow table, nothing else."""
    import pyarrow.csv as pcsv

    t0 = time.perf_counter()
    table = pcsv.read_csv(Path(path) / "ratings.csv")
    return {"seconds": time.perf_counter() - t0, "rows": table.num_rows}


def run(size: str, work: Path) -> dict[str, Any]:
    ratings, users, items = SIZES[size]
    sample = work / f"sample-{ratings}"
    made = make_sample(str(sample), ratings, users, items)
    ing = run_isolated("benchmarks.ingest:ingest_step", path=str(sample), store=str(work / f"store-ingest-{ratings}"))
    ceil = run_isolated("benchmarks.ingest:csv_ceiling_step", path=str(sample))
    return {
        "settings": {"ratings": ratings, "users": users, "items": items, "edition": "ml-latest-small", "posters": False},
        "sample_seconds": round(made["seconds"], 2),
        "ingest_seconds": round(ing["seconds"], 2),
        "rows_per_s": paired(ing["ratings"] / ing["seconds"], ceil["rows"] / ceil["seconds"], "ratings/s",
                             "pyarrow.csv.read_csv of ratings.csv into memory"),
        "peak_rss_mb": ing["peak_rss_mb"],
        "ceiling_peak_rss_mb": ceil["peak_rss_mb"],
    }
