"""Match a poster folder to the items and check every matched poster.

A poster is ``<movieId>.jpg|jpeg|png|webp`` (the id in ASCII digits, the extension in any
case). Every entry of the folder is accounted for: a name of another form is rejected as
``poster_name``, a poster of a movie the movies file does not have as
``poster_unknown_item``, and when one id has several files (``127.jpg`` and ``0127.jpg``,
``128.jpg`` and ``128.JPG``, ``5.jpg`` and ``5.png``) one is kept, chosen the same way every
time, and the others are rejected as ``poster_duplicate``: the name written exactly as the
id wins, then a lower-case extension, then jpg, jpeg, png, webp, then the name's sort order.
Each kept file is read once: its SHA-256 (the image's content hash for the encoder), its
size in pixels, and a decode check that catches empty, truncated, non-image and undecodable
files (JPEGs decode at reduced scale with ``draft``, which still reads every byte). The
format comes from the bytes, not the extension. Many posters are checked in a process pool.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from bonmf_pipe.errors import InputError
from bonmf_pipe.pipeline.ingest.rejects import RejectSink
from bonmf_pipe.progress import Reporter

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
_POSTER_NAME = re.compile(r"^([0-9]+)(\.[A-Za-z]+)$")
POOL_MIN_POSTERS = 4096  # below this a pool costs more to start than it saves
POSTER_SCHEMA = {
    "item_id": pl.Int64,
    "poster_path": pl.String,
    "poster_sha256": pl.String,
    "poster_width": pl.Int32,
    "poster_height": pl.Int32,
}


@dataclass(frozen=True)
class PosterCheck:
    """The outcome of one poster file: ``reason`` set when it is rejected."""

    path: str
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class PosterScan:
    found: int  # entries in the poster folder
    matched: int  # usable posters of known items
    rejected: int  # found - matched: every other entry is a reject row
    table: pl.DataFrame  # POSTER_SCHEMA, one row per usable poster


def check_poster(path: str) -> PosterCheck:
    """Hash, measure and decode-check one poster file; never raises."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return PosterCheck(path, reason=f"poster_unreadable: {exc.strerror or exc}")
    if not data:
        return PosterCheck(path, reason="poster_empty: the file has 0 bytes")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
            im.load()
    except UnidentifiedImageError:
        return PosterCheck(path, digest, reason=f"poster_not_image: not a JPEG, PNG or WebP image ({len(data)} bytes)")
    except (OSError, SyntaxError, ValueError) as exc:
        code = "poster_truncated" if "truncated" in str(exc).lower() else "poster_undecodable"
        return PosterCheck(path, digest, reason=f"{code}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not stop the ingest
        return PosterCheck(path, digest, reason=f"poster_undecodable: {type(exc).__name__}: {exc}")
    return PosterCheck(path, digest, width, height)


@dataclass(frozen=True)
class FolderScan:
    """The entries of a poster folder: poster files by item id (preferred first), and the rest."""

    by_item: dict[int, list[Path]]
    other: list[tuple[Path, str]]  # (entry, reject reason) for names that are not <id>.<ext>


def find_posters(folder: Path) -> FolderScan:
    """Sort every entry of ``folder`` into posters by item id and rejected names."""
    if not folder.is_dir():
        raise InputError(f"{folder}: the poster folder does not exist. Pass --posters DIR with <movieId>.jpg files.")
    by_item: dict[int, list[Path]] = {}
    other: list[tuple[Path, str]] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        match = _POSTER_NAME.match(entry.name)
        if not entry.is_file():
            other.append((Path(entry.path), "poster_name: a folder (or other non-file) in the poster folder"))
        elif match is None or match.group(2).lower() not in EXTENSIONS:
            other.append((Path(entry.path), f"poster_name: {entry.name!r} is not <movieId>.jpg|jpeg|png|webp"))
        else:
            by_item.setdefault(int(match.group(1)), []).append(Path(entry.path))
    for item, paths in by_item.items():
        paths.sort(key=lambda p: _preference(item, p))
    return FolderScan(by_item, other)


def _preference(item: int, path: Path) -> tuple:
    """Sort key of one id's files: exact name, lower-case extension, jpg..webp, name."""
    ext = path.suffix
    return (path.stem != str(item), ext != ext.lower(), EXTENSIONS.index(ext.lower()), path.name)


def scan_posters(
    folder: Path, item_ids: pl.Series, sink: RejectSink, report: Reporter, workers: int | None = None,
    movies_name: str = "the movies file",
) -> PosterScan:
    """Check the posters of known items; every other entry goes to ``sink`` (line null)."""
    folder = Path(folder).resolve()
    scan = find_posters(folder)
    found = scan.by_item
    for path, reason in scan.other:
        sink.add(str(path), None, None, reason)
    known = set(item_ids.to_list())
    for item in sorted(i for i in found if i not in known):
        for path in found[item]:
            sink.add(str(path), None, None, f"poster_unknown_item: movie {item} is not in {movies_name}")
    matched = sorted(i for i in found if i in known)
    for item in matched:
        for extra in found[item][1:]:
            sink.add(str(extra), None, None, f"poster_duplicate: movie {item} already has {found[item][0].name}")
    paths = [str(found[i][0]) for i in matched]
    report.begin("check posters", total=len(paths), unit="posters")
    checks = _run_checks(paths, report, workers)
    report.end("check posters")
    rows = []
    for item, check in zip(matched, checks, strict=True):
        if check.reason:
            sink.add(check.path, None, None, check.reason)
        else:
            rows.append((item, check.path, check.sha256, check.width, check.height))
    table = pl.DataFrame(rows, schema=POSTER_SCHEMA, orient="row")
    entries = sum(len(v) for v in found.values()) + len(scan.other)
    return PosterScan(found=entries, matched=len(rows), rejected=entries - len(rows), table=table)


def _run_checks(paths: list[str], report: Reporter, workers: int | None) -> list[PosterCheck]:
    workers = workers if workers is not None else min(os.cpu_count() or 1, 16)
    if workers <= 1 or len(paths) < POOL_MIN_POSTERS:
        out = []
        for p in paths:
            out.append(check_poster(p))
            report.advance("check posters")
        return out
    # spawn, not fork: the parent runs polars/DuckDB thread pools that must not be forked.
    ctx = multiprocessing.get_context("spawn")
    out = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for check in pool.map(check_poster, paths, chunksize=64):
            out.append(check)
            report.advance("check posters")
    return out
