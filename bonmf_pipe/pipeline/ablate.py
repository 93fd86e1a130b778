"""Ablation: svd, nmf and BoNMF with each set of side information, on ONE split and seed.

Every variant trains from the same base ``TrainSettings`` (only ``model`` and ``features``
change), so all of them see the same split id and therefore the same test rows. The
comparison lands in ``<store>/ablations/<id>/``: ``results.parquet``, ``results.md`` (a
markdown table), ``results.json`` (settings, rows, notes), rewritten atomically after each
variant so a killed ablation keeps what finished, and, with matplotlib installed (the
``plots`` extra), ``results.png``: test/cold/unseen RMSE per variant and the valid RMSE of
every epoch.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from bonmf_pipe.errors import ConfigError, StoreError
from bonmf_pipe.featurestore.io import atomic_path, atomic_write_bytes, atomic_write_json
from bonmf_pipe.featurestore.store import Store, settings_dict, write_parquet_atomic
from bonmf_pipe.progress import ProgressCallback, Reporter
from bonmf_pipe.trainer.settings import FEATURES, MODELS, TrainSettings

RESULTS = "results.parquet"
RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
RESULTS_PNG = "results.png"
K = 10
RESULT_SCHEMA = pa.schema(
    [
        pa.field("ablation_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("features", pa.string()),  # "none", "text", "image", "text+image"
        pa.field("rmse", pa.float64()),
        pa.field("mae", pa.float64()),
        pa.field(f"precision_at_{K}", pa.float64()),  # rated-items protocol
        pa.field(f"ndcg_at_{K}", pa.float64()),  # rated-items protocol
        pa.field("cold_rmse", pa.float64()),
        pa.field("unseen_rmse", pa.float64()),
        pa.field("cold_rows", pa.int64()),
        pa.field("unseen_rows", pa.int64()),
        pa.field("fit_seconds", pa.float64()),  # training epochs only
        pa.field("run_id", pa.string()),
    ]
)


@dataclass(frozen=True)
class AblateSettings:
    """What an ablation trains (serialised into ``results.json``)."""

    train: TrainSettings = field(default_factory=TrainSettings)
    """Base settings of every run (split, seed, epochs, lr, encoders, ...); model and features are set per variant."""
    features: tuple[str, ...] = ("none", "text", "image", "text+image")
    """BoNMF variants: each entry a '+'-joined subset of text, image, or 'none'."""
    baselines: tuple[str, ...] = ("svd", "nmf")
    """Models trained without side information for comparison."""
    name: str | None = None
    """A label for the ablation (part of its id)."""

    def __post_init__(self) -> None:
        for b in self.baselines:
            if b not in MODELS or b == "bonmf":
                raise ConfigError(f"--baselines: {b!r} is not one of svd, nmf.")
        for f in self.features:
            parse_features(f)
        if not self.features and not self.baselines:
            raise ConfigError("Nothing to ablate: give at least one --features variant or baseline.")

    def variants(self) -> list[tuple[str, tuple[str, ...]]]:
        """(model, features) of every run, baselines first."""
        return [(b, ()) for b in self.baselines] + [("bonmf", parse_features(f)) for f in self.features]


def parse_features(spec: str) -> tuple[str, ...]:
    """'text+image' -> ('text', 'image'); 'none' -> ()."""
    if spec.strip().lower() in ("none", ""):
        return ()
    parts = tuple(p.strip() for p in spec.replace(",", "+").split("+"))
    bad = [p for p in parts if p not in FEATURES]
    if bad:
        raise ConfigError(f"--features {spec!r}: {', '.join(bad)} unknown; use none, text, image or text+image.")
    return tuple(dict.fromkeys(parts))


def features_label(features: tuple[str, ...]) -> str:
    return "+".join(features) or "none"


@dataclass
class AblationResult:
    """The comparison table and where it was written."""

    ablation_id: str
    folder: Path
    table: pa.Table
    split_id: str
    plot: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def markdown(self) -> str:
        return (self.folder / RESULTS_MD).read_text()

    def row(self, model: str, features: str = "none") -> dict:
        for r in self.table.to_pylist():
            if r["model"] == model and r["features"] == features:
                return r
        raise KeyError(f"no ablation row for {model}/{features}")


def ablate(store: Store, settings: AblateSettings | None = None, progress: ProgressCallback | None = None) -> AblationResult:
    """Train every variant of ``settings`` and write the comparison table (and chart)."""
    from bonmf_pipe.trainer import train

    s = settings or AblateSettings()
    report = Reporter(progress)
    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in (s.name or "ablation"))[:40]
    ablation_id = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{label}-{uuid.uuid4().hex[:6]}"
    folder = store.root / "ablations" / ablation_id
    folder.mkdir(parents=True, exist_ok=False)
    rows: list[dict] = []
    epochs: dict[str, list[dict]] = {}
    notes: list[str] = []
    split_ids: set[str] = set()
    variants = s.variants()
    for n, (model, feats) in enumerate(variants, 1):
        name = f"{label}-{model}-{features_label(feats)}"
        report.note(f"ablation {ablation_id}: {n}/{len(variants)} {model} features={features_label(feats)}")
        run_settings = dataclasses.replace(s.train, model=model, features=feats, name=name)
        result = train(store, run_settings, progress)
        evaluation = result.evaluation or _evaluate(store, result.run_id, progress)
        rows.append(_result_row(ablation_id, model, feats, result, evaluation))
        epochs[_variant_label(model, feats)] = result.epochs
        split_ids.add(_split_of(store, result.run_id))
        if len(split_ids) > 1:
            raise StoreError(f"Ablation {ablation_id}: runs landed on different splits {sorted(split_ids)}; this is a bug.")
        _write_results(folder, s, rows, notes, next(iter(split_ids)))
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    plot = _plot(folder, table, epochs, notes)
    split_id = next(iter(split_ids))
    _write_results(folder, s, rows, notes, split_id)
    for note in notes:
        report.note(note)
    return AblationResult(ablation_id, folder, table, split_id, plot, notes)


def _evaluate(store: Store, run_id: str, progress: ProgressCallback | None):
    from bonmf_pipe.evaluation.evaluate import evaluate_run

    return evaluate_run(store, run_id, progress=progress)


def _split_of(store: Store, run_id: str) -> str:
    from bonmf_pipe.trainer import read_run_config

    return str(read_run_config(store, run_id)["split_id"])


def _variant_label(model: str, feats: tuple[str, ...]) -> str:
    return model if model != "bonmf" else f"bonmf {features_label(feats)}"


def _result_row(ablation_id: str, model: str, feats: tuple[str, ...], result, ev) -> dict:
    return {
        "ablation_id": ablation_id,
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
        "fit_seconds": float(sum(e.get("seconds") or 0.0 for e in result.epochs)),
        "run_id": result.run_id,
    }


# -- outputs ---------------------------------------------------------------------------------
def markdown_table(table: pa.Table) -> str:
    """The comparison as a GitHub markdown table."""
    head = ["model", "features", "RMSE", "MAE", f"P@{K}", f"NDCG@{K}", "cold RMSE", "unseen RMSE", "fit s", "run"]
    cols = ["model", "features", "rmse", "mae", f"precision_at_{K}", f"ndcg_at_{K}", "cold_rmse", "unseen_rmse",
            "fit_seconds", "run_id"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " if i < 2 or i == 9 else " ---: " for i in range(len(head))) + "|"]
    for r in table.to_pylist():
        cells = [_fmt(r[c], 1 if c == "fit_seconds" else 4) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v, digits: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if v != v else f"{v:.{digits}f}"
    return str(v)


def _write_results(folder: Path, s: AblateSettings, rows: list[dict], notes: list[str], split_id: str) -> None:
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    write_parquet_atomic(folder / RESULTS, table)
    text = f"Test set: split {split_id}, seed {s.train.seed}; P@{K} and NDCG@{K} rank each user's rated test items.\n\n"
    atomic_write_bytes(folder / RESULTS_MD, (text + markdown_table(table)).encode())
    atomic_write_json(
        folder / RESULTS_JSON,
        {"ablation_id": folder.name, "split_id": split_id, "settings": settings_dict(s), "notes": notes, "rows": rows},
    )


def _plot(folder: Path, table: pa.Table, epochs: dict[str, list[dict]], notes: list[str]) -> Path | None:
    """RMSE per variant (test, cold, unseen) and valid RMSE per epoch; None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        notes.append("matplotlib is not installed, so no chart was drawn (pip install 'bonmf-pipe[plots]').")
        return None
    rows = table.to_pylist()
    labels = [_variant_label(r["model"], parse_features(r["features"])) for r in rows]
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    bars, curves = fig.subplots(1, 2)
    width = 0.27
    for j, (col, title) in enumerate((("rmse", "test"), ("cold_rmse", "cold items"), ("unseen_rmse", "unseen items"))):
        xs = [i + (j - 1) * width for i in range(len(rows))]
        bars.bar(xs, [r[col] if r[col] == r[col] else 0.0 for r in rows], width, label=title)
    bars.set_xticks(range(len(rows)), labels, rotation=20, ha="right")
    finite = [r[c] for r in rows for c in ("rmse", "cold_rmse", "unseen_rmse") if r[c] == r[c]]
    if finite:
        bars.set_ylim(min(finite) * 0.95, max(finite) * 1.02)
    bars.set_ylabel("RMSE")
    bars.set_title("test RMSE by model")
    bars.legend()
    for label, eps in epochs.items():
        pts = [(e["epoch"], e["valid_rmse"]) for e in eps if e.get("valid_rmse") is not None]
        if pts:
            curves.plot(*zip(*pts), marker="o", label=label)
    curves.set_xlabel("epoch")
    curves.set_ylabel("valid RMSE")
    curves.set_title("training curves")
    curves.legend()
    path = folder / RESULTS_PNG
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path

