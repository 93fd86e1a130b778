"""The store: one folder holding every table, feature shard and run, all in Parquet.

Layout::

    <store>/store.json                              schema version of the store
    <store>/CURRENT, <store>/snapshots/<n>.json     the committed state (see ``snapshot``)
    <store>/tables/<name>/gen-<id>/manifest.json    items, users, ratings, rejects, splits, ...
    <store>/tables/<name>/gen-<id>/part-*.parquet
    <store>/features/<modality>/<encoder-key>/      manifest.json + part-*.parquet (append-only)
    <store>/runs/<run-id>/                          config, metrics, checkpoint, predictions
    <store>/locks/<name>.lock                       writer locks (see ``lock``)

A table is replaced as a whole: its new generation (shards + manifest) is written beside
the old one, then one snapshot commit makes it current, alone (``TableWriter.commit``) or
together with other tables (``Store.commit``). Nothing is deleted on commit: a ``Store``
reads every table through the snapshot it opened, so its files stay valid until
``Store.vacuum`` removes the generations no kept snapshot refers to. A process killed at
any moment leaves the previous state readable.
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
from bonmf_pipe.featurestore.lock import HeldLock, store_lock
from bonmf_pipe.featurestore.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Manifest,
    ShardEntry,
    read_manifest,
    write_manifest,
)
from bonmf_pipe.featurestore.snapshot import Snapshot
from bonmf_pipe.featurestore.snapshot import commit as commit_snapshot
from bonmf_pipe.featurestore.snapshot import pin as pin_snapshot
from bonmf_pipe.featurestore.vacuum import VacuumReport
from bonmf_pipe.featurestore.vacuum import vacuum as vacuum_store
from bonmf_pipe.progress import ProgressCallback

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


def read_schema_version(marker: Path) -> int:
    """The schema version in ``store.json``; a StoreError unless it is a whole number >= 1."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(
            f"{marker}: unreadable store marker ({exc}). Restore it from a backup, or ingest into a new store."
        ) from exc
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StoreError(
            f"{marker}: schema_version {version!r} is not a store schema version (a whole number from 1 to "
            f"{SCHEMA_VERSION}); the file is damaged. Restore it from a backup, or write "
            f'{{"schema_version": {SCHEMA_VERSION}}} into it if this bonmf-pipe made the store.'
        )
    return version


class Store:
    """A bonmf-pipe store rooted at a folder.

    Reads go through one snapshot, pinned the first time a table is read (``refresh``
    moves to the newest); this store's own commits move it forward too. While pinned,
    ``vacuum`` (in any process) keeps that snapshot and its files. With ``no_wait``,
    every writer lock it takes fails at once instead of waiting for another process.
    """

    def __init__(self, root: Path | str, *, no_wait: bool = False):
        self.root = Path(root)
        self.no_wait = no_wait
        self._snapshot: Snapshot | None = None
        self._pin: object | None = None  # the open lock file that pins the snapshot

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path | str | None = None, *, create: bool = False, no_wait: bool = False) -> "Store":
        """Open the store at ``root``; with ``create`` make it when missing."""
        store = cls(root if root is not None else default_store_path(), no_wait=no_wait)
        marker = store.root / STORE_FILE
        if store.root.exists() and not store.root.is_dir():
            raise StoreError(
                f"{store.root} is a file, not a store folder. Point --store (or BONMF_STORE) at a store "
                "folder, or at a new path to create one there."
            )
        if marker.exists():
            version = read_schema_version(marker)
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
        return read_schema_version(self.root / STORE_FILE)

    # -- snapshots -----------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        """The snapshot this store reads through (pinned on first use)."""
        if self._snapshot is None:
            self.refresh()
        return self._snapshot

    def refresh(self) -> Snapshot:
        """Move to the store's newest snapshot (what other processes committed since)."""
        snap, handle = pin_snapshot(self.root)
        self._unpin()
        self._snapshot, self._pin = snap, handle
        return snap

    def close(self) -> None:
        """Unpin the snapshot (``vacuum`` may then remove it); the next read pins the newest."""
        self._unpin()

    def _unpin(self) -> None:
        if self._pin is not None:
            self._pin.close()
            self._pin = None
        self._snapshot = None

    def commit(self, writers: Iterable["TableWriter"], operation: str = "commit") -> dict[str, Manifest]:
        """Commit the new generations of several tables at once, in one snapshot.

        Either every table changes or none does; a failure before the swap leaves the
        previous snapshot current (the written generations are left for ``vacuum``).
        """
        writers = list(writers)
        try:
            manifests = {w.name: w.finish() for w in writers}
            commit_snapshot(self.root, {w.name: w.manifest_rel for w in writers}, operation)
        finally:
            for w in writers:
                w.release()
        self.refresh()  # this store reads what it committed (and what others committed before)
        return manifests

    def lock(self, name: str, *, what: str = "", progress: ProgressCallback | None = None):
        """The writer lock ``name`` of this store (a context manager; see ``featurestore.lock``)."""
        return store_lock(self.root, name, no_wait=self.no_wait, what=what, progress=progress)

    def vacuum(self, *, keep: int = 1, progress: ProgressCallback | None = None) -> VacuumReport:
        """Delete snapshots older than the newest ``keep`` and every table generation none of
        the kept snapshots refers to (waits for writers in flight; see ``featurestore.vacuum``)."""
        self._unpin()  # this store's own pin must not keep an old snapshot
        return vacuum_store(self.root, keep=keep, no_wait=self.no_wait, progress=progress)

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
        """Every table of this store's snapshot, by name."""
        return {name: self.manifest(name) for name in sorted(self.snapshot.tables)}

    def has_table(self, name: str) -> bool:
        return name in self.snapshot.tables

    def manifest_folder(self, name: str) -> Path:
        """The folder of the table's current manifest (its shard paths are relative to it)."""
        path = self.snapshot.manifest_path(self.root, name)
        if path is None:
            raise StoreError(
                f"The store at {self.root} has no table '{name}'. Run `bonmf-pipe ingest` first."
            )
        return path.parent

    def manifest(self, name: str) -> Manifest:
        folder = self.manifest_folder(name)
        m = read_manifest(folder)
        if m is None:
            raise StoreError(
                f"{folder / 'manifest.json'}: the manifest of table '{name}' in snapshot "
                f"{self.snapshot.version} is missing. Run `bonmf-pipe verify`; re-run the stage that writes '{name}'."
            )
        return m

    def table_files(self, name: str) -> list[Path]:
        return self.manifest(name).paths(self.manifest_folder(name))

    def dataset(self, name: str) -> pads.Dataset:
        """A pyarrow dataset over the table's shards (lazy; stream it with ``to_batches``)."""
        return pads.dataset([str(p) for p in self.table_files(name)], format="parquet")

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """Read a whole table into memory: only for the small ones (items, users, rejects)."""
        return self.dataset(name).to_table(columns=columns)

    def writer(self, name: str, schema: pa.Schema, settings: Any = None, **kwargs: Any) -> "TableWriter":
        return TableWriter(self, name, schema, settings_dict(settings), **kwargs)


class TableWriter:
    """Write a new generation of a table in Parquet shards; ``commit`` makes it current.

    Batches are appended in order; a new shard starts every ``rows_per_file`` rows, and row
    groups hold at most ``row_group_size`` rows, so readers can stream any table. Until it
    commits or aborts, the writer holds the store's shared ``writers`` lock, so ``vacuum``
    never deletes the generation it is writing.
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
        self._lock = HeldLock(store.root, "writers", shared=True)
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
        self._manifest: Manifest | None = None
        self._closed = False

    @property
    def manifest_rel(self) -> str:
        """Where this generation's manifest lives, relative to the store root."""
        return (self.gen_dir / MANIFEST_NAME).relative_to(self.store.root).as_posix()

    def _open_next(self) -> None:
        self._close_current()
        self._path = self.gen_dir / f"part-{len(self._entries):05d}.parquet"
        self._writer = pq.ParquetWriter(self._path, self.schema, compression=self.compression)
        self._rows_in_file = 0

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            assert self._path is not None
            self._entries.append(ShardEntry.of(self.gen_dir, self._path, self._rows_in_file))
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

    def finish(self) -> Manifest:
        """Close the shards and write this generation's manifest (not yet current).

        An empty table still gets one (empty) shard, so its schema is readable and SQL sees it.
        """
        if self._manifest is None:
            if self._writer is None and not self._entries:
                self._open_next()
            self._close_current()
            self._manifest = Manifest(
                name=self.name, kind=self.kind, files=tuple(self._entries), settings=self.settings, extra=self.extra
            )
            write_manifest(self.gen_dir, self._manifest)
        return self._manifest

    def commit(self) -> Manifest:
        """Finish this generation and make it the table's current one (one snapshot commit)."""
        return self.store.commit([self], operation=f"write {self.name}")[self.name]

    def release(self) -> None:
        self._closed = True
        self._lock.release()

    def abort(self) -> None:
        """Drop the uncommitted generation. Once finished it may be in a snapshot (a commit
        that failed after its swap), so it is left for ``vacuum``, which knows."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._manifest is None:
            shutil.rmtree(self.gen_dir, ignore_errors=True)
        self.release()

    def __enter__(self) -> "TableWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._closed:
            self.abort()
        elif not self._closed:
            self.release()  # left without commit: the generation stays invisible, for vacuum


def write_parquet_atomic(path: Path, table: pa.Table, **kwargs: Any) -> None:
    """Write one Parquet file atomically (temp file beside it, then rename)."""
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp, **kwargs)
