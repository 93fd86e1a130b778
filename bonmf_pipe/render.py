"""Rich rendering of library results for the CLI (tables, summaries). No logic lives here."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
from rich.table import Table

from bonmf_pipe.console import console
from bonmf_pipe.errors import ConfigError


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def render_info(info) -> None:
    t = Table(title=f"store {info.root} (schema version {info.schema_version})")
    for col in ("table", "kind"):
        t.add_column(col)
    for col in ("rows", "shards", "bytes"):
        t.add_column(col, justify="right")
    for ti in info.tables:
        t.add_row(ti.name, ti.kind, f"{ti.rows:,}", str(ti.shards), human_bytes(ti.bytes))
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
        console.print(f"wrote {result.num_rows:,} rows to {output}")
        return
    if fmt == "table":
        t = Table(show_lines=False)
        for name in result.column_names:
            t.add_column(name)
        for row in result.slice(0, max_rows).to_pylist():
            t.add_row(*(_cell(v) for v in row.values()))
        console.print(t)
        if result.num_rows > max_rows:
            console.print(f"[dim]{result.num_rows:,} rows, first {max_rows} shown; use --output to get them all[/dim]")
    elif fmt == "csv":
        import io

        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(result, buf)
        console.out(buf.getvalue().decode(), end="", highlight=False)
    elif fmt == "json":
        console.out(json.dumps(result.to_pylist(), default=str), highlight=False)
    else:
        raise ConfigError("--format parquet needs --output FILE.")


def render_verify(report) -> None:
    for p in report.problems:
        style = "yellow" if p.severity == "warning" else "red"
        console.print(f"[{style}]{p.severity}[/{style}] {p.path}: {p.reason}")
    status = "[green]ok[/green]" if report.ok else "[red]problems found[/red]"
    console.print(f"verify: {report.folders} folders, {report.shards} shards: {status}")
