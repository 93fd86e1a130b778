"""Settings and summary of the ingest stage."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.pipeline.ingest.formats import DATASET_CHOICES, check_folder
from bonmf_pipe.pipeline.ingest.text import template_fields

DEFAULT_TEXT_TEMPLATE = "{title} ({year}). Genres: {genres}. Tags: {tags}."
_MEMORY_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
MIN_MEMORY_LIMIT_MB = 64  # below this DuckDB cannot deduplicate even a small ratings file


@dataclass(frozen=True)
class IngestSettings:
    """How to read one MovieLens folder (and a poster folder) into the store.

    The item text (the text encoder's input, ``items.text``) comes from ``text_template``
    with ``{title}`` (without the year), ``{year}``, ``{genres}`` (", "-joined, file order)
    and ``{tags}`` (the ``max_tags`` most applied tags, ", "-joined, most applied first, ties
    alphabetical). Parts that would be empty are dropped: a parenthesised group whose
    placeholders are all empty goes, then any sentence (the template is cut after each ". ")
    with an empty placeholder, except the title's. Default, for Toy Story with tags and for
    a movie with neither year nor tags::

        Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun.
        Babylon 5. Genres: Sci-Fi.
    """

    path: Path
    """The MovieLens folder (the unzipped archive: u.data, ratings.dat or ratings.csv ...)."""
    dataset: str = "auto"
    """Edition: auto (detect), ml-100k, ml-1m, ml-10m, ml-latest-small, ml-latest, ml-20m,
    ml-25m, ml-32m, or ml-csv (any CSV edition)."""
    posters: Path | None = None
    """Folder of posters named <movieId>.jpg|png|webp; None: no posters."""
    text_template: str = DEFAULT_TEXT_TEMPLATE
    """Template of items.text; see the class docstring."""
    max_tags: int = 20
    """At most this many tags per item in items.tags and the text (0: none)."""
    lowercase_tags: bool = True
    """Count and show item tags case-folded ("Funny" and "funny" are one tag); the tags
    table keeps each application as written."""
    block_bytes: int = 16 << 20
    """Files are streamed in blocks of about this many bytes of whole lines."""
    duckdb_memory_limit: str = "1GB"
    """DuckDB's memory limit while deduplicating ratings (it spills to the store beyond it)."""
    threads: int | None = None
    """DuckDB threads; None: every CPU core."""
    poster_workers: int | None = None
    """Processes that check posters when there are many; None: every CPU core (at most 16)."""
    allow_empty: bool = False
    """Commit even when every row of the movies, users or ratings file was rejected (the
    tables come out empty); by default such an ingest fails and the store keeps its tables."""

    def __post_init__(self) -> None:
        check_folder(Path(self.path))  # before any store is created for it
        if self.dataset not in DATASET_CHOICES:
            raise ConfigError(f"--dataset {self.dataset!r} is not one of {', '.join(DATASET_CHOICES)}.")
        if self.max_tags < 0:
            raise ConfigError(f"max_tags must be 0 or more, not {self.max_tags}.")
        if self.block_bytes < 1024:
            raise ConfigError(f"block_bytes must be at least 1024, not {self.block_bytes}.")
        self._check_memory_limit()
        for name in ("threads", "poster_workers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a whole number of at least 1 (or None: every core), not {value!r}.")
        template_fields(self.text_template)

    def _check_memory_limit(self) -> None:
        match = _MEMORY_LIMIT.match(self.duckdb_memory_limit) if isinstance(self.duckdb_memory_limit, str) else None
        if match is None:
            raise ConfigError(
                f"--memory-limit {self.duckdb_memory_limit!r} is not a size. Give a number and a unit, "
                "e.g. 512MB, 1GB or 2.5GiB."
            )
        if float(match.group(1)) * _UNITS[match.group(2).upper()] < MIN_MEMORY_LIMIT_MB * 10**6:
            raise ConfigError(
                f"--memory-limit {self.duckdb_memory_limit} is too small: DuckDB needs at least "
                f"{MIN_MEMORY_LIMIT_MB}MB to deduplicate the ratings (it spills to disk beyond the limit)."
            )


@dataclass(frozen=True)
class FileStats:
    source: str  # file name in the MovieLens folder, or "posters"
    rows_read: int  # data lines read (header excluded); poster files found
    rows_kept: int  # rows that reached a table


@dataclass(frozen=True)
class IngestSummary:
    edition: str
    path: Path
    files: tuple[FileStats, ...]
    rejected: dict[str, int]  # reason code ("malformed", "duplicate", ...) -> rows rejected
    items: int
    users: int
    ratings: int  # 0 when the edition has no ratings file
    ratings_present: bool
    tag_applications: int
    posters_found: int
    posters_matched: int
    posters_rejected: int
    seconds: float
    latin1_lines: dict[str, int] = field(default_factory=dict)  # file -> kept lines that were not UTF-8

    @property
    def rejects(self) -> int:
        return sum(self.rejected.values())
