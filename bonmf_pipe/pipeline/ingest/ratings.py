"""Stream a ratings file into the ``ratings`` table in bounded memory.

1. Parse: the file is read in blocks of whole lines (exact line numbers), each block is split
   and validated vectorised with polars (field count, numbers, rating scale, known movie and
   user); bad rows go to rejects, good rows to a staging Parquet file with their line number.
2. Deduplicate: DuckDB (memory limit, spill folder inside the store) finds the (user, movie)
   pairs rated more than once and keeps the latest by timestamp (ties: the later line); the
   others are written, sorted by line, to a small Parquet file.
3. Write: the staging file is streamed in line order, the duplicate lines (a sorted merge)
   are dropped, and the rest goes to the table writer. The duplicates become rejects with
   their raw text, found by a second streamed pass over the source file.

Memory is bounded by the block size and DuckDB's limit, never by the number of ratings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from bonmf_pipe.errors import BonmfError, ConfigError, StoreError
from bonmf_pipe.featurestore import TableWriter
from bonmf_pipe.featurestore.duck import fetch_arrow
from bonmf_pipe.pipeline.ingest.formats import LineFormat
from bonmf_pipe.pipeline.ingest.reader import (
    FieldBlocks,
    as_float,
    as_int,
    first_problem,
    float_problem,
    int_problem,
    iter_line_blocks,
)
from bonmf_pipe.pipeline.ingest.rejects import RejectSink
from bonmf_pipe.progress import Reporter

STAGING_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64()),
        pa.field("item_id", pa.int64()),
        pa.field("rating", pa.float32()),
        pa.field("timestamp", pa.int64()),
        pa.field("line", pa.int64()),
    ]
)
_BATCH_ROWS = 256 * 1024


@dataclass(frozen=True)
class RatingsJob:
    """Everything one ratings pass needs."""

    path: Path
    fmt: LineFormat
    scale: str  # "integer" or "half"
    known_items: pl.Series
    known_users: pl.Series | None  # None: the edition has no users file, every user is known
    work_dir: Path  # scratch folder inside the store (staging file, DuckDB spill)
    block_bytes: int
    memory_limit: str
    threads: int
    movies_name: str = "movies"


@dataclass(frozen=True)
class RatingsResult:
    rows_read: int
    kept: int
    duplicates: int
    user_ids: pl.Series  # distinct users with a kept rating


def ingest_ratings(job: RatingsJob, writer: TableWriter, sink: RejectSink, report: Reporter) -> RatingsResult:
    staging = job.work_dir / "ratings-staging.parquet"
    dups_file = job.work_dir / "ratings-duplicates.parquet"
    read = _stage(job, staging, sink, report)
    report.begin("ratings: find duplicates", total=1, unit="passes")
    duplicates, users = _find_duplicates(job, staging, dups_file)
    report.advance("ratings: find duplicates")
    report.end("ratings: find duplicates")
    if duplicates:
        _reject_duplicates(job, dups_file, sink)
    kept = _write_final(staging, dups_file, writer, report)
    return RatingsResult(rows_read=read, kept=kept, duplicates=duplicates, user_ids=users)


# -- 1. parse and stage ------------------------------------------------------------------


def _stage(job: RatingsJob, staging: Path, sink: RejectSink, report: Reporter) -> int:
    task = f"read {job.path.name}"
    report.begin(task, total=job.path.stat().st_size, unit="bytes")
    read = 0
    with pq.ParquetWriter(staging, STAGING_SCHEMA, compression="lz4") as out:
        blocks = FieldBlocks(job.path, job.fmt, job.block_bytes, required=True)
        for block, consumed in blocks:
            read += block.height
            typed = validate_ratings(block, job)
            sink.add_frame(job.path.name, typed.filter(pl.col("bad").is_not_null()))
            good = typed.filter(pl.col("bad").is_null()).select(
                "user_id", "item_id", pl.col("rating").cast(pl.Float32), "timestamp", "line"
            )
            if good.height:
                out.write_table(good.to_arrow().cast(STAGING_SCHEMA))
            report.advance(task, consumed)
    sink.note_decoding(job.path.name, blocks.stats)
    report.end(task)
    return read


def validate_ratings(block: pl.DataFrame, job: RatingsJob) -> pl.DataFrame:
    """Typed ratings of one block with ``bad`` set to the first problem of each row."""
    rating = as_float("rating")
    if job.scale == "integer":
        in_scale, scale_text = (rating >= 1) & (rating <= 5) & (rating == rating.floor()), "1..5 (whole stars)"
    else:
        twice = rating * 2
        in_scale, scale_text = (rating >= 0.5) & (rating <= 5) & (twice == twice.floor()), "0.5..5.0 in half stars"
    problems = [
        int_problem("user_id", "user id"),
        int_problem("item_id", "movie id"),
        float_problem("rating"),
        int_problem("timestamp"),
    ]
    typed = block.with_columns(first_problem(*problems))
    ok = pl.col("bad").is_null()
    item = as_int("item_id")
    checks = [
        pl.when(ok & ~in_scale).then(pl.format(f"out_of_scale: rating {{}} is not in {scale_text}", pl.col("rating"))),
        pl.when(ok & ~item.is_in(job.known_items.implode())).then(
            pl.format(f"unknown_item: movie {{}} is not in {job.movies_name}", item)
        ),
    ]
    if job.known_users is not None:
        user = as_int("user_id")
        message = pl.format("unknown_user: user {} is not in the users file", user)
        checks.append(pl.when(ok & ~user.is_in(job.known_users.implode())).then(message))
    typed = typed.with_columns(first_problem(*checks))
    return typed.select(
        "line", "raw", "bad",
        as_int("user_id").alias("user_id"),
        item.alias("item_id"),
        rating.alias("rating"),
        as_int("timestamp").alias("timestamp"),
    )


# -- 2. duplicates with DuckDB -----------------------------------------------------------


def _connect(job: RatingsJob) -> duckdb.DuckDBPyConnection:
    spill = job.work_dir / "duckdb-spill"
    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = '{job.memory_limit}'")
    con.execute(f"SET temp_directory = '{_sql_str(spill)}'")
    con.execute(f"SET threads = {int(job.threads)}")
    con.execute("SET preserve_insertion_order = false")
    return con


def _sql_str(path: Path) -> str:
    return str(path).replace("'", "''")


def _find_duplicates(job: RatingsJob, staging: Path, dups_file: Path) -> tuple[int, pl.Series]:
    """Write the losing duplicate rows (line, keep, user_id, item_id) sorted by line;
    return their number and the distinct users of the staged ratings."""
    con = _connect(job)
    src = f"read_parquet('{_sql_str(staging)}')"
    try:
        con.execute(
            f"""COPY (
                SELECT s.line, p.keep, s.user_id, s.item_id
                FROM {src} s
                JOIN (SELECT user_id, item_id, max_by(line, (timestamp, line)) AS keep
                      FROM {src} GROUP BY user_id, item_id HAVING count(*) > 1) p
                USING (user_id, item_id)
                WHERE s.line <> p.keep
                ORDER BY s.line
            ) TO '{_sql_str(dups_file)}' (FORMAT parquet)"""
        )
        users = fetch_arrow(con.sql(f"SELECT DISTINCT user_id FROM {src} ORDER BY user_id"))
    except duckdb.Error as exc:
        raise _dedupe_error(job, exc) from exc
    finally:
        con.close()
    return pq.ParquetFile(dups_file).metadata.num_rows, pl.Series("user_id", users.column(0), dtype=pl.Int64)


def _dedupe_error(job: RatingsJob, exc: duckdb.Error) -> BonmfError:
    detail = str(exc).strip().splitlines()[0]
    if isinstance(exc, duckdb.OutOfMemoryException):
        return ConfigError(
            f"Finding duplicate ratings in {job.path.name} ran out of memory within --memory-limit "
            f"{job.memory_limit} ({detail}). Raise --memory-limit (e.g. 2GB)."
        )
    return StoreError(
        f"Finding duplicate ratings in {job.path.name} failed ({detail}). DuckDB spills to {job.work_dir}: "
        "check that the store's disk has free space, then ingest again."
    )


def _iter_dups(dups_file: Path) -> Iterator[pl.DataFrame]:
    for batch in pq.ParquetFile(dups_file, pre_buffer=False).iter_batches(batch_size=_BATCH_ROWS):
        yield pl.from_arrow(pa.Table.from_batches([batch]))


class _SortedLines:
    """Walk a stream of frames sorted by ``line``, taking the rows up to a given line."""

    def __init__(self, frames: Iterator[pl.DataFrame]):
        self._frames = frames
        self._head: pl.DataFrame | None = None

    def take_until(self, last_line: int) -> pl.DataFrame | None:
        parts = []
        while True:
            if self._head is None or self._head.height == 0:
                self._head = next(self._frames, None)
                if self._head is None:
                    break
            n = self._head.get_column("line").search_sorted(last_line, side="right")
            parts.append(self._head.slice(0, n))
            self._head = self._head.slice(n)
            if self._head.height:
                break
        return pl.concat(parts) if parts else None


def _reject_duplicates(job: RatingsJob, dups_file: Path, sink: RejectSink) -> None:
    """Second pass over the source file: reject the losing duplicates with their raw text."""
    dups = _SortedLines(_iter_dups(dups_file))
    for first, lines, _ in iter_line_blocks(job.path, job.block_bytes):
        chunk = dups.take_until(first + len(lines) - 1)
        if chunk is None or chunk.height == 0:
            continue
        raw = lines.gather((chunk.get_column("line") - first).cast(pl.Int64))
        sink.add_frame(
            job.path.name,
            chunk.with_columns(
                raw=raw,
                bad=pl.format("duplicate: user {} rated movie {} again; line {} (latest timestamp) is kept",
                              "user_id", "item_id", "keep"),
            ),
        )


# -- 3. write the table ------------------------------------------------------------------


def _write_final(staging: Path, dups_file: Path, writer: TableWriter, report: Reporter) -> int:
    source = pq.ParquetFile(staging, pre_buffer=False)  # pre_buffer caches every row group read
    total = source.metadata.num_rows
    report.begin("write ratings", total=total, unit="ratings")
    dups = _SortedLines(_iter_dups(dups_file))
    kept = 0
    for batch in source.iter_batches(batch_size=_BATCH_ROWS):
        frame = pl.from_arrow(pa.Table.from_batches([batch]))
        drop = dups.take_until(int(frame.get_column("line")[-1]))
        if drop is not None and drop.height:
            frame = frame.filter(~pl.col("line").is_in(drop.get_column("line").implode()))
        writer.write(frame.drop("line").to_arrow())
        kept += frame.height
        report.advance("write ratings", batch.num_rows)
    report.end("write ratings")
    return kept
