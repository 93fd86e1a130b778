"""Ablation: svd, nmf and BoNMF with each set of side information, over one or more seeds.

The BoNMF variants default to ``auto``: no side information, each feature set the store has
alone (text, image, then imported and template sets by name), text+image, and every set
together when there are more than those two; ``all`` in a variant names every set.

For each seed every variant trains from the same base ``TrainSettings`` (only ``model`` and
``features`` change), so all of them see the same split and therefore the same test rows;
each seed draws its own split. With ``tune_trials`` every variant is first tuned on that
seed's validation slice with the same budget (``pipeline.tune``), and the best trial's run
is the variant's run for that seed (tuning per seed keeps every seed's test rows out of its
own tuning: a split of another seed would have them in its train part).

The comparison lands in ``<store>/ablations/<id>/``: ``results.parquet`` (one row per seed
and variant; the ``ablations`` view), ``results.md`` (mean ± std per variant, the paired
comparison of each BoNMF variant against the best ID-only model with a 95% t-interval, and
the per-seed rows), ``results.json`` (settings, rows, summary, comparisons, notes), all
rewritten atomically after each run so a killed ablation keeps what finished, and, with
matplotlib installed (the ``plots`` extra), ``results.png``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bonmf_pipe.errors import ConfigError, StoreError
from bonmf_pipe.evaluation import EvalSettings
from bonmf_pipe.featurestore.features import MODALITIES, feature_names, feature_sets, is_feature_name
from bonmf_pipe.featurestore.runs import EPOCHS, label, new_run_id
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.featurestore.views import ABLATIONS_DIR
from bonmf_pipe.pipeline.ablate_report import K, RESULT_SCHEMA, RESULTS, plot, summarize, write_results
from bonmf_pipe.pipeline.tune import TuneSettings, tune
from bonmf_pipe.progress import ProgressCallback, Reporter
from bonmf_pipe.runtime import world
from bonmf_pipe.trainer import MODELS, TrainSettings, read_run_config, run_dir

__all__ = ["K", "RESULTS", "RESULT_SCHEMA", "AblateSettings", "AblationResult", "ablate", "parse_features",
           "store_feature_names"]


@dataclass(frozen=True)
class AblateSettings:
    """What an ablation trains (serialised into ``results.json``)."""

    train: TrainSettings = field(default_factory=TrainSettings)
    """Base settings of every run (split, first seed, epochs, lr, encoders, ...); model and
    features are set per variant, the seed per repetition."""
    features: tuple[str, ...] = ("auto",)
    """BoNMF variants, each a '+'-joined subset of the store's feature-set names (text, image,
    imported and template sets), 'none' (IDs only) or 'all' (every feature set the store has).
    'auto' expands to: none, each feature set alone, text+image, and all of them together
    when the store has more sets than text and image (a store with text and image only:
    none, text, image, text+image)."""
    baselines: tuple[str, ...] = ("svd", "nmf")
    """Models trained without side information for comparison."""
    name: str | None = None
    """A label for the ablation (part of its id)."""
    seeds: int = 1
    """Repetitions: seeds ``train.seed``, ``train.seed + 1``, ...; each draws its own split."""
    tune_trials: int = 0
    """Tune every variant with this many Optuna trials per seed before comparing (0 = no tuning)."""
    level: float = 0.95
    """Confidence level of the paired t-intervals."""

    def __post_init__(self) -> None:
        for b in self.baselines:
            if b not in MODELS or b == "bonmf":
                raise ConfigError(f"--baselines: {b!r} is not one of svd, nmf.")
        for f in self.features:
            if f.strip().lower() != AUTO:
                parse_features(f)
        if not self.features and not self.baselines:
            raise ConfigError("Nothing to ablate: give at least one --features variant or baseline.")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1 (got {self.seeds}).")
        if self.tune_trials < 0:
            raise ConfigError(f"--tune must be 0 (no tuning) or a number of trials (got {self.tune_trials}).")
        if not 0.5 <= self.level < 1.0:
            raise ConfigError(f"level must be in [0.5, 1) (got {self.level}).")

    def variants(self, available: tuple[str, ...] | list[str] = MODALITIES) -> list[tuple[str, tuple[str, ...]]]:
        """(model, features) of every run, baselines first; ``auto`` and ``all`` expand over
        ``available``, the feature-set names the store has (``store_feature_names``)."""
        bonmf: list[tuple[str, ...]] = []
        for spec in self.features:
            bonmf.extend(auto_variants(available) if spec.strip().lower() == AUTO else [expand(spec, available)])
        return [(b, ()) for b in self.baselines] + [("bonmf", f) for f in dict.fromkeys(bonmf)]

    def seed_list(self) -> list[int]:
        return [self.train.seed + i for i in range(self.seeds)]


AUTO, ALL = "auto", "all"


def store_feature_names(store: Store) -> list[str]:
    """Names of the feature sets the store holds (text, image, then the others by name)."""
    return [n for n in feature_names(store) if feature_sets(store, n)]


def auto_variants(available) -> list[tuple[str, ...]]:
    """none, each set alone, text+image (when both exist), and all of them (when more exist)."""
    names = tuple(available)
    out: list[tuple[str, ...]] = [(), *((n,) for n in names)]
    if all(m in names for m in MODALITIES):
        out.append(MODALITIES)
    if len(names) > 2 or (len(names) == 2 and set(names) != set(MODALITIES)):
        out.append(names)
    return list(dict.fromkeys(out))


def expand(spec: str, available) -> tuple[str, ...]:
    """A variant's feature sets, 'all' replaced by every name in ``available``."""
    parts: list[str] = []
    for p in parse_features(spec):
        parts.extend(available if p == ALL else [p])
    return tuple(dict.fromkeys(parts))


def parse_features(spec: str) -> tuple[str, ...]:
    """'text+image' -> ('text', 'image'); 'none' -> (); 'all' stays 'all' (see ``expand``)."""
    if spec.strip().lower() in ("none", ""):
        return ()
    parts = tuple(p.strip() for p in spec.replace(",", "+").split("+"))
    bad = [p for p in parts if not is_feature_name(p)]
    if bad:
        raise ConfigError(f"--features {spec!r}: {', '.join(bad)} is no feature-set name; use auto, none, all, text, "
                          "image, text+image or names of imported / template sets (`bonmf-pipe features coverage` "
                          "lists them).")
    return tuple(dict.fromkeys(parts))


def features_label(features: tuple[str, ...]) -> str:
    return "+".join(features) or "none"


@dataclass
class AblationResult:
    """The comparison (per-seed rows, summary, paired comparisons) and where it was written."""

    ablation_id: str
    folder: Path
    table: pa.Table
    split_id: str  # the first seed's split
    plot: Path | None = None
    notes: list[str] = field(default_factory=list)
    split_ids: dict[int, str] = field(default_factory=dict)
    summary: list[dict] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)

    @property
    def markdown(self) -> str:
        return (self.folder / "results.md").read_text()

    def row(self, model: str, features: str = "none", seed: int | None = None) -> dict:
        """The per-seed row of a variant (the first seed's unless ``seed`` is given)."""
        for r in self.table.to_pylist():
            if r["model"] == model and r["features"] == features and (seed is None or r["seed"] == seed):
                return r
        raise KeyError(f"no ablation row for {model}/{features}")

    def summary_row(self, model: str, features: str = "none") -> dict:
        """Mean, std and n of every metric of a variant over the seeds."""
        for r in self.summary:
            if r["model"] == model and r["features"] == features:
                return r
        raise KeyError(f"no ablation summary for {model}/{features}")


def ablate(store: Store, settings: AblateSettings | None = None, progress: ProgressCallback | None = None) -> AblationResult:
    """Train (and, when asked, tune) every variant of ``settings`` for every seed; write the comparison."""
    from bonmf_pipe.evaluation import evaluate_run  # the scorer and torch, loaded when an ablation runs

    s = settings or AblateSettings()
    if world().size > 1:
        raise ConfigError(
            "ablate runs in one process: start it without torchrun (each of its runs is small; "
            "train the variant you choose with `torchrun ... train`)."
        )
    report = Reporter(progress)
    label_text = label(s.name or "ablation")
    ablation_id = new_run_id(label_text)
    folder = store.root / ABLATIONS_DIR / ablation_id
    folder.mkdir(parents=True, exist_ok=False)
    rows: list[dict] = []
    curves: dict[str, list[dict]] = {}
    notes: list[str] = []
    split_ids: dict[int, str] = {}
    variants = s.variants(store_feature_names(store))
    total = len(variants) * s.seeds
    for seed in s.seed_list():
        base = dataclasses.replace(s.train, seed=seed)
        for model, feats in variants:
            n = len(rows) + 1
            report.note(f"ablation {ablation_id}: {n}/{total} seed {seed} {model} features={features_label(feats)}"
                        + (f", tuning {s.tune_trials} trials" if s.tune_trials else ""))
            run_settings = dataclasses.replace(base, model=model, features=feats,
                                               name=f"{label_text}-{model}-{features_label(feats)}-s{seed}")
            run_id, epochs, extra = _run_variant(store, s, ablation_id, run_settings, progress)
            split = str(read_run_config(store, run_id)["split_id"])
            if split_ids.setdefault(seed, split) != split:
                raise StoreError(f"Ablation {ablation_id}: seed {seed}'s runs landed on different splits "
                                 f"({split_ids[seed]}, {split}); this is a bug.")
            evaluation = evaluate_run(store, run_id, EvalSettings(full_catalogue=False), progress)
            rows.append(_result_row(ablation_id, seed, split, model, feats, run_id, epochs, evaluation, extra))
            if seed == s.train.seed:
                curves[_variant_label(model, feats)] = epochs
            write_results(folder, s, rows, notes, split_ids)
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    summary, comparisons = summarize(rows, s.level)
    if s.seeds < 2:
        notes.append("One seed: no spread and no interval; use --seeds 3 or more to compare models fairly.")
    picture = plot(folder, table, summary, comparisons, curves, notes)
    write_results(folder, s, rows, notes, split_ids)
    for note in notes:
        report.note(note)
    for c in comparisons:
        report.note(_comparison_line(c))
    return AblationResult(ablation_id, folder, table, split_ids[s.train.seed], picture, notes, split_ids, summary,
                          comparisons)


def _run_variant(store: Store, s: AblateSettings, ablation_id: str, run_settings: TrainSettings,
                 progress: ProgressCallback | None) -> tuple[str, list[dict], dict]:
    """Train the variant (or tune it and take the best trial's run); (run id, epochs, extra columns)."""
    from bonmf_pipe.trainer import train  # torch, loaded when a variant trains

    if not s.tune_trials:
        result = train(store, run_settings, progress)
        valid = [e["valid_rmse"] for e in result.epochs if e.get("valid_rmse") is not None]
        return result.run_id, result.epochs, {"valid_rmse": min(valid) if valid else None, "tune_study": None,
                                              "fit_seconds": _fit_seconds(result.epochs)}
    study = f"{ablation_id}-{run_settings.model}-{features_label(run_settings.features)}-s{run_settings.seed}"
    tuned = tune(store, TuneSettings(model=run_settings.model, features=run_settings.features,
                                     trials=s.tune_trials, seed=run_settings.seed, split=run_settings.split,
                                     train=run_settings, study=study), progress)
    if tuned.best is None or tuned.best.run_id is None:
        raise StoreError(f"Tuning {study} finished no trial, so the variant has no run; see the tuning table.")
    epochs = _run_epochs(store, tuned.best.run_id)
    return tuned.best.run_id, epochs, {"valid_rmse": tuned.best.valid_rmse, "tune_study": study,
                                       "fit_seconds": sum(r["seconds"] or 0.0 for r in tuned.trials)}


def _run_epochs(store: Store, run_id: str) -> list[dict]:
    path = run_dir(store, run_id) / EPOCHS
    return pq.read_table(path).to_pylist() if path.exists() else []


def _fit_seconds(epochs: list[dict]) -> float:
    return float(sum(e.get("seconds") or 0.0 for e in epochs))


def _variant_label(model: str, feats: tuple[str, ...]) -> str:
    return model if model != "bonmf" else f"bonmf {features_label(feats)}"


def _result_row(ablation_id: str, seed: int, split_id: str, model: str, feats: tuple[str, ...], run_id: str,
                epochs: list[dict], ev, extra: dict) -> dict:
    return {
        "ablation_id": ablation_id,
        "seed": seed,
        "split_id": split_id,
        "model": model,
        "features": features_label(feats),
        "rmse": ev.value("rmse"),
        "mae": ev.value("mae"),
        f"precision_at_{K}": ev.value("precision", "rated_items", "all", K),
        f"ndcg_at_{K}": ev.value("ndcg", "rated_items", "all", K),
        "cold_rmse": ev.value("rmse", "rating", "cold"),
        "unseen_rmse": ev.value("rmse", "rating", "unseen"),
        "cold_rows": ev.count("rmse", "rating", "cold"),
        "unseen_rows": ev.count("rmse", "rating", "unseen"),
        "valid_rmse": extra["valid_rmse"],
        "epochs_run": len(epochs),
        "fit_seconds": extra["fit_seconds"],
        "tune_study": extra["tune_study"],
        "run_id": run_id,
    }


def _comparison_line(c: dict) -> str:
    d = c["rmse"]
    sig = "significant" if d["significant"] else "not significant"
    return (f"{c['variant']} - {c['reference']}: test RMSE {d['mean']:+.4f} "
            f"[{d['low']:+.4f}, {d['high']:+.4f}] over {d['n']} seeds ({sig})")
