"""Scale: a synthetic ML-25M-sized sample (25M ratings, 62k items, 162k users, no posters):
ingest time and peak RSS, and one training epoch.

On a small CPU the epoch is subsampled: ``max_rows`` ratings are trained in streaming mode and
the seconds per epoch are scaled to the whole train part (stated in the results).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import paired, run_isolated

SIZES = {"smoke": (50_000, 1_620, 620), "full": (25_000_000, 162_000, 62_000)}


def run(size: str, work: Path, max_rows: int = 100_000) -> dict[str, Any]:
    ratings, users, items = SIZES["smoke" if size == "smoke" else "full"]
    sample = work / f"sample-{ratings}"
    made = run_isolated("benchmarks.ingest:make_sample", out=str(sample), ratings=ratings, users=users, items=items)
    ing = run_isolated("benchmarks.ingest:ingest_step", path=str(sample), store=str(work / f"store-ingest-{ratings}"))
    ceil = run_isolated("benchmarks.ingest:csv_ceiling_step", path=str(sample))
    store = work / f"store-train-{ratings}"
    built = run_isolated("benchmarks.train:build_store", sample=str(sample), store=str(store))
    ep = run_isolated("benchmarks.train:epoch_step", store=str(store), mode="streaming", max_rows=max_rows)
    scaled = ep["seconds"] * ep["n_train"] / max(ep["rows"], 1)
    return {
        "settings": {"ratings": ratings, "users": users, "items": items, "posters": False, "model": "nmf",
                     "batch_size": 512, "device": ep["device"], "epoch_rows_trained": ep["rows"],
                     "epoch_note": "subsampled epoch: seconds scaled to the whole train part" if ep["rows"] < ep["n_train"] else "whole epoch"},
        "sample_seconds": round(made["seconds"], 1),
        "ingest_seconds": round(ing["seconds"], 1),
        "ingest_rows_per_s": paired(ing["ratings"] / ing["seconds"], ceil["rows"] / ceil["seconds"], "ratings/s",
                                    "pyarrow.csv.read_csv of ratings.csv into memory"),
        "ingest_peak_rss_mb": ing["peak_rss_mb"],
        "csv_read_peak_rss_mb": ceil["peak_rss_mb"],
        "split_seconds": round(built["split_seconds"], 1),
        "train_rows": ep["n_train"],
        "epoch_ratings_per_s": round(ep["ratings_per_s"], 1),
        "seconds_per_epoch": round(scaled, 1),
        "train_peak_rss_mb": ep["peak_rss_mb"],
    }
