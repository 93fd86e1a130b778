"""What is in a store: its snapshot's tables and the feature sets, with rows, shards, bytes,
and per feature-set name (its newest set) how many items have a current vector (the
``coverage`` view)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bonmf_pipe.featurestore.duck import fetch_arrow
from bonmf_pipe.featurestore.manifest import read_manifest
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.featurestore.views import feature_views


@dataclass(frozen=True)
class TableInfo:
    name: str  # "items", "features/text/<key>", ...
    kind: str
    rows: int
    shards: int
    bytes: int


@dataclass(frozen=True)
class CoverageInfo:
    """One row of the ``coverage`` view: a feature-set name's newest set against the items table."""

    feature_set: str  # text, image, an imported or template set's name
    encoder_key: str
    dim: int
    items: int
    with_vector: int  # items with a current vector
    without_vector: int


@dataclass(frozen=True)
class StoreInfo:
    root: Path
    schema_version: int
    tables: tuple[TableInfo, ...]
    snapshot: int = 0  # the version of the snapshot the tables come from (0: none committed yet)
    coverage: tuple[CoverageInfo, ...] = ()  # per feature-set name, by name


def feature_coverage(store: Store) -> tuple[CoverageInfo, ...]:
    """The ``coverage`` view's rows, by feature-set name (none without items or feature sets)."""
    import duckdb

    sql = feature_views(store).get("coverage")
    if sql is None:
        return ()
    con = duckdb.connect(":memory:")
    try:
        rows = fetch_arrow(con.sql(f"SELECT * FROM ({sql}) ORDER BY feature_set")).to_pylist()
    finally:
        con.close()
    return tuple(CoverageInfo(**{k: r[k] for k in CoverageInfo.__dataclass_fields__}) for r in rows)


def manifest_folders(store: Store) -> list[Path]:
    """The folder of every manifest readers use: the snapshot's tables, then every feature set."""
    tables = [store.manifest_folder(name) for name in sorted(store.snapshot.tables)]
    features = sorted(p.parent for p in store.features_dir.glob("*/*/manifest.json")) if store.features_dir.is_dir() else []
    return tables + features


def store_info(store: Store) -> StoreInfo:
    tables = []
    for name, m in store.tables().items():
        tables.append(TableInfo(name=name, kind=m.kind, rows=m.rows, shards=len(m.files), bytes=m.bytes))
    for folder in manifest_folders(store)[len(store.snapshot.tables):]:
        m = read_manifest(folder)
        if m is not None:
            name = folder.relative_to(store.root).as_posix()
            tables.append(TableInfo(name=name, kind=m.kind, rows=m.rows, shards=len(m.files), bytes=m.bytes))
    return StoreInfo(root=store.root, schema_version=store.schema_version, tables=tuple(tables),
                     snapshot=store.snapshot.version, coverage=feature_coverage(store))
