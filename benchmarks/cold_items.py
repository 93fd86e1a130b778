"""Cold-start ablation: ``--split cold-items:0.1`` on ml-latest-small (ML-1M posters, offline
encoders), BoNMF with side information against the ID-only models, over seeds.

Each seed holds out its own hashed 10% of the movies: every rating of theirs is a test rating
and none is in train or valid, so every test item reaches the models through the unknown ID.
The ID-only models (svd, nmf) can then only predict from the global mean, the user's bias and
the unknown item's learned terms; BoNMF also sees the item's text and poster vectors. The
comparison is the project's own ``ablate`` (same split per seed for every variant, paired 95%
t-intervals of each BoNMF variant against the best ID-only model); this script adds the split
sizes and writes ``benchmarks/results/cold-items-<machine>.json``.

Before the ablation the named template sets of ``--template NAME=TEMPLATE`` (default
``tags={tags}``: MiniLM over each movie's tags, 1,572 of ml-latest-small's movies; seconds on
the CPU) are encoded into the work copy of the store through the library's ``encode`` (a no-op
when the copy has them already). The BoNMF variants then default to text+image, each template
set alone and text+image with every template set; besides the ablation's own comparisons
(``comparisons``: each variant minus the best ID-only model, test and cold RMSE), ``paired``
holds each variant minus the best ID-only model and minus bonmf text+image on test RMSE and
NDCG@10, paired by seed with 95% t-intervals. ``--template none`` encodes nothing (text+image
only, as before).

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
TEMPLATES = (("tags", "{tags}"),)  # (name, template) sets encoded into the work store
PAIRED = ("rmse", "ndcg_at_10")  # metrics of the ``paired`` comparisons
TEXT_IMAGE = "bonmf text+image"


def parse_template(spec: str) -> tuple[str, str]:
    """``NAME=TEMPLATE`` -> (name, template)."""
    name, sep, template = spec.partition("=")
    if not sep or not name.strip() or not template:
        raise SystemExit(f"--template {spec!r}: use NAME=TEMPLATE, e.g. tags={{tags}} (or none).")
    return name.strip(), template


def default_features(templates: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """text+image, each template set alone, and text+image with all of them."""
    names = tuple(n for n, _ in templates)
    return FEATURES if not names else (*FEATURES, *names, "+".join(("text", "image", *names)))


def encode_templates(store, templates: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Encode each named template set into ``store`` (the offline text model on the CPU, one
    thread); what each wrote, per set."""
    from bonmf_pipe.pipeline.encode import EncodeSettings, encode

    out: dict[str, Any] = {}
    for name, template in templates:
        summary = encode(store, EncodeSettings(name=name, text_template=template, device="cpu", cpu_threads=1))
        m = summary.modalities[0]
        out[name] = {"template": template, "encoder_key": m.encoder_key, "model": m.model, "dim": m.dim,
                     "items": m.items, "encoded": m.encoded, "already_there": m.skipped,
                     "rejected": m.failed + m.excluded, "seconds": round(summary.seconds, 1)}
    return out


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


def run(work: Path, source: Path | None, seeds: int, features: tuple[str, ...] | None = None,
        epochs: int | None = None, templates: tuple[tuple[str, str], ...] = TEMPLATES) -> dict[str, Any]:
    """Encode the template sets into a copy of the store, ablate there, then summarise it
    (``report``); ``features`` None: ``default_features(templates)``."""
    import torch

    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ablate import AblateSettings, ablate
    from bonmf_pipe.trainer import TrainSettings

    torch.set_num_threads(1)
    store = Store.open(prepare(work, source))
    encoded = encode_templates(store, templates)
    base = TrainSettings(split=SPLIT, device="cpu", threads=1, epochs=epochs)
    t0 = time.perf_counter()
    result = ablate(store, AblateSettings(train=base, features=features or default_features(templates),
                                          baselines=BASELINES, seeds=seeds, name="cold-items"))
    out = report(store, result.folder)
    out["template_sets"] = encoded
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def paired(rows: list[dict], summary: list[dict], level: float = 0.95) -> dict[str, list[dict]]:
    """Each BoNMF variant minus the best ID-only model (lowest mean test RMSE) and minus bonmf
    text+image, on ``PAIRED`` metrics, paired by seed (``paired_difference``: mean with its
    ``level`` t-interval; negative RMSE / positive NDCG = better than the reference)."""
    from bonmf_pipe.pipeline.stats import paired_difference

    def label(model: str, features: str) -> str:
        return model if model != "bonmf" else f"bonmf {features}"

    by = {(label(r["model"], r["features"]), r["seed"]): r for r in rows}
    id_only = [e for e in summary if e["features"] == "none" and e.get("rmse_mean") is not None]
    refs = {}
    if id_only:
        refs["vs_best_id_only"] = min(id_only, key=lambda e: e["rmse_mean"])["variant"]
    if any(e["variant"] == TEXT_IMAGE for e in summary):
        refs["vs_text_image"] = TEXT_IMAGE
    out: dict[str, list[dict]] = {}
    for key, ref in refs.items():
        out[key] = []
        for e in summary:
            if e["model"] != "bonmf" or e["features"] == "none" or e["variant"] == ref:
                continue
            seeds = sorted(sd for (v, sd) in by if v == e["variant"] and (ref, sd) in by)
            comp: dict[str, Any] = {"variant": e["variant"], "reference": ref, "seeds": seeds}
            for m in PAIRED:
                a = [_num(by[(e["variant"], sd)][m]) for sd in seeds]
                b = [_num(by[(ref, sd)][m]) for sd in seeds]
                comp[m] = {k: (None if v != v else v) for k, v in paired_difference(a, b, level).as_dict().items()}
            out[key].append(comp)
    return out


def _num(v) -> float:
    return float("nan") if v is None else float(v)


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
        "paired": paired(rows, done["summary"], done["settings"].get("level", 0.95)),
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
    p.add_argument("--features", default=None,
                   help="BoNMF variants, comma-separated (default: text+image, each template set, and all of them)")
    p.add_argument("--template", action="append", metavar="NAME=TEMPLATE",
                   help="a named text set to encode into the work store first (repeatable; default tags={tags}; "
                        "'none': no template set)")
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
        specs = args.template or []
        templates = TEMPLATES if not specs else tuple(parse_template(t) for t in specs if t.strip().lower() != "none")
        features = tuple(args.features.split(",")) if args.features else None
        results = run(args.work, args.store, args.seeds, features, args.epochs, templates)
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
    for key, comps in results.get("paired", {}).items():
        for c in comps:
            print(f"{key}: {c['variant']} - {c['reference']}: "
                  + ", ".join(f"{m} {c[m]['mean']:+.4f} [{c[m]['low']:+.4f}, {c[m]['high']:+.4f}]"
                              for m in PAIRED if c[m]["low"] is not None))
    for r in results["summary"]:
        print(r["model"], r["features"], {k: v for k, v in r.items() if k.startswith(("rmse", "ndcg_at_10"))})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
