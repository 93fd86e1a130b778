"""The store: one folder holding every table, feature shard and run, all in Parquet.

Layout::

    <store>/store.json                          schema version of the store
    <store>/tables/<name>/manifest.json         items, users, ratings, rejects, splits, ...
    <store>/tables/<name>/gen-<id>/part-*.parquet
    <store>/features/<modality>/<encoder-key>/  manifest.json + part-*.parquet
    <store>/runs/<run-id>/                      config, metrics, checkpoint, predictions

A table is replaced as a whole: its new generation is written beside the old one, then the
manifest is swapped atomically, then the old generation is deleted. A run killed at any
moment leaves the previous version readable.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from bonmf_pipe.errors import StoreError
from bonmf_pipe.featurestore.io import atomic_path, atomic_write_json
from bonmf_pipe.featurestore.manifest import (
    SCHEMA_VERSION,
    Manifest,
    ShardEntry,
    read_manifest,
    write_manifest,
)

DEFAULT_STORE = "bonmf-store"
STORE_FILE = "store.json"


def default_store_path() -> Path:
    return Path(os.environ.get("BONMF_STORE", DEFAULT_STORE))


def settings_dict(settings: Any) -> dict[str, Any]:
    """A JSON-ready dict of a settings dataclass (paths become strings)."""
    if settings is None:
        return {}
    d = asdict(settings) if is_dataclass(settings) else dict(settings)
    return json.loads(json.dumps(d, default=str))


def parquet_metadata(name: str, settings: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[bytes, bytes]:
    md = {
        b"bonmf.schema_version": str(SCHEMA_VERSION).encode(),
        b"bonmf.table": name.encode(),
        b"bonmf.settings": json.dumps(settings, sort_keys=True, default=str).encode(),
    }
    for k, v in (extra or {}).items():
        md[f"bonmf.{k}".encode()] = (v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)).encode()
    return md


class Store:
    """A bonmf-pipe store rooted at a folder."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path | str | None = None, *, create: bool = False) -> "Store":
        """Open the store at ``root``; with ``create`` make it when missing."""
        store = cls(root if root is not None else default_store_path())
        marker = store.root / STORE_FILE
        if marker.exists():
            try:
                version = json.loads(marker.read_text()).get("schema_version", 0)
            except (OSError, json.JSONDecodeError) as exc:
                raise StoreError(f"{marker}: unreadable store marker ({exc}).") from exc
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{store.root}: store schema version {version} is newer than this bonmf-pipe "
                    f"({SCHEMA_VERSION}). Upgrade bonmf-pipe."
                )
        elif create:
            store.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(marker, {"schema_version": SCHEMA_VERSION})
        else:
            raise StoreError(
                f"No bonmf-pipe store at {store.root}. Run `bonmf-pipe ingest --path DIR` first, "
                "or point --store (or BONMF_STORE) at an existing store."
            )
        return store

    @property
    def schema_version(self) -> int:
        return json.loads((self.root / STORE_FILE).read_text()).get("schema_version", 0)

    # -- folders -------------------------------------------------------------------------
    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def table_dir(self, name: str) -> Path:
        return self.tables_dir / name

    # -- reading -------------------------------------------------------------------------
    def tables(self) -> dict[str, Manifest]:
        """Every committed table, by name."""
        out: dict[str, Manifest] = {}
        if self.tables_dir.exists():
            for d in sorted(p for p in self.tables_dir.iterdir() if p.is_dir()):
                m = read_manifest(d)
                if m is not None:
                    out[d.name] = m
        return out

    def has_table(self, name: str) -> bool:
        return read_manifest(self.table_dir(name)) is not None

    def manifest(self, name: str) -> Manifest:
        m = read_manifest(self.table_dir(name))
        if m is None:
            raise StoreError(
                f"The store at {self.root} has no table '{name}'. Run `bonmf-pipe ingest` first."
            )
        return m

    def table_files(self, name: str) -> list[Path]:
        return self.manifest(name).paths(self.table_dir(name))

    def dataset(self, name: str) -> pads.Dataset:
        """A pyarrow dataset over the table's shards (lazy; stream it with ``to_batches``)."""
        return pads.dataset([str(p) for p in self.table_files(name)], format="parquet")

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """Read a whole table into memory: only for the small ones (items, users, rejects)."""
        return self.dataset(name).to_table(columns=columns)

    def writer(self, name: str, schema: pa.Schema, settings: Any = None, **kwargs: Any) -> "TableWriter":
        return TableWriter(self, name, schema, settings_dict(settings), **kwargs)


class TableWriter:
    """Write a new generation of a table in Parquet shards; ``commit`` swaps it in atomically.

    Batches are appended in order; a new shard starts every ``rows_per_file`` rows, and row
    groups hold at most ``row_group_size`` rows, so readers can stream any table.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        schema: pa.Schema,
        settings: dict[str, Any],
        *,
        kind: str = "table",
        extra: dict[str, Any] | None = None,
        rows_per_file: int = 2_000_000,
        row_group_size: int = 128 * 1024,
        compression: str = "zstd",
    ):
        self.store = store
        self.name = name
        self.folder = store.table_dir(name)
        self.gen = f"gen-{uuid.uuid4().hex[:12]}"
        self.gen_dir = self.folder / self.gen
        self.gen_dir.mkdir(parents=True, exist_ok=True)
        self.extra = dict(extra or {})
        self.schema = schema.with_metadata(parquet_metadata(name, settings))
        self.settings = settings
        self.kind = kind
        self.rows_per_file = rows_per_file
        self.row_group_size = row_group_size
        self.compression = compression
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._rows_in_file = 0
        self._entries: list[ShardEntry] = []
        self._closed = False

    def _open_next(self) -> None:
        self._close_current()
        self._path = self.gen_dir / f"part-{len(self._entries):05d}.parquet"
        self._writer = pq.ParquetWriter(self._path, self.schema, compression=self.compression)
        self._rows_in_file = 0

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            assert self._path is not None
            self._entries.append(ShardEntry.of(self.folder, self._path, self._rows_in_file))
            self._writer = None

    def write(self, data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch]) -> None:
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        elif not isinstance(data, pa.Table):
            for b in data:
                self.write(b)
            return
        data = data.cast(self.schema.remove_metadata()) if data.schema != self.schema else data
        offset = 0
        while offset < data.num_rows:
            if self._writer is None or self._rows_in_file >= self.rows_per_file:
                self._open_next()
            take = min(data.num_rows - offset, self.rows_per_file - self._rows_in_file)
            self._writer.write_table(data.slice(offset, take), row_group_size=self.row_group_size)
            self._rows_in_file += take
            offset += take

    def commit(self) -> Manifest:
        """Close the shards, write the manifest atomically, delete older generations.

        An empty table still gets one (empty) shard, so its schema is readable and SQL sees it.
        """
        if self._writer is None and not self._entries:
            self._open_next()
        self._close_current()
        self._closed = True
        manifest = Manifest(
            name=self.name, kind=self.kind, files=tuple(self._entries), settings=self.settings, extra=self.extra
        )
        write_manifest(self.folder, manifest)
        for old in self.folder.iterdir():
            if old.is_dir() and old.name.startswith("gen-") and old.name != self.gen:
                shutil.rmtree(old, ignore_errors=True)
        return manifest

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._closed = True
        shutil.rmtree(self.gen_dir, ignore_errors=True)

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._closed:
            self.abort()


def write_parquet_atomic(path: Path, table: pa.Table, **kwargs: Any) -> None:
    """Write one Parquet file atomically (temp file beside it, then rename)."""
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp, **kwargs)
