"""Stream a text file in blocks of whole lines and split them into named string fields.

A block is a polars frame with ``line`` (1-based line number in the file), ``raw`` (the line
without its line ending) and one string column per field; ``bad`` holds
"malformed: ..." for lines that do not split into the expected fields (their field columns
are null). Nothing here converts types: the file-specific parsers do, vectorised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from bonmf_pipe.errors import InputError
from bonmf_pipe.pipeline.ingest.formats import LineFormat

DEFAULT_BLOCK_BYTES = 16 << 20
MAX_LINE_BYTES = 64 << 20  # no MovieLens line comes near this: a longer one means the file is not text


def decode(data: bytes) -> str:
    """Bytes as text, line by line: UTF-8 where a line is valid UTF-8, else latin-1; never fails."""
    return decode_lines(data)[0]


@dataclass
class DecodeStats:
    """How the lines of one file were decoded (updated while it is read)."""

    latin1_lines: int = 0  # lines that are not valid UTF-8, decoded as latin-1
    first_latin1_line: int | None = None  # 1-based number of the first such line


def decode_lines(data: bytes, first_line: int = 1, stats: DecodeStats | None = None) -> tuple[str, int]:
    """``data`` decoded per line (see ``decode``) and the number of lines decoded as latin-1.

    A file that is UTF-8 stays UTF-8 even when one line is not (that line alone is read as
    latin-1, the encoding of ml-1m and ml-100k); nothing is ever re-decoded as a whole.
    """
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        pass
    out, latin1 = [], 0
    for offset, line in enumerate(data.split(b"\n")):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(line.decode("latin-1"))
            latin1 += 1
            if stats is not None and stats.first_latin1_line is None:
                stats.first_latin1_line = first_line + offset
    if stats is not None:
        stats.latin1_lines += latin1
    return "\n".join(out), latin1


def iter_line_blocks(
    path: Path, block_bytes: int = DEFAULT_BLOCK_BYTES, stats: DecodeStats | None = None
) -> Iterator[tuple[int, pl.Series, int]]:
    """Yield ``(first_line_number, lines, bytes_consumed)`` for blocks of whole lines.

    Line numbers are 1-based and count every physical line. Line endings (``\\n`` or
    ``\\r\\n``) are removed; a UTF-8 byte order mark at the start is dropped. Lines are
    decoded one by one (``decode_lines``); ``stats`` counts those read as latin-1.
    """
    line_no, rest, pending = 1, b"", 0
    with _open(path) as fh:
        while chunk := _read(fh, path, block_bytes):
            data, pending = rest + chunk, pending + len(chunk)
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) > MAX_LINE_BYTES:
                    raise InputError(
                        f"{path}, line {line_no}: longer than {MAX_LINE_BYTES >> 20} MB without a line break, so "
                        "this is not a MovieLens text file (a compressed or binary file?). Unpack it or point "
                        "--path at the right folder."
                    )
                rest = data
                continue
            rest = data[cut + 1 :]
            lines = _split_lines(data[:cut], line_no, stats)
            yield line_no, lines, pending
            line_no, pending = line_no + len(lines), 0
        if rest:
            yield line_no, _split_lines(rest, line_no, stats), pending


def _open(path: Path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}). Check that it is a readable file.") from exc


def _read(fh, path: Path, size: int) -> bytes:
    try:
        return fh.read(size)
    except OSError as exc:
        raise InputError(f"{path}: reading failed ({exc.strerror or exc}). Check the disk or copy the file again.") from exc


def _split_lines(data: bytes, first_line: int, stats: DecodeStats | None) -> pl.Series:
    if first_line == 1:
        data = data.removeprefix(b"\xef\xbb\xbf")
    text, _ = decode_lines(data, first_line, stats)
    lines = pl.Series("raw", [text], dtype=pl.String).str.split("\n").explode()
    return lines.str.strip_suffix("\r")


@dataclass
class FieldBlocks:
    """Iterate a file as frames of named fields, checking the CSV header on line 1.

    With ``required`` a file without a data line (0 bytes, or only its header) is an
    InputError naming it, not an empty table. ``stats`` counts the lines read as latin-1.
    """

    path: Path
    fmt: LineFormat
    block_bytes: int = DEFAULT_BLOCK_BYTES
    required: bool = False
    stats: DecodeStats = field(default_factory=DecodeStats)

    def __iter__(self) -> Iterator[tuple[pl.DataFrame, int]]:
        """Yield ``(frame, bytes_consumed)``; the header line is checked and skipped."""
        data_lines = 0
        for first, lines, consumed in iter_line_blocks(self.path, self.block_bytes, self.stats):
            if first == 1 and self.fmt.header is not None:
                self._check_header(lines[0] if len(lines) else "")
                lines, first = lines.slice(1), 2
            data_lines += len(lines)
            if len(lines):
                yield split_fields(lines, first, self.fmt), consumed
        if self.required and data_lines == 0:
            self._empty()

    def _empty(self) -> None:
        if self.path.stat().st_size == 0:
            what = "is empty (0 bytes)"
        else:
            what = "has no data lines (only its header)" if self.fmt.header else "has no data lines"
        raise InputError(
            f"{self.path} {what}, so the ingest would empty its table. Check the file (an interrupted "
            "download or copy?) and ingest again."
        )

    def _check_header(self, line: str) -> None:
        found = tuple(f.strip().strip('"').lower() for f in line.split(","))
        if found != tuple(h.lower() for h in self.fmt.header or ()):
            raise InputError(
                f"{self.path}, line 1: expected the header '{','.join(self.fmt.header or ())}', found "
                f"'{line[:200]}'. Is this a MovieLens {self.path.name} (CSV editions start with a header)?"
            )


def split_fields(lines: pl.Series, first_line: int, fmt: LineFormat) -> pl.DataFrame:
    """Split ``lines`` into the fields of ``fmt``; see the module docstring for the columns."""
    df = pl.DataFrame({"raw": lines}).with_columns(
        line=pl.int_range(first_line, first_line + len(lines), dtype=pl.Int64)
    )
    k = len(fmt.fields)
    if fmt.sep is not None:
        parts = pl.col("raw").str.split(fmt.sep)
        df = df.with_columns(_n=parts.list.len().cast(pl.Int64))
        ok = pl.col("_n") == k
        fields = {f: pl.when(ok).then(parts.list.get(i, null_on_oob=True)) for i, f in enumerate(fmt.fields)}
        bad = pl.format(f"malformed: expected {k} fields, got {{}}", pl.col("_n"))
    else:
        groups = pl.col("raw").str.extract_groups(fmt.pattern or "")
        df = df.with_columns(_g=groups)
        ok = pl.col("_g").struct.field("1").is_not_null()
        fields = {f: pl.col("_g").struct.field(str(i + 1)) for i, f in enumerate(fmt.fields)}
        expected = ",".join(fmt.header) if fmt.header else "::".join(fmt.fields)
        bad = pl.lit(f"malformed: expected {k} fields ({expected})")
    empty = pl.col("raw").str.strip_chars() == ""
    df = df.with_columns(
        *((e if name == fmt.quoted else e.str.strip_chars()).alias(name) for name, e in fields.items()),
        bad=pl.when(empty).then(pl.lit("malformed: empty line")).when(~ok).then(bad).otherwise(None),
    )
    if fmt.quoted:
        df = df.with_columns(unquote(pl.col(fmt.quoted)).alias(fmt.quoted))
    return df.drop("_n", "_g", strict=False)


def unquote(col: pl.Expr) -> pl.Expr:
    """A CSV field without its surrounding quotes, with doubled quotes undone."""
    s = col.str.strip_chars(" ")
    quoted = s.str.starts_with('"') & s.str.ends_with('"') & (s.str.len_chars() >= 2)
    inner = s.str.slice(1, s.str.len_chars() - 2).str.replace_all('""', '"', literal=True)
    return pl.when(quoted).then(inner).otherwise(col)


# -- typed conversion ------------------------------------------------------------------


def as_int(name: str) -> pl.Expr:
    return pl.col(name).str.to_integer(strict=False).cast(pl.Int64)


def as_float(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.Float64, strict=False)


def int_problem(name: str, label: str | None = None) -> pl.Expr:
    """'malformed: <label> is not an integer: <value>' where the field does not parse."""
    bad = pl.col(name).is_not_null() & as_int(name).is_null()
    return pl.when(bad).then(pl.format(f"malformed: {label or name} is not an integer: '{{}}'", pl.col(name)))


def float_problem(name: str, label: str | None = None) -> pl.Expr:
    value = as_float(name)
    bad = pl.col(name).is_not_null() & (value.is_null() | ~value.is_finite())
    return pl.when(bad).then(pl.format(f"malformed: {label or name} is not a number: '{{}}'", pl.col(name)))


def first_problem(*problems: pl.Expr) -> pl.Expr:
    """The first non-null problem of a row: the ``bad`` column (field split), then these."""
    return pl.coalesce(pl.col("bad"), *problems).alias("bad")
