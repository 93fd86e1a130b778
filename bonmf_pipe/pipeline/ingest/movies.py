"""Parse the movies file of any edition (and links.csv) into typed item rows.

The result is a polars frame ``item_id, title, year, genres`` in file order. Titles are
split into title and year ("Toy Story (1995)" -> "Toy Story", 1995; "Death Note (2006–2007)"
-> 2006; no year -> null); titles like "American President, The" stay as given. The
"(no genres listed)" marker and ml-100k's "unknown" genre become an empty genre list.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from bonmf_pipe.pipeline.ingest.formats import GENRES_100K, EditionFormat, LineFormat
from bonmf_pipe.pipeline.ingest.reader import FieldBlocks, as_int, decode, first_problem, int_problem
from bonmf_pipe.pipeline.ingest.rejects import RejectSink, keep_first_per_key

NO_GENRES = {"(no genres listed)", "unknown", ""}
_TITLE_YEAR = r"^(.*?)\s*\((\d{4})(?:\s*[-–—]\s*(?:\d{2,4})?)?\)$"
ITEM_SCHEMA = {"item_id": pl.Int64, "title": pl.String, "year": pl.Int32, "genres": pl.List(pl.String)}


def title_and_year(col: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Split "Title (Year)" into a title and a year (null when the title has no year)."""
    full = col.str.strip_chars()
    groups = full.str.extract_groups(_TITLE_YEAR)
    head = groups.struct.field("1")
    title = pl.when(head.is_not_null() & (head.str.len_chars() > 0)).then(head).otherwise(full)
    year = pl.when(head.str.len_chars() > 0).then(groups.struct.field("2").cast(pl.Int32, strict=False))
    return title, year


def split_title(title: str) -> tuple[str, int | None]:
    """``title_and_year`` for one title (for callers outside a frame)."""
    t, y = title_and_year(pl.col("t"))
    row = pl.DataFrame({"t": [title]}).select(t.alias("title"), y.alias("year")).row(0)
    return row[0], row[1]


def parse_movies(
    path: Path, fmt: EditionFormat, sink: RejectSink, genre_names: tuple[str, ...] = GENRES_100K,
    block_bytes: int = 16 << 20,
) -> tuple[pl.DataFrame, int]:
    """Items of the movies file, and the number of lines read; bad lines go to ``sink``."""
    name, line_fmt = fmt.movies
    frames, read = [], 0
    blocks = FieldBlocks(path, line_fmt, block_bytes, required=True)
    for block, _ in blocks:
        read += block.height
        typed = _typed_100k(block, genre_names) if fmt.family == "100k" else _typed_pipe_genres(block)
        sink.add_frame(name, typed.filter(pl.col("bad").is_not_null()))
        frames.append(typed.filter(pl.col("bad").is_null()))
    sink.note_decoding(name, blocks.stats)
    items = pl.concat(frames) if frames else pl.DataFrame(schema={**ITEM_SCHEMA, "line": pl.Int64, "raw": pl.String})
    items = keep_first_per_key(items, "item_id", "movie id", name, sink)
    return items.select(*ITEM_SCHEMA), read


def _common(block: pl.DataFrame, genres: pl.Expr, extra_year: pl.Expr | None = None) -> pl.DataFrame:
    title, year = title_and_year(pl.col("title"))
    if extra_year is not None:
        year = pl.coalesce(year, extra_year)
    empty_title = pl.when(pl.col("title").is_not_null() & (pl.col("title").str.strip_chars() == "")).then(
        pl.lit("malformed: empty title")
    )
    return block.with_columns(
        first_problem(int_problem("item_id", "movie id"), empty_title),
    ).select(
        "line", "raw", "bad",
        as_int("item_id").alias("item_id"),
        title.alias("title"),
        year.alias("year"),
        genres.alias("genres"),
    )


def _typed_pipe_genres(block: pl.DataFrame) -> pl.DataFrame:
    genres = pl.col("genres").str.split("|").list.eval(
        pl.element().str.strip_chars().filter(~pl.element().str.strip_chars().is_in(list(NO_GENRES)))
    )
    return _common(block, genres)


def _typed_100k(block: pl.DataFrame, names: tuple[str, ...]) -> pl.DataFrame:
    flags = [f"g{i}" for i in range(19)]
    name_of = lambda i: names[i] if i < len(names) else f"genre {i}"  # noqa: E731
    genres = pl.concat_list(
        [pl.when(pl.col(f) == "1").then(pl.lit(name_of(i))) for i, f in enumerate(flags)]
    ).list.drop_nulls().list.eval(pl.element().filter(~pl.element().is_in(list(NO_GENRES))))
    bad_flag = pl.coalesce(
        *[
            pl.when(pl.col(f).is_not_null() & ~pl.col(f).is_in(["0", "1"])).then(
                pl.format(f"malformed: genre flag {i + 1} is not 0 or 1: '{{}}'", pl.col(f))
            )
            for i, f in enumerate(flags)
        ]
    )
    # The year comes from the title, else from the release date ("01-Jan-1995").
    release_year = pl.col("release_date").str.extract(r"(\d{4})\s*$").cast(pl.Int32, strict=False)
    block = block.with_columns(first_problem(bad_flag))
    return _common(block, genres, release_year)


def read_genre_names(path: Path) -> tuple[str, ...]:
    """ml-100k ``u.genre`` ("name|index" lines), else the standard list."""
    if not path.is_file():
        return GENRES_100K
    pairs = []
    for line in decode(path.read_bytes()).splitlines():
        name, _, idx = line.strip().rpartition("|")
        if name and idx.isdigit():
            pairs.append((int(idx), name))
    return tuple(n for _, n in sorted(pairs)) or GENRES_100K


# -- links.csv ---------------------------------------------------------------------------


LINK_SCHEMA = {"item_id": pl.Int64, "imdb_id": pl.String, "tmdb_id": pl.Int64}


def parse_links(path: Path, fmt: LineFormat, known_items: pl.Series, sink: RejectSink) -> tuple[pl.DataFrame, int]:
    """``item_id, imdb_id ("tt0114709"), tmdb_id (nullable)`` of links.csv, and lines read."""
    frames, read = [], 0
    blocks = FieldBlocks(path, fmt)
    for block, _ in blocks:
        read += block.height
        tmdb_bad = pl.when(pl.col("tmdb_id") != "").then(int_problem("tmdb_id", "tmdbId")).otherwise(None)
        typed = block.with_columns(
            first_problem(int_problem("item_id", "movieId"), int_problem("imdb_id", "imdbId"), tmdb_bad)
        )
        typed = typed.with_columns(
            item_id=as_int("item_id"),
            imdb_id=pl.format("tt{}", as_int("imdb_id").cast(pl.String).str.zfill(7)),
            tmdb_id=as_int("tmdb_id"),
        )
        unknown = pl.col("bad").is_null() & ~pl.col("item_id").is_in(known_items.implode())
        message = pl.format("unknown_item: movie {} is not in movies.csv", "item_id")
        typed = typed.with_columns(pl.when(unknown).then(message).otherwise("bad").alias("bad"))
        sink.add_frame(path.name, typed.filter(pl.col("bad").is_not_null()))
        frames.append(typed.filter(pl.col("bad").is_null()).select("line", "raw", *LINK_SCHEMA))
    sink.note_decoding(path.name, blocks.stats)
    links = pl.concat(frames) if frames else pl.DataFrame(schema={"line": pl.Int64, "raw": pl.String, **LINK_SCHEMA})
    links = keep_first_per_key(links, "item_id", "movie id", path.name, sink)
    return links.select(*LINK_SCHEMA), read
