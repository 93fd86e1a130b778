"""Cold-start ablation: ``--split cold-items:0.1`` on ml-latest-small (ML-1M posters, offline
encoders), BoNMF with side information against the ID-only models, over seeds.

Each seed holds out its own hashed 10% of the movies: every rating of theirs is a test rating
and none is in train or valid, so every test item reaches the models through the unknown ID.
The ID-only models (svd, nmf) can then only predict from the global mean, the user's bias and
the unknown item's learned terms; BoNMF also sees the item's text and poster vectors. The
comparison is the project's own ``ablate`` (same split per seed for every variant, paired 95%
t-intervals of each BoNMF variant against the best ID-only model); this script adds the split
sizes and writes ``benchmarks/results/cold-items-<machine>.json``.

    .venv/bin/python -m benchmarks.cold_items --store /path/to/encoded/store [--seeds 3] [--new-users]

``--new-users`` adds the fold-in comparison on ``cold-users:0.1`` (``new_users``).

``--store`` names an ingested and encoded ml-latest-small store; it is copied into the work
folder first (the ablation writes runs), so the original is only read. Without it the store
is built there from ``../shared/data`` (ingest + encode on the CPU: minutes).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, WORK_DIR, machine_info, write_results

SPLIT = "cold-items:0.1"
FEATURES = ("text+image",)
BASELINES = ("svd", "nmf")


def prepare(work: Path, source: Path | None) -> Path:
    """An encoded store under ``work`` that the ablation may write runs into."""
    store = work / "cold-items" / "store"
    if source is not None:
        shutil.rmtree(store, ignore_errors=True)
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, store)
        return store
    from benchmarks.accuracy import ML1M_POSTERS, ML_LATEST_SMALL, prepare_step

    prepare_step(str(ML_LATEST_SMALL), str(ML1M_POSTERS), str(store))
    return store


def run(work: Path, source: Path | None, seeds: int, features: tuple[str, ...] = FEATURES,
        epochs: int | None = None) -> dict[str, Any]:
    """Ablate on a copy of the store, then summarise it (``report``)."""
    import torch

    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ablate import AblateSettings, ablate
    from bonmf_pipe.trainer import TrainSettings

    torch.set_num_threads(1)
    store = Store.open(prepare(work, source))
    base = TrainSettings(split=SPLIT, device="cpu", threads=1, epochs=epochs)
    t0 = time.perf_counter()
    result = ablate(store, AblateSettings(train=base, features=features, baselines=BASELINES, seeds=seeds,
                                          name="cold-items"))
    out = report(store, result.folder)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def report(store, folder: Path) -> dict[str, Any]:
    """The ablation in ``folder`` (its results.json) with each seed's split sizes and the
    effective settings of every variant's first run."""
    import json

    import pyarrow.compute as pc

    from bonmf_pipe.trainer import read_run_config, split_dataset

    done = json.loads((Path(folder) / "results.json").read_text())
    splits = {}
    for seed, split_id in done["split_ids"].items():
        t = split_dataset(store, split_id).to_table(columns=["item_id", "part"])
        test = t.filter(pc.equal(t.column("part"), "test"))
        splits[seed] = {
            "split_id": split_id,
            "test_rows": test.num_rows,
            "held_out_items": len(pc.unique(test.column("item_id"))),
            "items_rated": len(pc.unique(t.column("item_id"))),
        }
    rows = done["rows"]
    effective = {}
    for r in rows:
        effective.setdefault(f"{r['model']} {r['features']}", read_run_config(store, r["run_id"])["effective"])
    keep = ("seed", "model", "features", "rmse", "mae", "unseen_rmse", "unseen_rows", "precision_at_10", "ndcg_at_10",
            "valid_rmse", "epochs_run", "fit_seconds")
    return {
        "split": SPLIT,
        "seeds": sorted(int(k) for k in done["split_ids"]),
        "splits": splits,
        "summary": done["summary"],
        "comparisons": done["comparisons"],
        "rows": [{k: r[k] for k in keep} for r in rows],
        "effective_settings": effective,
        "notes": done["notes"],
        "ablation_id": done["ablation_id"],
    }


def new_users(work: Path, seed: int = 42, given: tuple[int, ...] = (1, 5, 20)) -> dict[str, Any]:
    """``cold-users:0.1``: svd and bonmf text+image trained without 10% of the users; each
    held-out user scored by the unknown user and folded in from their earliest ``given``
    ratings (``evaluate_fold_in``), on the rest of their ratings. Uses the work store."""
    import torch

    from bonmf_pipe.evaluation.foldin import evaluate_fold_in
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.trainer import TrainSettings, train

    torch.set_num_threads(1)
    store = Store.open(work / "cold-items" / "store")
    out: dict[str, Any] = {"split": "cold-users:0.1", "seed": seed, "given": list(given), "models": {}}
    for model, feats in (("svd", ()), ("bonmf", ("text", "image"))):
        run = train(store, TrainSettings(model=model, features=feats, split="cold-users:0.1", seed=seed, device="cpu",
                                         threads=1, name=f"cold-users-{model}"))
        label = f"{model} {'+'.join(feats) or 'none'}"
        out["models"][label] = {"run_id": run.run_id, "test_rmse_unknown_user": run.test_rmse, "fold_in": []}
        for g in given:
            e = evaluate_fold_in(store, run.run_id, given=g)
            out["models"][label]["fold_in"].append(
                {"given": g, "users": e.users, "rows": e.rows, "rmse_unknown": round(e.rmse_unknown, 4),
                 "rmse_folded": round(e.rmse_folded, 4), "seconds_per_user": round(e.seconds_per_user, 4)})
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cold_items", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, help="an ingested + encoded ml-latest-small store to copy")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--features", default=",".join(FEATURES), help="BoNMF variants, comma-separated")
    p.add_argument("--epochs", type=int, default=None, help="most epochs (default: the trainer's)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--work", type=Path, default=WORK_DIR)
    p.add_argument("--report", type=Path, help="only summarise this finished ablation folder (of --work's store)")
    p.add_argument("--new-users", action="store_true",
                   help="also the cold-users:0.1 fold-in comparison (into the results' new_users)")
    args = p.parse_args(argv)
    if args.report:
        from bonmf_pipe.featurestore import Store

        results = report(Store.open(args.work / "cold-items" / "store"), args.report)
    else:
        results = run(args.work, args.store, args.seeds, tuple(args.features.split(",")), args.epochs)
    if args.new_users:
        results["new_users"] = new_users(args.work)
        for label, m in results["new_users"]["models"].items():
            for f in m["fold_in"]:
                print(f"{label}: fold-in from {f['given']} ratings RMSE {f['rmse_folded']} vs unknown user "
                      f"{f['rmse_unknown']} ({f['users']} users)")
    path = write_results("cold-items", results, machine_info(), args.out)
    for c in results["comparisons"]:
        d = c["rmse"]
        print(f"{c['variant']} - {c['reference']}: RMSE {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")
    for r in results["summary"]:
        print(r["model"], r["features"], {k: v for k, v in r.items() if k.startswith(("rmse", "ndcg_at_10"))})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
