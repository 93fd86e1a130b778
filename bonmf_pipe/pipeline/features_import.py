"""``features import``: bring-your-own item vectors, stored as a feature set like the encoder's.

Formats: Parquet (an id column and a list or fixed-size-list column of numbers), ``.npy``
(a 2-D array) with an id file (``.npy`` or text, one id per line, in the same order), or
CSV (an id column and either one column per dimension or one column holding the numbers
separated by spaces or commas, brackets allowed). Ids are in the id space ``key_column``
names: ``item_id`` / ``movieId`` (the store's item ids), ``imdbId`` (``tt0114709`` or
``114709``) or ``tmdbId``, mapped to item ids through the items table.

Every row is validated: an id that is missing, not a number or not a known item; a vector
that is missing, has another dimension than the file's (the most common one), or holds a
non-finite value; a repeated id (the first row wins). Rejected rows go to the ``rejects``
table (stage ``features-import``, with the file, the row number and the reason); the rest
are written as shards of ``features/<name>/<key>/`` with a manifest, through the encoder's
own shard writer. The key hashes the file's bytes (and the id file's) with the declared
provenance, so importing the same file again finds the key present and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bonmf_pipe.errors import ConfigError, InputError
from bonmf_pipe.featurestore import ids as idmap
from bonmf_pipe.featurestore.features import MODALITIES, RESERVED_NAMES, feature_dir, feature_sets, is_feature_name
from bonmf_pipe.featurestore.manifest import read_manifest
from bonmf_pipe.featurestore.store import Store, settings_dict
from bonmf_pipe.pipeline.encode.shards import FeatureWriter, append_rejects
from bonmf_pipe.progress import ProgressCallback, Reporter

STAGE = "features-import"
KEY_COLUMNS = ("item_id", "movieId", "imdbId", "tmdbId")
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".csv": "csv"}
KEY_VERSION = 1


@dataclass(frozen=True)
class ImportSettings:
    """What ``features import`` reads and how it names the result (recorded in the manifest)."""

    path: Path
    """The vectors: a .parquet, .npy (with ``ids``) or .csv file."""
    name: str
    """The feature set's name (lower-case letters, digits, '_'; not text or image, which ``encode``
    writes): train with ``--features text,image,NAME``; SQL view ``NAME_features``."""
    key_column: str = "item_id"
    """The id column of the file and its id space: item_id, movieId (both the store's item ids),
    imdbId or tmdbId (mapped to items through the items table)."""
    vector_column: str | None = None
    """Parquet: the list column (None = the only list column). CSV: a column holding the numbers
    as text (None = every column but the id is one dimension). Not used for .npy."""
    ids: Path | None = None
    """.npy input: the ids, one per row of the array in the same order (.npy, or text one per line)."""
    provenance: str = ""
    """Where the vectors come from (model, version, paper): recorded, and part of the key."""
    dtype: str = "float32"
    """Stored precision: float32 or float16."""
    shard_rows: int = 100_000
    """Vectors per Parquet shard."""

    def __post_init__(self) -> None:
        if not is_feature_name(self.name) or self.name in (*MODALITIES, *RESERVED_NAMES):
            raise ConfigError(
                f"--name {self.name!r}: use lower-case letters, digits and '_' (starting with a letter, at most 40), "
                f"and not {' or '.join(MODALITIES)} (the encoder's own feature sets) or {', '.join(RESERVED_NAMES)}."
            )
        if self.key_column not in KEY_COLUMNS:
            raise ConfigError(f"--key-column {self.key_column!r}: use one of {', '.join(KEY_COLUMNS)}.")
        if self.dtype not in ("float32", "float16"):
            raise ConfigError(f"--dtype {self.dtype!r}: use float32 or float16.")
        if self.shard_rows < 1:
            raise ConfigError("shard_rows must be at least 1.")


@dataclass
class ImportResult:
    name: str
    key: str
    rows: int  # vectors stored (0 when unchanged)
    dim: int
    rejected: int
    unchanged: bool  # the same file and provenance were imported before: nothing written
    folder: Path
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)  # rejected rows per reason


def file_format(path: Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: the format is read from the suffix: {', '.join(FORMATS)}.")
    return fmt


def import_key(s: ImportSettings) -> str:
    """``import-<16 hex>``: SHA-256 of the file (and id file) bytes and the declared provenance."""
    h = hashlib.sha256()
    for p in (s.path, s.ids):
        if p is not None:
            h.update(_sha256_file(Path(p)).encode())
    declared = {"name": s.name, "key_column": s.key_column, "vector_column": s.vector_column,
                "provenance": s.provenance, "dtype": s.dtype, "version": KEY_VERSION}
    h.update(json.dumps(declared, sort_keys=True).encode())
    return f"import-{h.hexdigest()[:16]}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    return h.hexdigest()


def import_features(store: Store, settings: ImportSettings, progress: ProgressCallback | None = None) -> ImportResult:
    """Validate the vectors of ``settings.path`` and store the accepted ones as a feature set."""
    s = settings
    started = time.perf_counter()
    report = Reporter(progress)
    fmt = file_format(s.path)
    if fmt == "npy" and s.ids is None:
        raise ConfigError(f"{s.path}: an .npy array needs --ids FILE (one id per row, same order).")
    key = import_key(s)
    folder = feature_dir(store, s.name, key)
    done = read_manifest(folder)
    if done is not None and done.files:
        return ImportResult(s.name, key, 0, int(done.extra.get("dim", 0)), 0, True, folder,
                            time.perf_counter() - started)
    if not store.has_table("items"):
        raise ConfigError(f"The store at {store.root} has no items table: run `bonmf-pipe ingest` first.")
    templated = [fs.key for fs in feature_sets(store, s.name) if fs.template is not None]
    if templated:
        raise ConfigError(f"--name {s.name}: the store's feature set '{s.name}' holds vectors encoded from a text "
                          f"template ({', '.join(templated)}); import under another --name.")
    task = f"import {s.name}"
    report.begin(task, unit="rows")
    rows = _read(s, fmt)
    report.advance(task, len(rows.raw_ids))
    item_ids, reasons, dim = _validate(store, s, rows)
    ok = np.flatnonzero(np.array([r is None for r in reasons], dtype=bool))
    if not ok.size:
        shown = Counter(r for r in reasons if r).most_common(3)
        raise InputError(f"{s.path}: no row could be imported ({'; '.join(f'{n} x {r}' for r, n in shown)}). "
                         f"Check --key-column ({s.key_column}) and the vector column.")
    accepted = item_ids[ok]
    rejects = [
        {"stage": STAGE, "source": str(s.path), "line": k + 1, "raw": _raw(rows, k), "reason": r}
        for k, r in enumerate(reasons) if r is not None
    ]
    append_rejects(store, rejects)
    spec = {"source": "import", "file": Path(s.path).name, "format": fmt, "key_column": s.key_column,
            "vector_column": s.vector_column, "provenance": s.provenance, "sha256": _sha256_file(Path(s.path))}
    writer = FeatureWriter(store, s.name, key, spec, dim, s.dtype, settings_dict(s))
    for start in range(0, ok.size, s.shard_rows):
        part = ok[start : start + s.shard_rows]
        matrix = np.stack([rows.vector(k) for k in part]).astype(np.float32)
        writer.write(item_ids[part], [_vector_hash(v) for v in matrix], matrix)
        report.advance(task, 0)
    report.end(task)
    counts = dict(Counter(r.split(":")[0] for r in reasons if r))
    return ImportResult(s.name, key, int(accepted.size), dim, len(rejects), False, folder,
                        time.perf_counter() - started, counts)


def _vector_hash(v: np.ndarray) -> str:
    """The row's content hash: SHA-256 of its float32 bytes (what was imported for the item)."""
    return hashlib.sha256(np.ascontiguousarray(v, dtype=np.float32).tobytes()).hexdigest()


def _raw(rows: "Rows", k: int) -> str:
    n = int(rows.lengths[k])
    vec = "null" if n < 0 else "[" + ", ".join(f"{x:g}" for x in rows.vector(k)[:8]) + (", ..." if n > 8 else "") + "]"
    return f"{rows.raw_ids[k]!r}: {vec}"[:500]


# -- reading ---------------------------------------------------------------------------------

@dataclass
class Rows:
    """The file's rows: ids as written, and vectors as one flat float64 array with offsets
    (``lengths[k] == -1``: the row has no vector)."""

    raw_ids: list[Any]
    lengths: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(np.maximum(self.lengths, 0))])

    def vector(self, k: int) -> np.ndarray:
        return self.values[self.offsets[k] : self.offsets[k + 1]]


def _read(s: ImportSettings, fmt: str) -> Rows:
    try:
        if fmt == "parquet":
            return _read_parquet(s)
        if fmt == "npy":
            return _read_npy(s)
        return _read_csv(s)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
        raise InputError(f"Cannot read {s.path} as {fmt}: {exc}") from exc


def _list_rows(raw_ids: list[Any], column: pa.ChunkedArray | pa.Array) -> Rows:
    """Rows of an Arrow list / fixed-size-list column of numbers (null elements become NaN)."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_floating(col.type.value_type) and not pa.types.is_integer(col.type.value_type):
        raise InputError(f"the vector column holds {col.type.value_type}, not numbers")
    col = col.cast(pa.list_(pa.float64()))
    lengths = pc.fill_null(pc.list_value_length(col), -1).to_numpy().astype(np.int64)
    values = pc.fill_null(col.flatten(), math.nan).to_numpy(zero_copy_only=False)
    return Rows(raw_ids, lengths, values)


def _read_parquet(s: ImportSettings) -> Rows:
    schema = pq.read_schema(s.path)
    if s.key_column not in schema.names:
        raise InputError(f"{s.path} has no column {s.key_column!r} (columns: {', '.join(schema.names)}); "
                         "name the id column with --key-column.")
    lists = [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
             or pa.types.is_large_list(f.type)]
    column = s.vector_column or (lists[0] if len(lists) == 1 else None)
    if column is None or column not in lists:
        raise InputError(f"{s.path}: name the vector column with --vector-column (list columns: "
                         f"{', '.join(lists) or 'none'}).")
    table = pq.read_table(s.path, columns=[s.key_column, column])
    return _list_rows(table.column(0).to_pylist(), table.column(1))


def _read_npy(s: ImportSettings) -> Rows:
    array = np.load(s.path, mmap_mode="r", allow_pickle=False)
    if array.ndim != 2:
        raise InputError(f"{s.path}: the array has shape {array.shape}; give one row per item ([items, dim]).")
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{s.path}: the array holds {array.dtype}, not numbers.")
    ids_path = Path(s.ids)  # type: ignore[arg-type]
    if ids_path.suffix.lower() == ".npy":
        raw_ids = np.load(ids_path, allow_pickle=False).tolist()
    else:
        try:
            raw_ids = [line.strip() for line in ids_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"Cannot read the id file {ids_path}: {exc}. Give one id per line.") from exc
        if raw_ids and raw_ids[0] == s.key_column:
            raw_ids = raw_ids[1:]  # a header naming the id space
    if len(raw_ids) != array.shape[0]:
        raise InputError(f"{ids_path} has {len(raw_ids):,} ids but {s.path} has {array.shape[0]:,} rows; "
                         "give one id per row, in the same order.")
    lengths = np.full(array.shape[0], array.shape[1], dtype=np.int64)
    return Rows(raw_ids, lengths, np.asarray(array, dtype=np.float64).reshape(-1))


def _read_csv(s: ImportSettings) -> Rows:
    table = pacsv.read_csv(s.path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    if s.key_column not in table.column_names:
        raise InputError(f"{s.path} has no column {s.key_column!r} (columns: {', '.join(table.column_names[:10])}); "
                         "name the id column with --key-column.")
    raw_ids = table.column(s.key_column).to_pylist()
    if s.vector_column:
        if s.vector_column not in table.column_names:
            raise InputError(f"{s.path} has no column {s.vector_column!r}.")
        vecs = [_parse_numbers(v) for v in table.column(s.vector_column).to_pylist()]
        return _list_rows(raw_ids, pa.array(vecs, pa.list_(pa.float64())))
    dims = [c for c in table.column_names if c != s.key_column]
    if not dims:
        raise InputError(f"{s.path}: no vector columns besides {s.key_column!r}.")
    matrix = np.column_stack([_numbers(table.column(c)) for c in dims])
    return Rows(raw_ids, np.full(len(raw_ids), len(dims), dtype=np.int64), matrix.reshape(-1))


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    """A CSV column as float64; anything that is not a number becomes NaN (rejected as non-finite)."""
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        return pc.fill_null(column.cast(pa.float64()), math.nan).to_numpy()
    return np.array([_number(v) for v in column.to_pylist()], dtype=np.float64)


def _parse_numbers(text: Any) -> list[float] | None:
    if text is None:
        return None
    parts = [p for p in re.split(r"[\s,;]+", str(text).strip().strip("[]()")) if p]
    return [_number(p) for p in parts] or None


def _number(v: Any) -> float:
    """A float, or NaN for anything that is not a number (reported as non-finite)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# -- validation ------------------------------------------------------------------------------

def _validate(store: Store, s: ImportSettings, rows: Rows) -> tuple[np.ndarray, list[str | None], int]:
    """(item id of each row (-1: none), the reason each row is rejected or None, the dimension)."""
    ids = [_parse_id(v, s.key_column) for v in rows.raw_ids]
    item_ids = np.asarray(_to_item_ids(store, s.key_column, ids), dtype=np.int64)
    sized = rows.lengths[rows.lengths > 0]
    dim = int(np.bincount(sized).argmax()) if sized.size else 0
    stored = np.float16 if s.dtype == "float16" else np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        bad_value = ~np.isfinite(rows.values.astype(stored))  # finite in the stored precision
    starts = np.minimum(rows.offsets[:-1], max(rows.values.size - 1, 0))
    bad_rows = np.add.reduceat(bad_value, starts) > 0 if rows.values.size else np.zeros(len(ids), bool)
    bad_rows &= rows.lengths > 0  # reduceat of an empty row reads the next one's first value
    reasons: list[str | None] = []
    seen: set[int] = set()
    for k, (raw, parsed) in enumerate(zip(rows.raw_ids, ids, strict=True)):
        n, item = int(rows.lengths[k]), int(item_ids[k])
        if parsed is None:
            reasons.append(f"bad id: {s.key_column} {raw!r} is missing or not a number")
        elif item < 0:
            reasons.append(f"unknown id: no item has {s.key_column} {raw}")
        elif n <= 0:
            reasons.append("no vector")
        elif n != dim:
            reasons.append(f"dimension: {n} values, the file's vectors have {dim}")
        elif bad_rows[k]:
            reasons.append(f"non-finite: a value is NaN, infinite, not a number or beyond {s.dtype}")
        elif item in seen:
            reasons.append(f"duplicate: {s.key_column} {raw} again (the first row is kept)")
        else:
            reasons.append(None)
            seen.add(item)
    return item_ids, reasons, dim


def _parse_id(v: Any, key_column: str) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    text = str(v).strip()
    if key_column == "imdbId" and text.lower().startswith("tt"):
        text = text[2:]
    try:
        f = float(text)
    except ValueError:
        return None
    return int(f) if math.isfinite(f) and f == int(f) else None


def _to_item_ids(store: Store, key_column: str, ids: list[int | None]) -> list[int]:
    """The item id of each parsed id (-1: none)."""
    wanted = np.array([-1 if v is None else v for v in ids], dtype=np.int64)
    if key_column in ("item_id", "movieId"):
        known = np.sort(store.read_table("items", columns=["item_id"]).column(0).to_numpy())
        return np.where(idmap.positions(known, wanted)[1], wanted, -1).tolist()
    column = "imdb_id" if key_column == "imdbId" else "tmdb_id"
    items = store.read_table("items", columns=["item_id", column]).to_pylist()
    pairs = sorted({(_parse_id(r[column], key_column), r["item_id"]) for r in items if _parse_id(r[column], key_column) is not None})
    ext = np.array([p[0] for p in pairs], dtype=np.int64)
    own = np.array([p[1] for p in pairs], dtype=np.int64)
    if ext.size and np.unique(ext).size != ext.size:  # an external id on several items: keep the first
        ext, first = np.unique(ext, return_index=True)
        own = own[first]
    return idmap.lookup_values(ext, own, wanted, default=-1).tolist()
