"""What is in a store: tables, row counts, shards, bytes."""

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


def manifest_folders(store: Store) -> list[Path]:
    """Every folder in the store that carries a manifest, in a stable order."""
    return sorted(p.parent for p in store.root.rglob("manifest.json") if ".tmp-" not in p.name)


def store_info(store: Store) -> StoreInfo:
    tables = []
    for folder in manifest_folders(store):
        m = read_manifest(folder)
        if m is None:
            continue
        name = folder.relative_to(store.root).as_posix()
        name = name.removeprefix("tables/")
        tables.append(TableInfo(name=name, kind=m.kind, rows=m.rows, shards=len(m.files), bytes=m.bytes))
    return StoreInfo(root=store.root, schema_version=store.schema_version, tables=tuple(tables))
