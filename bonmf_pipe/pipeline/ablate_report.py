"""The outputs of an ablation: per-seed rows, mean ± std per variant, paired comparisons of
each BoNMF variant against the best ID-only model, as Parquet, markdown, JSON and a chart."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa

from bonmf_pipe.featurestore.io import atomic_path, atomic_write_bytes, atomic_write_json
from bonmf_pipe.featurestore.store import settings_dict, write_parquet_atomic
from bonmf_pipe.featurestore.views import ABLATION_RESULTS as RESULTS
from bonmf_pipe.pipeline.stats import mean_std, paired_difference

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
RESULTS_PNG = "results.png"
K = 10
RESULT_SCHEMA = pa.schema(
    [
        pa.field("ablation_id", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("split_id", pa.string()),
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
        pa.field("valid_rmse", pa.float64()),  # best per-epoch valid RMSE (what tuning minimised)
        pa.field("epochs_run", pa.int64()),
        pa.field("fit_seconds", pa.float64()),  # training epochs only (all trials when tuned)
        pa.field("tune_study", pa.string()),  # the Optuna study of the variant, when tuned
        pa.field("run_id", pa.string()),
    ]
)
METRICS = ("rmse", "mae", f"precision_at_{K}", f"ndcg_at_{K}", "cold_rmse", "unseen_rmse", "valid_rmse", "fit_seconds")
COMPARED = ("rmse", "cold_rmse")
ID_ONLY = "none"


def _label(model: str, features: str) -> str:
    return model if model != "bonmf" else f"bonmf {features}"


def summarize(rows: list[dict], level: float = 0.95) -> tuple[list[dict], list[dict]]:
    """(summary, comparisons). Summary: per variant, in first-seen order, ``<metric>_mean``,
    ``<metric>_std`` and ``seeds``. Comparisons: each BoNMF variant with side information minus
    the ID-only variant of lowest mean test RMSE (svd, nmf or bonmf none), paired by seed."""
    order: list[tuple[str, str]] = list(dict.fromkeys((r["model"], r["features"]) for r in rows))
    summary = []
    for model, feats in order:
        mine = [r for r in rows if (r["model"], r["features"]) == (model, feats)]
        entry = {"model": model, "features": feats, "variant": _label(model, feats), "seeds": len(mine)}
        for m in METRICS:
            entry[f"{m}_mean"], entry[f"{m}_std"] = mean_std([_num(r[m]) for r in mine])
        summary.append(entry)
    id_only = [e for e in summary if e["features"] == ID_ONLY and not math.isnan(e["rmse_mean"])]
    if not id_only:
        return summary, []
    ref = min(id_only, key=lambda e: e["rmse_mean"])
    comparisons = []
    by_seed = {(r["model"], r["features"], r["seed"]): r for r in rows}
    for e in summary:
        if e["model"] != "bonmf" or e["features"] == ID_ONLY:
            continue
        seeds = sorted({r["seed"] for r in rows if (r["model"], r["features"]) == (e["model"], e["features"])}
                       & {r["seed"] for r in rows if (r["model"], r["features"]) == (ref["model"], ref["features"])})
        comp = {"variant": e["variant"], "reference": ref["variant"], "seeds": seeds}
        for m in COMPARED:
            a = [_num(by_seed[(e["model"], e["features"], sd)][m]) for sd in seeds]
            b = [_num(by_seed[(ref["model"], ref["features"], sd)][m]) for sd in seeds]
            comp[m] = paired_difference(a, b, level).as_dict()
        comparisons.append(comp)
    return summary, comparisons


def _num(v) -> float:
    return math.nan if v is None else float(v)


# -- markdown ---------------------------------------------------------------------------------
def _pm(mean: float, std: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _interval(d: dict) -> str:
    if math.isnan(d["low"]):
        return f"{d['mean']:+.4f}" if not math.isnan(d["mean"]) else "-"
    return f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def summary_markdown(summary: list[dict]) -> str:
    head = ["variant", "seeds", "RMSE", "MAE", f"P@{K}", f"NDCG@{K}", "cold RMSE", "unseen RMSE", "valid RMSE", "fit s"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for e in summary:
        cells = [e["variant"], str(e["seeds"])]
        cells += [_pm(e[f"{m}_mean"], e[f"{m}_std"]) for m in METRICS[:-1]]
        cells.append(_pm(e["fit_seconds_mean"], e["fit_seconds_std"], 1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_markdown(comparisons: list[dict], level: float) -> str:
    pct = f"{level:.0%}"
    head = ["variant", "minus", f"test RMSE diff [{pct} CI]", "significant", f"cold RMSE diff [{pct} CI]", "significant"]
    lines = ["| " + " | ".join(head) + " |", "| --- | --- | ---: | --- | ---: | --- |"]
    for c in comparisons:
        cells = [c["variant"], c["reference"]]
        for m in COMPARED:
            cells += [_interval(c[m]), _significance(c[m])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _significance(d: dict) -> str:
    if d["n"] < 2:
        return "-"
    if not d["significant"]:
        return "no"
    return "yes, better" if d["mean"] < 0 else "yes, worse"


def rows_markdown(rows: list[dict]) -> str:
    head = ["seed", "model", "features", "RMSE", "MAE", f"P@{K}", f"NDCG@{K}", "cold RMSE", "unseen RMSE", "valid RMSE",
            "epochs", "fit s", "run"]
    cols = ["seed", "model", "features", "rmse", "mae", f"precision_at_{K}", f"ndcg_at_{K}", "cold_rmse", "unseen_rmse",
            "valid_rmse", "epochs_run", "fit_seconds", "run_id"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(" --- " if c in ("model", "features", "run_id") else " ---: " for c in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c], 1 if c == "fit_seconds" else 4) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v, digits: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if v != v else f"{v:.{digits}f}"
    return str(v)


def markdown(rows: list[dict], summary: list[dict], comparisons: list[dict], split_ids: dict[int, str],
             level: float) -> str:
    seeds = ", ".join(f"{sd} (split {sp})" for sd, sp in split_ids.items())
    text = (f"Seeds: {seeds}. Mean ± sample standard deviation over the seeds; P@{K} and NDCG@{K} rank each "
            "user's rated test items.\n\n" + summary_markdown(summary))
    if comparisons:
        text += (f"\nPaired by seed: mean difference (negative = lower error than the reference) with its "
                 f"{level:.0%} Student-t interval; significant when the interval excludes 0.\n\n"
                 + comparison_markdown(comparisons, level))
    return text + "\nPer seed:\n\n" + rows_markdown(rows)


def write_results(folder: Path, s, rows: list[dict], notes: list[str], split_ids: dict[int, str]) -> None:
    """results.parquet, results.md, results.json (atomically; called after every run)."""
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    write_parquet_atomic(folder / RESULTS, table)
    summary, comparisons = summarize(rows, s.level)
    atomic_write_bytes(folder / RESULTS_MD, markdown(rows, summary, comparisons, split_ids, s.level).encode())
    atomic_write_json(folder / RESULTS_JSON, {
        "ablation_id": folder.name, "split_ids": {str(k): v for k, v in split_ids.items()},
        "settings": settings_dict(s), "notes": notes, "summary": _json_safe(summary),
        "comparisons": _json_safe(comparisons), "rows": _json_safe(rows),
    })


def _json_safe(obj):
    """NaN becomes null (JSON has no NaN)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


# -- chart --------------------------------------------------------------------------------------
def plot(folder: Path, table: pa.Table, summary: list[dict], comparisons: list[dict], curves: dict[str, list[dict]],
         notes: list[str]) -> Path | None:
    """Mean RMSE per variant with ± std bars, the paired differences with their intervals, and
    the first seed's valid RMSE per epoch; None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        notes.append("matplotlib is not installed, so no chart was drawn (pip install 'bonmf-pipe[plots]').")
        return None
    fig = Figure(figsize=(16, 4.8), layout="constrained")
    bars, diffs, lines = fig.subplots(1, 3)
    width = 0.27
    labels = [e["variant"] for e in summary]
    for j, (col, title) in enumerate((("rmse", "test"), ("cold_rmse", "cold items"), ("unseen_rmse", "unseen items"))):
        xs = [i + (j - 1) * width for i in range(len(summary))]
        means = [0.0 if math.isnan(e[f"{col}_mean"]) else e[f"{col}_mean"] for e in summary]
        errs = [0.0 if math.isnan(e[f"{col}_std"]) else e[f"{col}_std"] for e in summary]
        bars.bar(xs, means, width, yerr=errs, capsize=3, label=title)
    bars.set_xticks(range(len(summary)), labels, rotation=20, ha="right")
    finite = [e[f"{c}_mean"] for e in summary for c in ("rmse", "cold_rmse", "unseen_rmse") if not math.isnan(e[f"{c}_mean"])]
    if finite:
        bars.set_ylim(min(finite) * 0.95, max(finite) * 1.03)
    n = max((e["seeds"] for e in summary), default=1)
    bars.set_ylabel("RMSE")
    bars.set_title(f"RMSE by variant (mean ± std over {n} seed{'s' if n != 1 else ''})")
    bars.legend()
    _plot_differences(diffs, comparisons)
    for label, eps in curves.items():
        pts = [(e["epoch"], e["valid_rmse"]) for e in eps if e.get("valid_rmse") is not None]
        if pts:
            lines.plot(*zip(*pts), marker="o", label=label)
    lines.set_xlabel("epoch")
    lines.set_ylabel("valid RMSE")
    lines.set_title("training curves (first seed)")
    if curves:
        lines.legend()
    path = folder / RESULTS_PNG
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _plot_differences(ax, comparisons: list[dict]) -> None:
    ax.axvline(0.0, color="grey", linewidth=1)
    ys, names = [], []
    for i, c in enumerate(comparisons):
        for j, (m, colour) in enumerate((("rmse", "C0"), ("cold_rmse", "C1"))):
            d = c[m]
            if math.isnan(d["mean"]):
                continue
            y = i + (j - 0.5) * 0.3
            err = None if math.isnan(d["low"]) else [[d["mean"] - d["low"]], [d["high"] - d["mean"]]]
            ax.errorbar([d["mean"]], [y], xerr=err, fmt="o", color=colour, capsize=4,
                        label=("test" if m == "rmse" else "cold items") if i == 0 else None)
        ys.append(i)
        names.append(f"{c['variant']}\n- {c['reference']}")
    ax.set_yticks(ys, names)
    ax.set_xlabel("RMSE difference (negative = better)")
    level = comparisons[0]["rmse"]["level"] if comparisons else 0.95
    ax.set_title(f"paired differences, {level:.0%} t-interval" if comparisons else "no paired comparison")
    if comparisons:
        ax.legend()
