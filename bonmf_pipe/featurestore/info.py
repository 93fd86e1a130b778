"""What is in a store: its snapshot's tables and the feature sets, with rows, shards, bytes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bonmf_pipe.featurestore.manifest import read_manifest
from bonmf_pipe.featurestore.store import Store


@dataclass(frozen=True)
class TableInfo:
    name: str  # "items", "features/text/<key>", ...
    kind: str
    rows: int
    shards: int
    bytes: int


@dataclass(frozen=True)
class StoreInfo:
    root: Path
    schema_version: int
    tables: tuple[TableInfo, ...]
    snapshot: int = 0  # the version of the snapshot the tables come from (0: none committed yet)


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
    return StoreInfo(root=store.root, schema_version=store.schema_version, tables=tuple(tables), snapshot=store.snapshot.version)
