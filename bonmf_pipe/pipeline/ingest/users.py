"""Parse the users file of ml-100k (``u.user``) and ml-1m (``users.dat``).

USERS columns, by edition (both keep the values as MovieLens gives them):

- ``age``: ml-100k the age in years; ml-1m the age-group code (1, 18, 25, 35, 45, 50, 56).
- ``occupation``: an edition-specific code: ml-1m's code 0..20 from users.dat; ml-100k's
  0-based position of the name in ``u.occupation`` (the standard list when absent), null for
  a name not in it. ``occupation_name`` is the name in both ("programmer",
  "technician/engineer"), the column to compare across editions.

Editions without a users file (ml-10m, CSV) get one row per user id seen in the ratings or
tags, with the demographic columns null.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from bonmf_pipe.pipeline.ingest.formats import OCCUPATIONS_1M, OCCUPATIONS_100K, EditionFormat
from bonmf_pipe.pipeline.ingest.reader import FieldBlocks, as_int, decode, first_problem, int_problem
from bonmf_pipe.pipeline.ingest.rejects import RejectSink, keep_first_per_key

USER_SCHEMA = {
    "user_id": pl.Int64,
    "gender": pl.String,
    "age": pl.Int32,
    "occupation": pl.Int32,
    "zip_code": pl.String,
    "occupation_name": pl.String,
}


def parse_users(
    path: Path, fmt: EditionFormat, sink: RejectSink, occupations: tuple[str, ...]
) -> tuple[pl.DataFrame, int]:
    """The users of ``path`` (u.user or users.dat) and the number of lines read."""
    assert fmt.users is not None
    name, line_fmt = fmt.users
    frames, read = [], 0
    blocks = FieldBlocks(path, line_fmt, required=True)
    for block, _ in blocks:
        read += block.height
        typed = _typed(block, fmt.family == "100k", occupations)
        sink.add_frame(name, typed.filter(pl.col("bad").is_not_null()))
        frames.append(typed.filter(pl.col("bad").is_null()))
    sink.note_decoding(name, blocks.stats)
    users = pl.concat(frames) if frames else pl.DataFrame(schema={"line": pl.Int64, "raw": pl.String, **USER_SCHEMA})
    users = keep_first_per_key(users, "user_id", "user id", name, sink)
    return users.select(*USER_SCHEMA), read


def _typed(block: pl.DataFrame, by_name: bool, occupations: tuple[str, ...]) -> pl.DataFrame:
    problems = [int_problem("user_id", "user id"), int_problem("age")]
    if by_name:  # ml-100k: the occupation is a name
        code = pl.col("occupation").replace_strict(list(occupations), list(range(len(occupations))), default=None)
        name = pl.col("occupation")
    else:  # ml-1m: the occupation is a code
        problems.append(int_problem("occupation"))
        code = as_int("occupation")
        name = code.replace_strict(list(range(len(OCCUPATIONS_1M))), list(OCCUPATIONS_1M), default=None)
    block = block.with_columns(first_problem(*problems))
    return block.select(
        "line", "raw", "bad",
        as_int("user_id").alias("user_id"),
        pl.col("gender"),
        as_int("age").cast(pl.Int32).alias("age"),
        code.cast(pl.Int32).alias("occupation"),
        pl.col("zip_code"),
        name.cast(pl.String).alias("occupation_name"),
    )


def read_occupations(path: Path) -> tuple[str, ...]:
    """ml-100k ``u.occupation`` (one name a line), else the standard list."""
    if not path.is_file():
        return OCCUPATIONS_100K
    names = tuple(line.strip() for line in decode(path.read_bytes()).splitlines() if line.strip())
    return names or OCCUPATIONS_100K


def users_from_ids(ids: pl.Series) -> pl.DataFrame:
    """One row per distinct user id, demographics null (editions without a users file)."""
    frame = pl.DataFrame({"user_id": ids.unique().sort()}, schema={"user_id": pl.Int64})
    return frame.with_columns(*(pl.lit(None, dtype=t).alias(c) for c, t in USER_SCHEMA.items() if c != "user_id"))
