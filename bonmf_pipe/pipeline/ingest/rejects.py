"""Collect rejected input rows and stream them into the ``rejects`` table.

A reason reads ``code: detail`` with a short stable code (``malformed``, ``out_of_scale``,
``unknown_item``, ``unknown_user``, ``duplicate``, ``poster_empty``, ``poster_not_image``,
``poster_truncated``, ``poster_undecodable``, ``poster_duplicate``, ``poster_name``,
``poster_unknown_item``); the summary counts rows by code. ``source`` is the file's name in
the MovieLens folder ("ratings.csv"), or a poster's absolute path (``line`` and ``raw``
null); ``raw`` is the line, cut at 500 chars.
"""

from __future__ import annotations

from collections import Counter

import polars as pl

from bonmf_pipe.errors import InputError
from bonmf_pipe.featurestore import TableWriter
from bonmf_pipe.featurestore.schema import REJECTS
from bonmf_pipe.pipeline.ingest.formats import EditionFormat
from bonmf_pipe.pipeline.ingest.reader import DecodeStats

STAGE = "ingest"
RAW_MAX_CHARS = 500
_FLUSH_ROWS = 65_536


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


class RejectSink:
    """Buffers rejects and writes them in batches to a ``rejects`` TableWriter."""

    def __init__(self, writer: TableWriter):
        self.writer = writer
        self.by_code: Counter[str] = Counter()
        self.by_source: Counter[str] = Counter()
        self.by_source_code: Counter[tuple[str, str]] = Counter()
        self.latin1_lines: Counter[str] = Counter()  # kept lines that were not UTF-8, by file
        self._buffer: list[pl.DataFrame] = []
        self._buffered = 0

    @property
    def total(self) -> int:
        return sum(self.by_code.values())

    def note_decoding(self, source: str, stats: DecodeStats) -> None:
        """Count the lines of ``source`` that were read as latin-1 (they are kept, not rejected)."""
        if stats.latin1_lines:
            self.latin1_lines[source] += stats.latin1_lines

    def add_frame(self, source: str, frame: pl.DataFrame, reason: str = "bad") -> None:
        """Reject every row of ``frame`` (columns ``line``, ``raw`` and the reason column)."""
        if frame.height == 0:
            return
        rows = frame.select(
            pl.lit(STAGE).alias("stage"),
            pl.lit(source).alias("source"),
            pl.col("line").cast(pl.Int64),
            pl.col("raw").str.slice(0, RAW_MAX_CHARS),
            pl.col(reason).alias("reason"),
        )
        codes = rows.get_column("reason").str.split_exact(":", 1).struct.field("field_0").str.strip_chars()
        counts = dict(codes.value_counts().iter_rows())
        self.by_code.update(counts)
        self.by_source_code.update({(source, code): n for code, n in counts.items()})
        self.by_source[source] += rows.height
        self._buffer.append(rows)
        self._buffered += rows.height
        if self._buffered >= _FLUSH_ROWS:
            self.flush()

    def add(self, source: str, line: int | None, raw: str | None, reason: str) -> None:
        """Reject one row (``line`` None for whole files such as posters)."""
        frame = pl.DataFrame(
            {"line": [line], "raw": [raw], "bad": [reason]},
            schema={"line": pl.Int64, "raw": pl.String, "bad": pl.String},
        )
        self.add_frame(source, frame)

    def flush(self) -> None:
        if not self._buffer:
            return
        self.writer.write(pl.concat(self._buffer).to_arrow().cast(REJECTS))
        self._buffer, self._buffered = [], 0


def keep_first_per_key(frame: pl.DataFrame, key: str, label: str, source: str, sink: RejectSink) -> pl.DataFrame:
    """Keep the first line of each ``key`` value; reject the later ones as duplicates."""
    first = frame.group_by(key).agg(pl.col("line").min().alias("_first"))
    frame = frame.join(first, on=key, how="left", maintain_order="left")
    message = pl.format(f"duplicate: {label} {{}} is already defined on line {{}}", key, "_first")
    sink.add_frame(source, frame.filter(pl.col("line") != pl.col("_first")).with_columns(message.alias("bad")))
    return frame.filter(pl.col("line") == pl.col("_first")).drop("_first")


def check_not_all_rejected(files, sink: RejectSink, allow_empty: bool, fmt: EditionFormat) -> None:
    """An InputError when the movies, users or ratings file had rows and every one was rejected.

    ``files`` are the ingest's FileStats. With ``allow_empty`` such an ingest goes on (and
    its tables come out empty); otherwise it stops before committing anything.
    """
    sources = {fmt.movies[0], fmt.ratings[0], *((fmt.users[0],) if fmt.users else ())}
    emptied = [f for f in files if f.source in sources and f.rows_read > 0 and f.rows_kept == 0]
    if allow_empty or not emptied:
        return
    parts = []
    for f in emptied:
        codes = Counter({code: n for (src, code), n in sink.by_source_code.items() if src == f.source})
        reasons = ", ".join(f"{code} {n:,}" for code, n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))[:4])
        parts.append(f"{f.source} ({f.rows_read:,} rows: {reasons})")
    raise InputError(
        f"Every row of {' and '.join(parts)} was rejected, so the ingest would leave empty tables; nothing "
        "was committed. Check the files (right edition? right --dataset?), or pass --allow-empty to "
        "commit empty tables anyway."
    )
