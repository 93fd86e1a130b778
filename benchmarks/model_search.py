"""Model search for BoNMF's content pathway: variants of the real network (``train``), several
seeds, one store; valid RMSE chooses, test and cold-item RMSE are reported.

    python -m benchmarks.model_search --store STORE --features text,image --seeds 42 43 44

Each variant is a set of ``TrainSettings`` fields (VARIANTS); every run lands in the store's
runs folder as a normal run, so use a copy of a store you care about. ``--noise-features``
first writes seeded Gaussian vectors of the same shapes as the store's newest feature sets
and trains on those instead: the stress test of content that carries no information.
Prints one JSON line per run and a markdown table of mean ± std over the seeds; ``--out``
also appends the JSON lines to a file.

What it measured (ml-latest-small, random:0.7, seeds 42-44) is in the MODEL report and the
README; the exploratory candidates (gates, count-based mixing, content bias, separate
content L2) that lost to ``content_prior`` were measured with the same protocol.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bonmf_pipe.featurestore import ShardEntry, Store, write_manifest
from bonmf_pipe.featurestore.features import feature_dir, load_feature_matrix, resolve_feature_set
from bonmf_pipe.featurestore.manifest import Manifest
from bonmf_pipe.featurestore.schema import feature_schema
from bonmf_pipe.trainer import TrainSettings, read_run_config, split_dataset, train

VARIANTS: dict[str, dict] = {
    "svd": {"model": "svd"},
    "nmf": {"model": "nmf"},
    "l2-on-factor": {"content_prior": False},  # the earlier design
    "content-prior": {"content_prior": True},  # the default
    "content-prior+side-dropout-0.25": {"content_prior": True, "side_dropout": 0.25},
}
COLD_MAX = 5  # cold items: fewer than this many train ratings (as ``evaluate`` defines them)


def cold_rmse(store: Store, run_id: str, run_dir: Path) -> tuple[float, int]:
    split = split_dataset(store, read_run_config(store, run_id)["split_id"]).to_table(columns=["item_id", "part"])
    ids, counts = np.unique(split.filter(pc.equal(split["part"], "train"))["item_id"].to_numpy(), return_counts=True)
    p = pq.read_table(run_dir / "predictions.parquet", columns=["item_id", "rating", "prediction"])
    items = p["item_id"].to_numpy()
    pos = np.clip(np.searchsorted(ids, items), 0, len(ids) - 1)
    n_train = np.where(ids[pos] == items, counts[pos], 0)
    cold = n_train < COLD_MAX
    err = p["prediction"].to_numpy()[cold] - p["rating"].to_numpy()[cold]
    return float(np.sqrt(np.mean(err**2))) if cold.any() else float("nan"), int(cold.sum())


def write_noise_features(store: Store, features: tuple[str, ...], seed: int) -> dict[str, str]:
    """Seeded noise in place of each modality's newest vectors (same items, same dim); the keys."""
    keys = {}
    items = np.sort(store.read_table("items", columns=["item_id"]).column(0).to_numpy())
    for modality in features:
        fs = resolve_feature_set(store, modality, None)
        _, found = load_feature_matrix(store, fs, items)
        ids = items[found]
        noise = np.random.default_rng([seed, len(modality)]).normal(size=(len(ids), fs.dim)).astype(np.float32)
        key = f"noise-{modality}-{seed:06d}"
        folder = feature_dir(store, modality, key)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "part-00000.parquet"
        pq.write_table(pa.table({
            "item_id": pa.array(ids, pa.int64()),
            "content_hash": pa.array([f"noise-{i}" for i in ids], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(noise.ravel(), pa.float32()), fs.dim),
        }, schema=feature_schema(fs.dim, "float32")), path)
        extra = {"encoder_key": key, "spec": {"model": "noise"}, "dim": fs.dim, "dtype": "float32", "modality": modality}
        write_manifest(folder, Manifest(name=f"features/{modality}/{key}", kind="features",
                                        files=(ShardEntry.of(folder, path, len(ids)),), extra=extra))
        keys[modality] = key
    return keys


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True, help="a store with ratings and encoded features (runs land in it)")
    ap.add_argument("--features", default="text,image")
    ap.add_argument("--split", default="random:0.7")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"a subset of {', '.join(VARIANTS)}")
    ap.add_argument("--noise-features", action="store_true", help="train on seeded noise instead of the real vectors")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    store = Store.open(a.store)
    features = tuple(f for f in a.features.split(",") if f)
    encoders = write_noise_features(store, features, 0) if a.noise_features else {}
    rows = []
    for seed in a.seeds:
        for name in a.variants.split(","):
            s = TrainSettings(features=features, seed=seed, split=a.split, threads=a.threads, name=f"search-{name}",
                              text_encoder=encoders.get("text"), image_encoder=encoders.get("image"), **VARIANTS[name])
            r = train(store, s)
            cold, cold_rows = cold_rmse(store, r.run_id, r.run_dir)
            valid = min(e["valid_rmse"] for e in r.epochs if e["valid_rmse"] is not None)
            row = {"variant": name, "seed": seed, "features": a.features, "split": a.split, "noise": a.noise_features,
                   "valid_rmse": valid, "test_rmse": r.test_rmse, "cold_rmse": cold, "cold_rows": cold_rows,
                   "best_epoch": r.best_epoch, "run_id": r.run_id}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if a.out:
                with a.out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
    sys.stdout.write(table(rows))


def table(rows: list[dict]) -> str:
    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {sd:.4f}"

    out = ["| variant | seeds | valid RMSE | test RMSE | cold RMSE |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == name]
        cells = [ms([r[k] for r in rs]) for k in ("valid_rmse", "test_rmse", "cold_rmse")]
        out.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
