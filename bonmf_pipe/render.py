"""What the terminal shows: rich progress driven by library events, and result tables.

No logic lives here. When stdout is not a terminal (a pipe, a file, CI), tables are printed
in full instead of being cut to 80 columns, and progress bars become periodic log lines.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.progress import ProgressEvent

WIDE = 1000  # columns of a console that is not a terminal: tables keep their natural width


def _console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=WIDE)


console = _console()
err_console = _console(stderr=True)


def progress_renderer(out: Console | None = None, interval: float = 10.0):
    """The CLI's progress callback: live bars on a terminal, else log lines every ``interval`` s."""
    out = out or err_console
    return RichProgress(out) if out.is_terminal else LogProgress(out, interval)


class RichProgress:
    """A progress callback that shows one bar per task with rate and ETA."""

    def __init__(self, out: Console | None = None):
        self.console = out or err_console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, int] = {}
        self._units: dict[str, str] = {}

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        p = self._progress
        if event.kind == "begin":
            self._tasks[event.task] = p.add_task(escape(event.task), total=event.total, rate="")
            self._units[event.task] = event.unit
        elif event.kind == "advance" and event.task in self._tasks:
            tid = self._tasks[event.task]
            p.advance(tid, event.advance)
            speed = p.tasks[tid].speed if tid < len(p.tasks) else None
            p.update(tid, rate=f"{speed:,.0f} {self._units[event.task]}/s" if speed else "")
        elif event.kind == "end" and event.task in self._tasks:
            tid = self._tasks.pop(event.task)
            task = next(t for t in p.tasks if t.id == tid)
            if task.total is None:
                p.update(tid, total=task.completed)
            speed = task.finished_speed or task.speed
            p.update(tid, rate=f"{speed:,.0f} {self._units[event.task]}/s" if speed else "")
            p.stop_task(tid)
        elif event.kind == "note":
            style = "yellow" if event.level == "warning" else "dim"
            p.console.print(f"[{style}]{escape(event.message)}[/{style}]")


class LogProgress:
    """Progress as plain log lines, for output that is not a terminal: a line when a task
    starts, at most one every ``interval`` seconds while it runs, and one when it ends."""

    def __init__(self, out: Console, interval: float = 10.0, clock=time.monotonic):
        self.console, self.interval, self._clock = out, interval, clock
        self._tasks: dict[str, dict] = {}

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def __call__(self, event: ProgressEvent) -> None:
        now = self._clock()
        if event.kind == "begin":
            self._tasks[event.task] = {"start": now, "last": now, "done": 0, "total": event.total, "unit": event.unit}
            self._line(f"{event.task}: started" + (f" ({event.total:,} {event.unit})" if event.total else ""))
        elif event.kind == "advance" and event.task in self._tasks:
            t = self._tasks[event.task]
            t["done"] += event.advance
            if now - t["last"] >= self.interval:
                t["last"] = now
                of = f"/{t['total']:,}" if t["total"] else ""
                self._line(f"{event.task}: {t['done']:,}{of} {t['unit']} ({_rate(t, now)})")
        elif event.kind == "end" and event.task in self._tasks:
            t = self._tasks.pop(event.task)
            self._line(f"{event.task}: done, {t['done']:,} {t['unit']} in {now - t['start']:.1f} s ({_rate(t, now)})")
        elif event.kind == "note":
            self._line(("warning: " if event.level == "warning" else "") + event.message)


def _rate(task: dict, now: float) -> str:
    seconds = max(now - task["start"], 1e-9)
    return f"{task['done'] / seconds:,.0f} {task['unit']}/s"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def render_info(info) -> None:
    t = Table(title=f"store {escape(str(info.root))} (schema version {info.schema_version})")
    for col in ("table", "kind"):
        t.add_column(col)
    for col in ("rows", "shards", "bytes"):
        t.add_column(col, justify="right")
    for ti in info.tables:
        t.add_row(ti.name, ti.kind, f"{ti.rows:,}", str(ti.shards), human_bytes(ti.bytes))
    console.print(t)
    for c in info.coverage:  # per feature set (its newest key): items with / without a current vector
        console.print(f"coverage {escape(c.feature_set)} ({c.encoder_key}, {c.dim}-d): {c.with_vector:,} of "
                      f"{c.items:,} items have a vector, {c.without_vector:,} do not")


def render_coverage(rows) -> None:
    """``features coverage``: per feature set, items with and without a current vector."""
    if not rows:
        console.print("no feature sets in this store yet: run `bonmf-pipe encode` or `bonmf-pipe features import`")
        return
    t = Table(title="feature coverage (the newest set of each name)")
    for col in ("feature set", "key", "dim", "items", "with a vector", "without"):
        t.add_column(col, justify="left" if col in ("feature set", "key") else "right")
    for c in rows:
        t.add_row(escape(c.feature_set), c.encoder_key, str(c.dim), f"{c.items:,}", f"{c.with_vector:,}",
                  f"{c.without_vector:,}")
    console.print(t)


def _cell(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list) and len(v) > 8:
        return "[" + ", ".join(_cell(x) for x in v[:8]) + f", ... ({len(v)} values)]"
    return str(v)


def render_query_result(result: pa.Table, fmt: str, output: Path | None, max_rows: int = 200) -> None:
    from bonmf_pipe.featurestore.sql import write_result

    if fmt not in {"table", "csv", "json", "parquet"}:
        raise ConfigError(f"--format {fmt!r} is not one of table, csv, json, parquet.")
    if output is not None:
        write_result(result, "csv" if fmt == "table" else fmt, output)
        console.print(f"wrote {result.num_rows:,} rows to {escape(str(output))}")
        return
    if fmt == "table":
        t = Table(show_lines=False)
        for name in result.column_names:
            t.add_column(escape(name))
        for row in result.slice(0, max_rows).to_pylist():
            t.add_row(*(escape(_cell(v)) for v in row.values()))
        console.print(t)
        if result.num_rows > max_rows:
            console.print(f"[dim]{result.num_rows:,} rows, first {max_rows} shown; use --output to get them all[/dim]")
    elif fmt == "csv":
        from bonmf_pipe.featurestore.sql import csv_bytes

        console.out(csv_bytes(result).decode(), end="", highlight=False)
    elif fmt == "json":
        console.out(json.dumps(result.to_pylist(), default=str), highlight=False)
    else:
        raise ConfigError("--format parquet needs --output FILE.")


def render_verify(report) -> None:
    for p in report.problems:
        style = "yellow" if p.severity == "warning" else "red"
        console.print(f"[{style}]{p.severity}[/{style}] {escape(str(p.path))}: {escape(str(p.reason))}")
    status = "[green]ok[/green]" if report.ok else "[red]problems found[/red]"
    console.print(f"verify: {report.folders} folders, {report.shards} shards: {status}")


# --- evaluation: evaluate, ablate, recommend -------------------------------------------


def _metric(v) -> str:
    return "-" if v is None or v != v else f"{v:.4f}"


def render_evaluation(report) -> None:
    """Rating errors, then one row per (protocol, subset, metric) with a column per K."""
    rows = report.table.to_pylist()
    t = Table(title=f"evaluation of {report.run_id}")
    for col in ("subset", "MSE", "RMSE", "MAE", "test rows"):
        t.add_column(col, justify="left" if col == "subset" else "right")
    for subset in ("all", "cold", "unseen"):
        vals = {r["metric"]: r for r in rows if r["protocol"] == "rating" and r["subset"] == subset}
        if vals:
            t.add_row(subset, *(_metric(vals[m]["value"]) for m in ("mse", "rmse", "mae")), f"{vals['mse']['n']:,}")
    console.print(t)
    ks = sorted({r["k"] for r in rows if r["k"] is not None})
    t = Table(title=f"ranking (relevant: rating >= {report.settings.threshold:g})")
    for col in ("protocol", "subset", "metric", *(f"@{k}" for k in ks), "users"):
        t.add_column(col, justify="right" if col.startswith("@") or col == "users" else "left")
    seen = []
    for r in rows:
        key = (r["protocol"], r["subset"], r["metric"])
        if r["k"] is None or key in seen:
            continue
        seen.append(key)
        vals = {x["k"]: x for x in rows if (x["protocol"], x["subset"], x["metric"]) == key}
        t.add_row(*key, *(_metric(vals[k]["value"]) if k in vals else "-" for k in ks), f"{r['n']:,}")
    console.print(t)
    for note in report.notes:
        console.print(f"[dim]{escape(str(note))}[/dim]")
    console.print(f"wrote {escape(str(report.path))} ({report.seconds:.1f} s)")


def render_ablation(result) -> None:
    """Mean ± std per variant over the seeds, then each BoNMF variant minus the best ID-only
    model, paired by seed, with its interval (per-seed rows are in results.md)."""
    from bonmf_pipe.pipeline.ablate_report import COMPARED, K

    seeds = len(result.split_ids) or 1
    t = Table(title=f"ablation {result.ablation_id} ({seeds} seed{'s' if seeds > 1 else ''}, mean ± std)")
    cols = [("RMSE", "rmse"), ("MAE", "mae"), (f"P@{K}", f"precision_at_{K}"), (f"NDCG@{K}", f"ndcg_at_{K}"),
            ("cold RMSE", "cold_rmse"), ("unseen RMSE", "unseen_rmse"), ("fit s", "fit_seconds")]
    t.add_column("variant")
    for head, _ in cols:
        t.add_column(head, justify="right")
    for e in result.summary:
        t.add_row(escape(e["variant"]), *(_mean_std(e[f"{c}_mean"], e[f"{c}_std"], 1 if c == "fit_seconds" else 4)
                                          for _, c in cols))
    console.print(t)
    if result.comparisons and seeds > 1:
        c = Table(title="paired by seed: variant minus the best ID-only model (95% interval)")
        for head in ("variant", "minus", *(f"{m.replace('_', ' ').replace('rmse', 'RMSE')} difference" for m in COMPARED)):
            c.add_column(head, justify="left" if head in ("variant", "minus") else "right")
        for comp in result.comparisons:
            c.add_row(escape(comp["variant"]), escape(comp["reference"]), *(_difference(comp[m]) for m in COMPARED))
        console.print(c)
    for note in result.notes:
        console.print(f"[yellow]{escape(str(note))}[/yellow]")
    console.print(f"wrote {escape(str(result.folder))}" + (f" (chart {result.plot.name})" if result.plot else ""))


def _mean_std(mean: float, std: float, digits: int) -> str:
    if mean is None or mean != mean:
        return "-"
    return f"{mean:.{digits}f}" if std is None or std != std else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _difference(d: dict) -> str:
    """``-0.0259 [-0.0295, -0.0223]``, green when significantly better, red when worse."""
    if d["mean"] != d["mean"]:
        return "-"
    if d["low"] != d["low"]:
        return f"{d['mean']:+.4f}"
    text = f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
    if d["significant"]:
        return f"[green]{text}[/green]" if d["mean"] < 0 else f"[red]{text}[/red]"
    return text


def render_recommendations(table: pa.Table, run: str, user: int) -> None:
    meta = table.schema.metadata or {}
    t = Table(title=f"top {table.num_rows} for user {user} (run {meta.get(b'run_id', run.encode()).decode()})")
    for col, just in (("rank", "right"), ("item_id", "right"), ("title", "left"), ("year", "right"), ("score", "right")):
        t.add_column(col, justify=just)
    for r in table.to_pylist():
        t.add_row(str(r["rank"]), str(r["item_id"]), escape(r["title"] or "?"), str(r["year"] or ""), f"{r['score']:.3f}")
    console.print(t)
    if b"note" in meta:
        console.print(escape(meta[b"note"].decode()))


def render_sample_summary(summary) -> None:
    t = Table(title=f"sample ({summary.edition}, synthetic)")
    t.add_column("what")
    t.add_column("count", justify="right")
    for what, n in (("users", summary.users), ("movies", summary.items), ("ratings", summary.ratings),
                    ("tags", summary.tags), ("posters", summary.posters)):
        t.add_row(what, f"{n:,}")
    console.print(t)
    speed = f"ratings in {summary.ratings_seconds:.1f} s ({summary.ratings / max(summary.ratings_seconds, 1e-9):,.0f}/s)"
    if summary.posters:
        speed += f", posters in {summary.posters_seconds:.1f} s ({summary.posters / max(summary.posters_seconds, 1e-9):,.0f}/s)"
    console.print(f"mean rating {summary.rating_mean:.3f}; {speed}")
    console.print(f"wrote {escape(str(summary.out))}: {', '.join(summary.files)}")
    posters = f" --posters {summary.out / 'posters'}" if summary.posters else ""
    console.print(f"next: bonmf-pipe ingest --path {escape(str(summary.out) + posters)}")


def render_fetched(folder: Path) -> None:
    console.print(f"MovieLens ready in {escape(str(folder))}")
    console.print(f"next: bonmf-pipe ingest --path {escape(str(folder))}")


def render_ingest_summary(summary) -> None:
    """Rows read and kept per file, rejects by reason, posters, and the totals of an ingest."""
    t = Table(title=f"ingest {escape(str(summary.path))} ({summary.edition}, {summary.seconds:.1f} s)")
    t.add_column("source")
    for col in ("read", "kept", "rejected"):
        t.add_column(col, justify="right")
    for f in summary.files:
        t.add_row(escape(f.source), f"{f.rows_read:,}", f"{f.rows_kept:,}", f"{f.rows_read - f.rows_kept:,}")
    if summary.posters_found or summary.posters_matched or summary.posters_rejected:
        t.add_row("posters", f"{summary.posters_found:,}", f"{summary.posters_matched:,}", f"{summary.posters_rejected:,}")
    console.print(t)
    ratings = f"{summary.ratings:,} ratings" if summary.ratings_present else "no ratings (the edition has no ratings file)"
    console.print(
        f"{summary.items:,} items, {summary.users:,} users, {ratings}, {summary.tag_applications:,} tag applications"
    )
    if summary.rejected:
        r = Table(title="rejected rows by reason (see: bonmf-pipe sql \"SELECT * FROM rejects\")")
        r.add_column("reason")
        r.add_column("rows", justify="right")
        for reason, n in summary.rejected.items():
            r.add_row(reason, f"{n:,}")
        console.print(r)
    else:
        console.print("[green]no rejected rows[/green]")
    if summary.latin1_lines:
        console.print("[yellow]read as latin-1 (not UTF-8):[/yellow] "
                      + ", ".join(f"{escape(k)} {v:,} lines" for k, v in summary.latin1_lines.items()))


def render_encode_summary(summary) -> None:
    """Per modality: encoder key, encoded / skipped / failed, seconds and items/s of an encode."""
    i, n = summary.shard
    shard = f", shard {i}/{n}" if n > 1 else ""
    t = Table(title=f"encode {escape(str(summary.store))} ({summary.device}, {summary.dtype}{shard}, {summary.seconds:.1f} s)")
    t.add_column("modality")
    t.add_column("model")
    t.add_column("encoder key", no_wrap=True)
    for col in ("encoded", "skipped", "failed", "seconds", "items/s"):
        t.add_column(col, justify="right")
    for m in summary.modalities:
        t.add_row(
            m.modality, f"{m.model} ({m.dim or '?'}-d)", m.encoder_key or "-", f"{m.encoded:,}", f"{m.skipped:,}",
            f"{m.failed + m.excluded:,}", f"{m.seconds:.1f}", f"{m.items_per_s:,.0f}" if m.encoded else "-",
        )
    console.print(t)
    if any(m.failed or m.excluded for m in summary.modalities):
        console.print(
            "[yellow]some posters or texts could not be used[/yellow]: bonmf-pipe sql \"SELECT * FROM rejects WHERE stage = 'encode'\""
        )
    if not any(m.model_loaded for m in summary.modalities):
        console.print("[dim]nothing new to encode: no model was loaded[/dim]")


def render_similar(table: pa.Table, item: str, modality: str) -> None:
    t = Table(title=f"nearest to {escape(str(item))} by {escape(str(modality))}")
    for col, just in (("rank", "right"), ("item_id", "right"), ("title", "left"), ("year", "right"), ("cosine", "right")):
        t.add_column(col, justify=just)
    for r in table.to_pylist():
        t.add_row(str(r["rank"]), str(r["item_id"]), escape(r["title"] or ""), str(r["year"] or ""), f"{r['similarity']:.3f}")
    console.print(t)


def render_demo_result(result) -> None:
    render_ablation(result.ablation)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items())
    console.print(f"pipeline done in {result.seconds:.1f}s ({stages}); store: {escape(str(result.store))}")
    console.print(f"next: bonmf-pipe sql \"SELECT * FROM runs\" --store {escape(str(result.store))}")


def render_train_result(trained) -> None:
    """The run's epochs, then the evaluation's full metrics."""
    result = trained.run
    t = Table(title=f"run {result.run_id} ({result.mode} mode)")
    for col in ("epoch", "train MSE", "valid RMSE", "seconds", "ratings/s"):
        t.add_column(col, justify="right")
    for e in result.epochs:
        best = " *" if e["epoch"] == result.best_epoch else ""
        t.add_row(
            f"{e['epoch']}{best}", f"{e['train_loss']:.4f}", _metric(e["valid_rmse"]), f"{e['seconds']:.1f}",
            f"{e['ratings_per_s']:,.0f}",
        )
    console.print(t)
    render_evaluation(trained.evaluation)
    console.print(f"run folder: {escape(str(result.run_dir))} (best epoch {result.best_epoch}, {result.seconds:.1f} s)")


def render_tune_result(result) -> None:
    """One row per trial (best marked), then where the study lives and how to use it."""
    t = Table(title=f"study {escape(result.study)} ({result.ran} trials run now, {result.already_done} before; {result.seconds:.1f} s)")
    for col in ("trial", "state", "valid RMSE", "epochs", "params"):
        t.add_column(col, justify="left" if col in ("state", "params") else "right")
    for r in result.trials:
        mark = " *" if r.get("is_best") else ""
        t.add_row(f"{r['trial']}{mark}", r["state"], _metric(r["valid_rmse"]), str(r["epochs_run"] or "-"),
                  escape(_params(r["params"])))
    console.print(t)
    for note in result.notes:
        console.print(f"[yellow]{escape(note)}[/yellow]")
    if result.best is not None:
        console.print(f"study in {escape(str(result.storage))}; all trials: bonmf-pipe sql \"SELECT * FROM tuning\"")
        console.print(f"next: bonmf-pipe train --params best:{escape(result.study)}")


def _params(text: str | None) -> str:
    """A trial's params JSON as short ``name=value`` pairs."""
    values = json.loads(text) if text else {}
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def render_vacuum(report) -> None:
    kept = ", ".join(str(v) for v in report.kept_snapshots)
    console.print(
        f"vacuum: kept snapshot(s) {kept} (current {report.current}); removed {report.snapshots_removed} snapshot(s), "
        f"{report.generations_removed} table generation(s), {report.files_removed} file(s), {human_bytes(report.bytes_freed)}"
    )
