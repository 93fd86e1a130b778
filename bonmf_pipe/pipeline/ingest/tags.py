"""Stream a tags file (tags.csv, tags.dat) into the ``tags`` table and count tags per movie.

Each tag application (user, movie, tag, timestamp) is kept as given (whitespace trimmed).
For the items table, tags are counted per movie (case-folded when ``lowercase``) and the
``max_tags`` most applied become ``items.tags`` (ties broken alphabetically).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from bonmf_pipe.featurestore import TableWriter
from bonmf_pipe.pipeline.ingest.formats import LineFormat
from bonmf_pipe.pipeline.ingest.reader import FieldBlocks, as_int, first_problem, int_problem
from bonmf_pipe.pipeline.ingest.rejects import RejectSink
from bonmf_pipe.progress import Reporter


@dataclass(frozen=True)
class TagsResult:
    rows_read: int
    kept: int
    top_tags: pl.DataFrame  # item_id, tags (list, most applied first)
    user_ids: pl.Series  # distinct users who tagged


def ingest_tags(
    path: Path, fmt: LineFormat, known_items: pl.Series, sink: RejectSink, writer: TableWriter,
    report: Reporter, *, max_tags: int, lowercase: bool, movies_name: str, block_bytes: int = 16 << 20,
) -> TagsResult:
    task = f"read {path.name}"
    report.begin(task, total=path.stat().st_size, unit="bytes")
    counts, users, read, kept = [], [], 0, 0
    blocks = FieldBlocks(path, fmt, block_bytes)
    for block, consumed in blocks:
        read += block.height
        typed = _validate(block, known_items, movies_name)
        sink.add_frame(path.name, typed.filter(pl.col("bad").is_not_null()))
        good = typed.filter(pl.col("bad").is_null()).select("user_id", "item_id", "tag", "timestamp")
        writer.write(good.to_arrow())
        kept += good.height
        key = pl.col("tag").str.to_lowercase() if lowercase else pl.col("tag")
        counts.append(good.group_by("item_id", key.alias("tag")).len(name="n"))
        users.append(good.get_column("user_id").unique())
        report.advance(task, consumed)
    report.end(task)
    sink.note_decoding(path.name, blocks.stats)
    top = _top_tags(pl.concat(counts) if counts else None, max_tags)
    ids = pl.concat(users).unique() if users else pl.Series("user_id", [], dtype=pl.Int64)
    return TagsResult(rows_read=read, kept=kept, top_tags=top, user_ids=ids)


def _validate(block: pl.DataFrame, known_items: pl.Series, movies_name: str) -> pl.DataFrame:
    tag = pl.col("tag").str.strip_chars()
    typed = block.with_columns(
        first_problem(
            int_problem("user_id", "user id"),
            int_problem("item_id", "movie id"),
            pl.when(pl.col("tag").is_not_null() & (tag == "")).then(pl.lit("malformed: empty tag")),
            int_problem("timestamp"),
        )
    )
    item = as_int("item_id")
    unknown = pl.col("bad").is_null() & ~item.is_in(known_items.implode())
    typed = typed.with_columns(
        first_problem(pl.when(unknown).then(pl.format(f"unknown_item: movie {{}} is not in {movies_name}", item)))
    )
    return typed.select(
        "line", "raw", "bad",
        as_int("user_id").alias("user_id"),
        item.alias("item_id"),
        tag.alias("tag"),
        as_int("timestamp").alias("timestamp"),
    )


def _top_tags(counts: pl.DataFrame | None, max_tags: int) -> pl.DataFrame:
    schema = {"item_id": pl.Int64, "tags": pl.List(pl.String)}
    if counts is None or counts.height == 0 or max_tags <= 0:
        return pl.DataFrame(schema=schema)
    totals = counts.group_by("item_id", "tag").agg(pl.col("n").sum())
    ranked = totals.sort(["item_id", "n", "tag"], descending=[False, True, False])
    return ranked.group_by("item_id", maintain_order=True).agg(pl.col("tag").head(max_tags).alias("tags")).cast(schema)
