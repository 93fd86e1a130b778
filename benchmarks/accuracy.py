"""Accuracy over seeds: the project's svd, nmf and BoNMF variants (``ablate``) next to
scikit-surprise's BaselineOnly, SVD and SVD++ (default parameters), each seed on its own split.

For each seed the split is the one the trainer makes (``random:0.7``, that seed) read back
from the store: Surprise fits on its train part (train + the valid slice the project's models
use for early stopping) and predicts its test part, with ``random_state`` = the seed. Both
sides are scored with ``bonmf_pipe.evaluation.metrics`` (RMSE, MAE, Precision@10 / NDCG@10
under the rated-items protocol: each user's test items ranked by prediction, relevant =
rating >= 4) and cold-item RMSE (test items with fewer than 5 ratings in the train part, as
``evaluate`` defines it). The report gives mean ± std over the seeds per model, and for each
BoNMF variant the paired difference against every other model (mean over seeds with its 95%
Student-t interval; significant when the interval excludes 0), and the issue-8 targets.

Seeds run in parallel processes (``jobs``), one torch thread each, on one shared store.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import SHARED_DATA, run_isolated

ML_LATEST_SMALL = SHARED_DATA / "ml-latest-small"
ML1M_POSTERS = SHARED_DATA / "ml-1m-posters"
THRESHOLD = 4.0
COLD_MAX_TRAIN_RATINGS = 5
K = 10
SEEDS = {"smoke": 2, "quick": 2, "full": 5}
FIRST_SEED = 42
# fit_seconds: the project's training epochs (ablate's figure), Surprise's fit(); run_seconds: the
# project's whole train() (epochs + per-epoch validation + checkpoints + test predictions), Surprise's
# fit() + predicting the test rows
METRICS = ("rmse", "mae", "cold_rmse", f"precision_at_{K}", f"ndcg_at_{K}", "fit_seconds", "run_seconds")


def prepare_step(path: str, posters: str | None, store: str) -> dict[str, Any]:
    """Ingest (once) and encode with the offline preset (a cached no-op on a re-run)."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.encode import EncodeSettings, encode
    from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

    stamp = Path(store) / f".bench-ingested-{posters is not None}"
    if not stamp.exists():
        shutil.rmtree(store, ignore_errors=True)
        ingest(Store.open(store, create=True), IngestSettings(path=Path(path), posters=Path(posters) if posters else None))
        stamp.write_text("ok")
    t0 = time.perf_counter()
    encode(Store.open(store), EncodeSettings(modalities=("text", "image") if posters else ("text",)))
    return {"encode_seconds": time.perf_counter() - t0}


def project_step(store: str, seed: int, epochs: int | None, features: list[str]) -> dict[str, Any]:
    """One seed of the ablation (svd, nmf and the BoNMF variants) on that seed's split."""
    import torch

    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ablate import AblateSettings, ablate
    from bonmf_pipe.trainer import TrainSettings

    torch.set_num_threads(1)
    train = TrainSettings(seed=seed, threads=1, device="cpu", **({"epochs": epochs} if epochs else {}))
    result = ablate(Store.open(store), AblateSettings(train=train, features=tuple(features), baselines=("svd", "nmf"),
                                                      name=f"bench-s{seed}"))
    from bonmf_pipe.trainer import read_run_config

    rows = result.table.to_pylist()
    for r in rows:  # the whole train() of the run: epochs, validation, checkpoints, test predictions
        r["run_seconds"] = read_run_config(Store.open(store), r["run_id"]).get("seconds")
    return {"rows": rows, "split_id": result.split_id, "ablation_id": result.ablation_id}


def _split_arrays(store: str, split_id: str) -> dict[str, np.ndarray]:
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.trainer import split_dataset

    t = split_dataset(Store.open(store), split_id).to_table(columns=["user_id", "item_id", "rating", "part"])
    return {"user": t.column("user_id").to_numpy(), "item": t.column("item_id").to_numpy(),
            "rating": t.column("rating").to_numpy().astype(np.float64),
            "part": np.asarray(t.column("part").to_pylist())}


def surprise_step(store: str, split_id: str, seed: int, smoke: bool) -> dict[str, Any]:
    """Fit Surprise's BaselineOnly, SVD and SVD++ on one seed's split (train + valid); score its test part."""
    import tempfile

    from surprise import SVD, BaselineOnly, Dataset, Reader, SVDpp

    from bonmf_pipe.evaluation import metrics as M

    a = _split_arrays(store, split_id)
    fit = a["part"] != "test"
    test = ~fit
    with tempfile.TemporaryDirectory() as tmp:  # derived from the real data: never left behind
        path = Path(tmp) / "train.tsv"
        np.savetxt(path, np.c_[a["user"][fit], a["item"][fit], a["rating"][fit]], fmt=["%d", "%d", "%g"],
                   delimiter="\t")
        reader = Reader(line_format="user item rating", sep="\t", rating_scale=(0.5, 5.0))
        trainset = Dataset.load_from_file(str(path), reader).build_full_trainset()
    items, counts = np.unique(a["item"][a["part"] == "train"], return_counts=True)
    n_train = dict(zip(items.tolist(), counts.tolist(), strict=True))
    users, truth = a["user"][test], a["rating"][test]
    cold = np.array([n_train.get(i, 0) < COLD_MAX_TRAIN_RATINGS for i in a["item"][test].tolist()])
    algos = {"surprise BaselineOnly": BaselineOnly(verbose=False), "surprise SVD": SVD(random_state=seed),
             "surprise SVD++": SVDpp(random_state=seed, n_epochs=3 if smoke else 20)}
    rows = []
    for name, algo in algos.items():
        t0 = time.perf_counter()
        algo.fit(trainset)
        fit_s = time.perf_counter() - t0
        est = np.array([algo.predict(str(u), str(i)).est
                        for u, i in zip(users.tolist(), a["item"][test].tolist(), strict=True)])
        run_s = time.perf_counter() - t0
        ranking = M.ranking_metrics(users, est, truth >= THRESHOLD, ks=(K,))
        rows.append({"model": name, "seed": seed, "rmse": M.rmse(truth, est), "mae": M.mae(truth, est),
                     "cold_rmse": M.rmse(truth[cold], est[cold]), f"precision_at_{K}": ranking[("precision", K)],
                     f"ndcg_at_{K}": ranking[("ndcg", K)], "fit_seconds": fit_s, "run_seconds": run_s,
                     "test_rows": int(test.sum()),
                     "cold_rows": int(cold.sum()), "train_rows": int(fit.sum())})
    return {"rows": rows}


def _one_seed(store: str, seed: int, epochs: int | None, features: list[str], smoke: bool) -> list[dict]:
    proj = run_isolated("benchmarks.accuracy:project_step", store=store, seed=seed, epochs=epochs, features=features)
    sur = run_isolated("benchmarks.accuracy:surprise_step", store=store, split_id=proj["split_id"], seed=seed,
                       smoke=smoke)
    rows = []
    for r in proj["rows"]:
        label = r["model"] if r["model"] != "bonmf" else f"bonmf {r['features']}"
        rows.append({**{k: r.get(k) for k in (*METRICS, "seed", "split_id", "cold_rows", "run_id")}, "model": label,
                     "peak_rss_mb": proj["peak_rss_mb"]})
    for r in sur["rows"]:
        rows.append({**r, "split_id": proj["split_id"], "peak_rss_mb": sur["peak_rss_mb"]})
    return rows


def summarize(rows: list[dict], level: float = 0.95) -> dict[str, Any]:
    """Mean ± std per model, paired differences of each BoNMF variant against every other model."""
    from bonmf_pipe.pipeline.stats import mean_std, paired_difference

    models = list(dict.fromkeys(r["model"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["model"], r["seed"]): r for r in rows}
    table = {}
    for m in models:
        entry: dict[str, Any] = {"seeds": sum((m, s) in by for s in seeds)}
        for metric in METRICS:
            mean, std = mean_std([by[(m, s)].get(metric) for s in seeds if (m, s) in by])
            entry[metric] = {"mean": _r(mean), "std": _r(std)}
        table[m] = entry
    paired = {}
    for v in (m for m in models if m.startswith("bonmf ") and m != "bonmf none"):
        for ref in (m for m in models if m != v):
            both = [s for s in seeds if (v, s) in by and (ref, s) in by]
            paired[f"{v} - {ref}"] = {
                metric: {k: _r(x) if isinstance(x, float) else x for k, x in paired_difference(
                    [by[(v, s)][metric] for s in both], [by[(ref, s)][metric] for s in both], level).as_dict().items()}
                for metric in ("rmse", "cold_rmse")
            }
    return {"models": table, "paired": paired}


def markdown_lines(summary: dict[str, Any]) -> list[str]:
    """The README's results table (mean ± std over the seeds) and the paired comparisons."""
    def pm(v: dict, digits: int = 4) -> str:
        if v["mean"] is None:
            return "-"
        return f"{v['mean']:.{digits}f}" + ("" if v["std"] is None else f" ± {v['std']:.{digits}f}")

    lines = [f"| model | test RMSE | cold RMSE | MAE | P@{K} | NDCG@{K} | fit s | fit + predict s |",
             "| --- |" + " ---: |" * 7]
    for name, v in summary["models"].items():
        cells = [pm(v[m]) for m in ("rmse", "cold_rmse", "mae", f"precision_at_{K}", f"ndcg_at_{K}")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {pm(v['fit_seconds'], 2)} | {pm(v['run_seconds'], 2)} |")
    lines += ["", "| difference (paired by seed) | test RMSE [95% CI] | significant | cold RMSE [95% CI] | significant |",
              "| --- | ---: | --- | ---: | --- |"]
    for name, d in summary["paired"].items():
        cells = []
        for m in ("rmse", "cold_rmse"):
            x = d[m]
            if x["low"] is None:
                cells += ["-" if x["mean"] is None else f"{x['mean']:+.4f}", "-"]
            else:
                cells += [f"{x['mean']:+.4f} [{x['low']:+.4f}, {x['high']:+.4f}]",
                          ("yes, better" if x["mean"] < 0 else "yes, worse") if x["significant"] else "no"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _r(x: float) -> float | None:
    return None if x != x else round(float(x), 5)


def targets(summary: dict[str, Any]) -> dict[str, Any]:
    """Issue 8's ml-latest-small targets, checked on the means (and the paired intervals)."""
    t = summary["models"]
    out: dict[str, Any] = {}
    svd, surprise_svd = t.get("svd"), t.get("surprise SVD")
    if svd and surprise_svd and svd["fit_seconds"]["mean"] is not None:  # issue 11: the CPU trainer
        fit, bound = svd["fit_seconds"]["mean"], _r(2 * surprise_svd["fit_seconds"]["mean"])
        out["svd fit <= 2 x Surprise SVD fit (same run)"] = {"value": fit, "bound": bound, "met": fit <= bound}
        out["svd RMSE <= Surprise SVD RMSE"] = {"value": svd["rmse"]["mean"], "bound": surprise_svd["rmse"]["mean"],
                                                "met": svd["rmse"]["mean"] <= surprise_svd["rmse"]["mean"]}
    if "bonmf text+image" not in t:
        return out
    best = t["bonmf text+image"]
    svdpp = t.get("surprise SVD++")
    if svdpp:
        out["text+image <= 0.98 x Surprise SVD++"] = {
            "value": best["rmse"]["mean"], "bound": _r(0.98 * svdpp["rmse"]["mean"]),
            "met": best["rmse"]["mean"] <= 0.98 * svdpp["rmse"]["mean"]}
    if svd:
        out["text+image <= project svd"] = {"value": best["rmse"]["mean"], "bound": svd["rmse"]["mean"],
                                            "met": best["rmse"]["mean"] <= svd["rmse"]["mean"],
                                            "paired": summary["paired"].get("bonmf text+image - svd", {}).get("rmse")}
        out["cold: text+image >= 3% below svd"] = {
            "value": best["cold_rmse"]["mean"], "bound": _r(0.97 * svd["cold_rmse"]["mean"]),
            "met": best["cold_rmse"]["mean"] <= 0.97 * svd["cold_rmse"]["mean"]}
    return out


def code_version() -> dict[str, Any]:
    """The checkout's commit, and whether the package had uncommitted changes when measured."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bonmf_pipe"], cwd=root, capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "package_changes_uncommitted": None}
    return {"commit": head.stdout.strip(), "package_changes_uncommitted": bool(dirty.stdout.strip())}


def run(size: str, work: Path, path: Path = ML_LATEST_SMALL, posters: Path | None = ML1M_POSTERS,
        seeds: int | None = None, jobs: int = 2) -> dict[str, Any]:
    n_seeds = seeds or SEEDS[size]
    store = str(work / f"store-accuracy-{path.name}")
    features = ["text+image"] if size != "full" else ["none", "text", "image", "text+image"]
    if not posters:
        features = [f for f in features if "image" not in f] or ["text"]
    epochs = 2 if size == "smoke" else None
    prep = run_isolated("benchmarks.accuracy:prepare_step", path=str(path), posters=str(posters) if posters else None,
                        store=store)
    seed_list = [FIRST_SEED + i for i in range(n_seeds)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        per_seed = list(pool.map(lambda s: _one_seed(store, s, epochs, features, size == "smoke"), seed_list))
    rows = [r for seed_rows in per_seed for r in seed_rows]
    summary = summarize(rows)
    return {
        "settings": {"data": path.name, "posters": posters.name if posters else None,
                     "split": f"random:0.7, seeds {seed_list[0]}..{seed_list[-1]} (one split per seed)",
                     "seeds": seed_list, "surprise": "default parameters, random_state = seed"
                     + ("; SVD++ with n_epochs=3 (--smoke)" if size == "smoke" else ""),
                     "protocol": f"rated-items, relevant = rating >= {THRESHOLD}, project's metric functions; cold = "
                                 f"test items with < {COLD_MAX_TRAIN_RATINGS} ratings in the train part",
                     "project": "TrainSettings defaults on the CPU" + (" with epochs=2 (--smoke)" if epochs else ""),
                     "encoders": "offline preset", "jobs": jobs, "threads_per_job": 1,
                     "encode_seconds": round(prep["encode_seconds"], 1), "code": code_version()},
        "models": summary["models"],
        "paired": summary["paired"],
        "targets": targets(summary),
        "markdown": markdown_lines(summary),
        "rows": rows,
        "seeds_seconds": round(time.perf_counter() - t0, 1),
    }
