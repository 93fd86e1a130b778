"""Train/valid/test splits of the ratings, written to the store as ``tables/split_<id>/``.

A split is a copy of the ratings with a ``part`` column ('train', 'valid' or 'test'). It is
computed by DuckDB with a memory limit (spilling to disk), so it streams at any size, and
it is reproducible: random assignment comes from an MD5 hash of (seed, user, item), never
from a generator's state. The rows are stored in a hash-shuffled order grouped by part, so
a trainer reading row groups in a shuffled order sees well-mixed ratings. Every model of a
comparison that names the same spec, seed and ratings gets the same split id and rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from bonmf_pipe.errors import ConfigError, InputError, StoreError
from bonmf_pipe.featurestore.sql import spill_connection
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.progress import ProgressCallback, Reporter

SPLIT_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("rating", pa.float32(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("part", pa.string(), nullable=False),
    ]
)
KINDS = ("random", "per-user", "temporal", "file", "cold-items", "cold-users")
COLD_KINDS = ("cold-items", "cold-users")  # F = the share of whole items/users held out for test
FILE_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
DEFAULT_VALID_FRACTION = 0.05
SPLIT_MEMORY_MB = 128  # DuckDB's limit while writing a split, unless the caller passes its budget
# DuckDB's least workable limit: sorting 25 M ratings into a split fails at 64 MB ("failed to
# pin block"), with one thread or two, and passes at 128 MB
DUCKDB_MIN_MB = 128
DUCKDB_MAX_MB = 256


def parse_split(spec: str) -> tuple[str, float | str]:
    """``random:0.7`` -> ("random", 0.7); ``file`` -> ("file", "u1"); ``cold-items:0.1`` ->
    ("cold-items", 0.1): there F is the share of whole items (users) held out for test."""
    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise ConfigError(f"--split {spec!r}: the kind must be one of {', '.join(KINDS)} (e.g. random:0.7).")
    if kind == "file":
        name = arg or "u1"
        if name not in FILE_SPLITS:
            raise ConfigError(f"--split {spec!r}: ml-100k split files are {', '.join(FILE_SPLITS)}.")
        return kind, name
    try:
        fraction = float(arg) if arg else (0.1 if kind in COLD_KINDS else 0.7)
    except ValueError:
        raise ConfigError(f"--split {spec!r}: {arg!r} is not a number; write e.g. {kind}:0.7.") from None
    if not 0.0 < fraction < 1.0:
        share = "held-out share" if kind in COLD_KINDS else "train share"
        raise ConfigError(f"--split {spec!r}: the {share} must be between 0 and 1 (exclusive).")
    return kind, fraction


def duckdb_memory_mb(budget_mb: int) -> int:
    """DuckDB's memory limit under a command's ``--memory-budget-mb``: a quarter of the budget,
    between ``DUCKDB_MIN_MB`` and ``DUCKDB_MAX_MB``.

    A quarter, because DuckDB's resident memory overshoots its limit (measured on a 25 M-rating
    split, 2-core CPU: +240 MB peak over the process at a 128 MB limit, +358 MB at 256 MB: the
    Arrow batches it hands over, the Parquet writer, its allocator's caches); more buys little,
    since its sorts spill to ``<store>/tmp`` beyond the limit."""
    return max(DUCKDB_MIN_MB, min(int(budget_mb) // 4, DUCKDB_MAX_MB))


def split_table_name(split_id: str) -> str:
    return f"split_{split_id}"


def _split_id(store: Store, spec: str, seed: int, valid_fraction: float) -> str:
    ratings = store.manifest("ratings")
    ident = {
        "spec": spec,
        "seed": seed,
        "valid_fraction": valid_fraction,
        "ratings": [f.sha256 for f in ratings.files],
        "version": 1,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def _unit(seed: int, salt: str) -> str:
    """SQL for a uniform number in [0, 1) from an MD5 of (seed, salt, user, item)."""
    return (
        f"(md5_number_lower(concat('{int(seed)}', ':{salt}:', user_id, ':', item_id)) >> 11)"
        " / 9007199254740992.0"
    )


def _assign_sql(kind: str, arg, seed: int) -> str:
    """SELECT user_id, item_id, rating, timestamp, part0 ('train' or 'test') from the ratings
    (the query's ``$files`` parameter: the ratings' shards)."""
    src = "read_parquet($files)"
    if kind == "random":
        return f"SELECT *, CASE WHEN {_unit(seed, 'split')} < {arg} THEN 'train' ELSE 'test' END AS part0 FROM {src}"
    if kind == "per-user":
        return (
            "SELECT user_id, item_id, rating, timestamp, CASE WHEN rn <= greatest(1, round(n * "
            f"{arg})) THEN 'train' ELSE 'test' END AS part0 FROM (SELECT *, row_number() OVER "
            f"(PARTITION BY user_id ORDER BY {_unit(seed, 'split')}) AS rn, count(*) OVER "
            f"(PARTITION BY user_id) AS n FROM {src})"
        )
    if kind in COLD_KINDS:  # whole items (users) by a hash of their id: all their ratings to test
        key = "item_id" if kind == "cold-items" else "user_id"
        unit = f"(md5_number_lower(concat('{int(seed)}', ':{kind}:', {key})) >> 11) / 9007199254740992.0"
        return f"SELECT *, CASE WHEN {unit} < {arg} THEN 'test' ELSE 'train' END AS part0 FROM {src}"
    if kind == "temporal":
        return (
            "SELECT user_id, item_id, rating, timestamp, CASE WHEN pr < "
            f"{arg} THEN 'train' ELSE 'test' END AS part0 FROM (SELECT *, percent_rank() OVER "
            f"(ORDER BY timestamp, user_id, item_id) AS pr FROM {src})"
        )
    # file: the ml-100k test file's (user, item) pairs are the test rows, the rest train.
    return (
        f"SELECT r.*, CASE WHEN t.user_id IS NULL THEN 'train' ELSE 'test' END AS part0 FROM {src} r "
        "LEFT JOIN test_pairs t USING (user_id, item_id)"
    )


def _register_file_split(con: duckdb.DuckDBPyConnection, store: Store, name: str) -> None:
    source = store.manifest("ratings").settings.get("path")
    folder = Path(source) if source else None
    base, test = (folder / f"{name}.base", folder / f"{name}.test") if folder else (None, None)
    if folder is None or not (base.exists() and test.exists()):
        raise InputError(
            f"--split file:{name} needs the ml-100k split files {name}.base and {name}.test in the "
            f"ingest source folder ({source or 'not recorded'}); only the ml-100k edition ships them. "
            "Use --split random:0.7 (or per-user:0.7, temporal:0.7) for other editions."
        )
    con.execute(
        "CREATE TEMP TABLE test_pairs AS SELECT DISTINCT column0::BIGINT AS user_id, column1::BIGINT AS item_id "
        f"FROM read_csv('{str(test).replace(chr(39), chr(39) * 2)}', delim='\t', header=false, "
        "columns={'column0': 'BIGINT', 'column1': 'BIGINT', 'column2': 'DOUBLE', 'column3': 'BIGINT'})"
    )


def make_split(
    store: Store,
    spec: str,
    seed: int,
    progress: ProgressCallback | None = None,
    *,
    valid_fraction: float = DEFAULT_VALID_FRACTION,
    memory_limit_mb: int = SPLIT_MEMORY_MB,
    rows_per_file: int = 2_000_000,
    row_group_size: int = 64 * 1024,
) -> str:
    """Write the split ``spec`` of the ratings (seeded by ``seed``) and return its id.

    Idempotent: the same spec, seed, valid fraction and ratings give the same id, and an
    existing split table is reused. The valid slice is carved from the train part by a hash.
    DuckDB computes it within ``memory_limit_mb`` (its sort spills to ``<store>/tmp`` beyond
    it), so memory does not grow with the number of ratings.
    """
    kind, arg = parse_split(spec)
    split_id = _split_id(store, spec, seed, valid_fraction)
    if store.has_table(split_table_name(split_id)):
        return split_id
    # trainers started together on one store write a new split once: the first holds the lock
    with store.lock(f"split-{split_id}", what="train: write a split", progress=progress):
        store.refresh()  # the newest snapshot: a trainer that held the lock first may have written it
        split_id = _split_id(store, spec, seed, valid_fraction)
        if not store.has_table(split_table_name(split_id)):
            _write_split(store, spec, kind, arg, seed, split_id, valid_fraction, progress,
                         memory_limit_mb, rows_per_file, row_group_size)
    return split_id


def _write_split(
    store: Store, spec: str, kind: str, arg, seed: int, split_id: str, valid_fraction: float,
    progress: ProgressCallback | None, memory_limit_mb: int, rows_per_file: int, row_group_size: int,
) -> None:
    name = split_table_name(split_id)
    report = Reporter(progress)
    files = store.table_files("ratings")
    report.begin(f"split {spec}", total=store.manifest("ratings").rows, unit="ratings")
    tmp = store.root / "tmp" / f"duckdb-{split_id}"
    con = spill_connection(tmp, memory_limit_mb)
    try:
        if kind == "file":
            _register_file_split(con, store, str(arg))
        assigned = _assign_sql(kind, arg, seed)
        query = (
            "SELECT user_id, item_id, rating::FLOAT AS rating, timestamp, CASE WHEN part0 = 'train' AND "
            f"{_unit(seed, 'valid')} < {float(valid_fraction)} THEN 'valid' ELSE part0 END AS part "
            f"FROM ({assigned}) ORDER BY part, {_unit(seed, 'order')}"
        )
        settings = {"spec": spec, "seed": seed, "valid_fraction": valid_fraction, "split_id": split_id}
        reader = con.sql(query, params={"files": [str(f) for f in files]}).to_arrow_reader(row_group_size)
        with store.writer(
            name, SPLIT_SCHEMA, settings, kind="split", rows_per_file=rows_per_file, row_group_size=row_group_size
        ) as w:
            for batch in reader:
                w.write(batch)
                report.advance(f"split {spec}", batch.num_rows)
            w.commit()
    except duckdb.Error as exc:
        raise StoreError(f"Could not compute the split {spec!r}: {exc}") from exc
    finally:
        con.close()
        _rmtree(tmp)
    report.end(f"split {spec}")


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def split_dataset(store: Store, split_id: str) -> pads.Dataset:
    """The split's rows: user_id, item_id, rating, timestamp, part ('train'|'valid'|'test')."""
    name = split_table_name(split_id)
    if not store.has_table(name):
        raise StoreError(f"The store at {store.root} has no split '{split_id}'. Train a model to create it.")
    return store.dataset(name)


def split_counts(store: Store, split_id: str) -> dict[str, int]:
    """Row count of each part. The rows are stored grouped by part, so nearly every row group
    holds one part and is counted from its Parquet statistics; only the few mixed ones (where
    one part ends and the next begins) are read, one column of one row group at a time."""
    counts: dict[str, int] = {"train": 0, "valid": 0, "test": 0}
    for path in split_dataset(store, split_id).files:
        pf = pq.ParquetFile(path)
        col = pf.schema_arrow.get_field_index("part")
        for g in range(pf.metadata.num_row_groups):
            group = pf.metadata.row_group(g)
            stats = group.column(col).statistics
            if stats is not None and stats.has_min_max and stats.min == stats.max:
                counts[stats.min] = counts.get(stats.min, 0) + group.num_rows
                continue
            for v in pc.value_counts(pf.read_row_group(g, columns=["part"]).column("part")).to_pylist():
                counts[v["values"]] = counts.get(v["values"], 0) + v["counts"]
    return counts
