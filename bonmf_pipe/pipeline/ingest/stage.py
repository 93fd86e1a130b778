"""The ingest stage: one MovieLens folder (and posters) -> items, users, ratings, tags, rejects.

Every table is written as a new generation first; only when all are written are they
committed, all at once, in one store snapshot: a killed or failed ingest leaves the previous
dataset in place, never a mix of two. The ingest holds the store's ``tables`` lock from
start to commit, so a second ingest (or encode's rejects update) waits for it, or fails
at once when the store was opened with ``no_wait``. Scratch files (the ratings staging
file, DuckDB's spill) live in ``<store>/tmp/ingest-*`` and are removed at the end, or by
the next ingest after a kill.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from bonmf_pipe.errors import InputError
from bonmf_pipe.featurestore import Store, TableWriter
from bonmf_pipe.featurestore.schema import ITEMS, RATINGS, REJECTS, TAGS, USERS
from bonmf_pipe.pipeline.ingest.formats import EditionFormat, resolve_edition
from bonmf_pipe.pipeline.ingest.movies import parse_links, parse_movies, read_genre_names
from bonmf_pipe.pipeline.ingest.posters import POSTER_SCHEMA, scan_posters
from bonmf_pipe.pipeline.ingest.ratings import RatingsJob, ingest_ratings
from bonmf_pipe.pipeline.ingest.rejects import RejectSink, check_not_all_rejected
from bonmf_pipe.pipeline.ingest.settings import FileStats, IngestSettings, IngestSummary
from bonmf_pipe.pipeline.ingest.tags import ingest_tags
from bonmf_pipe.pipeline.ingest.text import render_text
from bonmf_pipe.pipeline.ingest.users import USER_SCHEMA, parse_users, read_occupations, users_from_ids
from bonmf_pipe.progress import ProgressCallback, Reporter

TABLES = ("items", "users", "tags", "ratings", "rejects")


@dataclass
class _Run:
    """The mutable state of one ingest: writers, scratch folder, counts."""

    store: Store
    settings: IngestSettings
    report: Reporter
    work_dir: Path
    writers: dict[str, TableWriter] = field(default_factory=dict)
    files: list[FileStats] = field(default_factory=list)

    def writer(self, name: str, schema: pa.Schema) -> TableWriter:
        self.writers[name] = self.store.writer(name, schema, self.settings, extra={"stage": "ingest"})
        return self.writers[name]


def ingest(store: Store, settings: IngestSettings, progress: ProgressCallback | None = None) -> IngestSummary:
    """Read the MovieLens folder ``settings.path`` into the store's canonical tables."""
    started = time.perf_counter()
    report = Reporter(progress)
    edition, fmt = resolve_edition(settings.path, settings.dataset)
    if settings.posters is not None and not Path(settings.posters).is_dir():
        raise InputError(f"{settings.posters}: no such poster folder. Pass --posters DIR with <movieId>.jpg files.")
    report.note(f"{settings.path}: MovieLens edition {edition}")
    with store.lock("tables", what=f"ingest {settings.path}", progress=progress), _run(store, settings, report) as run:
        summary = _ingest(run, edition, fmt)
        store.commit([run.writers[name] for name in TABLES], operation=f"ingest {edition}")
    return IngestSummary(**{**summary, "seconds": time.perf_counter() - started})


@contextlib.contextmanager
def _run(store: Store, settings: IngestSettings, report: Reporter) -> Iterator[_Run]:
    scratch = store.root / "tmp"
    _remove_stale_scratch(scratch)
    work_dir = scratch / f"ingest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work_dir.mkdir(parents=True)
    run = _Run(store, settings, report, work_dir)
    try:
        yield run
    except BaseException:
        for w in run.writers.values():
            w.abort()
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            scratch.rmdir()  # only when no other ingest is using it


def _remove_stale_scratch(scratch: Path) -> None:
    """Scratch folders of ingests that were killed (their process is gone)."""
    if not scratch.is_dir():
        return
    for d in scratch.glob("ingest-*"):
        pid = d.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ingest(run: _Run, edition: str, fmt: EditionFormat) -> dict:
    s, folder = run.settings, Path(run.settings.path)
    sink = RejectSink(run.writer("rejects", REJECTS))
    movies_name = fmt.movies[0]
    items, read = parse_movies(folder / movies_name, fmt, sink, read_genre_names(folder / "u.genre"), s.block_bytes)
    run.files.append(FileStats(movies_name, read, items.height))
    known_items = items.get_column("item_id")
    links = _links(run, fmt, known_items, sink)
    users = _users_file(run, fmt, sink)
    tags_writer = run.writer("tags", TAGS)
    top_tags, tag_users, tag_count = _tags(run, fmt, known_items, sink, tags_writer)
    ratings, rating_users, ratings_present = _ratings(run, fmt, known_items, users, sink)
    if users is None:
        users = users_from_ids(pl.concat([rating_users, tag_users]).cast(pl.Int64))
    run.writer("users", USERS).write(users.select(*USER_SCHEMA).to_arrow())
    posters = _posters(run, known_items, sink)
    items = _items_table(items, links, top_tags, posters.table if posters else None, s)
    run.writer("items", ITEMS).write(items.to_arrow())
    check_not_all_rejected(run.files, sink, s.allow_empty, fmt)
    sink.flush()
    return dict(
        edition=edition, path=folder, files=tuple(run.files), rejected=dict(sorted(sink.by_code.items())),
        latin1_lines=dict(sink.latin1_lines),
        items=items.height, users=users.height, ratings=ratings, ratings_present=ratings_present,
        tag_applications=tag_count, posters_found=posters.found if posters else 0,
        posters_matched=posters.matched if posters else 0, posters_rejected=posters.rejected if posters else 0,
    )


def _links(run: _Run, fmt: EditionFormat, known: pl.Series, sink: RejectSink) -> pl.DataFrame | None:
    if fmt.links is None:
        return None
    path = Path(run.settings.path) / fmt.links[0]
    if not path.is_file():
        run.report.note(f"{fmt.links[0]} is absent: items get no IMDb/TMDb ids.", "warning")
        return None
    links, read = parse_links(path, fmt.links[1], known, sink)
    run.files.append(FileStats(path.name, read, links.height))
    return links


def _users_file(run: _Run, fmt: EditionFormat, sink: RejectSink) -> pl.DataFrame | None:
    if fmt.users is None:
        return None
    path = Path(run.settings.path) / fmt.users[0]
    if not path.is_file():
        run.report.note(f"{fmt.users[0]} is absent: users come from the ratings, without demographics.", "warning")
        return None
    users, read = parse_users(path, fmt, sink, read_occupations(Path(run.settings.path) / "u.occupation"))
    run.files.append(FileStats(path.name, read, users.height))
    return users


def _tags(run: _Run, fmt: EditionFormat, known: pl.Series, sink: RejectSink, writer: TableWriter):
    empty_ids = pl.Series("user_id", [], dtype=pl.Int64)
    if fmt.tags is None:
        return None, empty_ids, 0
    path = Path(run.settings.path) / fmt.tags[0]
    if not path.is_file():
        run.report.note(f"{fmt.tags[0]} is absent: items get no tags.", "warning")
        return None, empty_ids, 0
    s = run.settings
    result = ingest_tags(
        path, fmt.tags[1], known, sink, writer, run.report, max_tags=s.max_tags, lowercase=s.lowercase_tags,
        movies_name=fmt.movies[0], block_bytes=s.block_bytes,
    )
    run.files.append(FileStats(path.name, result.rows_read, result.kept))
    return result.top_tags, result.user_ids, result.kept


def _ratings(
    run: _Run, fmt: EditionFormat, known_items: pl.Series, users: pl.DataFrame | None, sink: RejectSink
) -> tuple[int, pl.Series, bool]:
    """Ratings kept, their distinct users, and whether the edition has a ratings file."""
    s, writer = run.settings, run.writer("ratings", RATINGS)
    job = RatingsJob(
        path=Path(s.path) / fmt.ratings[0], fmt=fmt.ratings[1], scale=fmt.rating_scale, known_items=known_items,
        known_users=None if users is None else users.get_column("user_id"), work_dir=run.work_dir,
        block_bytes=s.block_bytes, memory_limit=s.duckdb_memory_limit, threads=s.threads or os.cpu_count() or 1,
        movies_name=fmt.movies[0],
    )
    if not job.path.is_file():
        run.report.note(
            f"{job.path.name} is absent: ratings are absent, so the ratings table is empty. Encoding can "
            "still run on the items; training and evaluation need ratings.",
            "warning",
        )
        return 0, pl.Series("user_id", [], dtype=pl.Int64), False
    result = ingest_ratings(job, writer, sink, run.report)
    run.files.append(FileStats(job.path.name, result.rows_read, result.kept))
    return result.kept, result.user_ids, True


def _posters(run: _Run, known: pl.Series, sink: RejectSink):
    if run.settings.posters is None:
        return None
    scan = scan_posters(Path(run.settings.posters), known, sink, run.report, run.settings.poster_workers)
    run.report.note(f"posters: {scan.found:,} files, {scan.matched:,} matched to items, {scan.rejected:,} rejected")
    return scan


def _items_table(
    items: pl.DataFrame, links: pl.DataFrame | None, top_tags: pl.DataFrame | None,
    posters: pl.DataFrame | None, s: IngestSettings,
) -> pl.DataFrame:
    """Join the item parts and render each item's text; one row per item, sorted by id."""
    items = items.sort("item_id")
    if top_tags is not None:
        items = items.join(top_tags, on="item_id", how="left")
    else:
        items = items.with_columns(tags=pl.lit(None, dtype=pl.List(pl.String)))
    items = items.with_columns(pl.col("tags").fill_null(pl.lit([], dtype=pl.List(pl.String))))
    for part, schema in ((links, {"imdb_id": pl.String, "tmdb_id": pl.Int64}), (posters, POSTER_SCHEMA)):
        if part is not None:
            items = items.join(part, on="item_id", how="left")
        else:
            items = items.with_columns(*(pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c != "item_id"))
    texts = [
        render_text(s.text_template, r["title"], r["year"], r["genres"], r["tags"])
        for r in items.select("title", "year", "genres", "tags").iter_rows(named=True)
    ]
    items = items.with_columns(text=pl.Series(texts, dtype=pl.String)).sort("item_id")
    return items.select(ITEMS.names)
