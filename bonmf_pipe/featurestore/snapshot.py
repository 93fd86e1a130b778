"""Store snapshots: which generation of every table is the store's current state.

Layout::

    <store>/snapshots/00000007.json    {"version": 7, "tables": {"items": "tables/items/gen-…/manifest.json", …}}
    <store>/CURRENT                    "00000007.json": the one pointer readers follow

A commit (one table, or all of an ingest's tables at once) writes the new generations'
manifests first, then the next snapshot file, then swaps ``CURRENT`` by an atomic rename,
under the store's ``commit`` lock. Until that rename nothing of the commit is visible;
after it, all of it is. A reader resolves every table through the snapshot it opened, and
no commit deletes a file, so a query never sees half a commit and never loses a file under
it: old generations stay until ``vacuum`` removes those no kept snapshot refers to. A
reader *pins* its snapshot (a shared ``flock`` on ``locks/snapshot-<n>.lock`` for as long
as it reads through it), and ``vacuum`` never removes a pinned snapshot.

A store written before snapshots existed (``tables/<name>/manifest.json``) reads as
snapshot 0, built from those manifests; its first commit carries them over.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bonmf_pipe.errors import StoreError
from bonmf_pipe.featurestore.io import atomic_write_bytes, atomic_write_json
from bonmf_pipe.featurestore.lock import lock_path, store_lock
from bonmf_pipe.featurestore.manifest import MANIFEST_NAME

SNAPSHOTS_DIR = "snapshots"
CURRENT = "CURRENT"
TABLES_DIR = "tables"


@dataclass(frozen=True)
class Snapshot:
    """One committed state of the store: each table's manifest, relative to the store root."""

    version: int
    tables: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    operation: str = ""

    def manifest_path(self, root: Path, name: str) -> Path | None:
        rel = self.tables.get(name)
        return Path(root) / rel if rel else None

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "tables": dict(sorted(self.tables.items())),
            "created_at": self.created_at,
            "operation": self.operation,
        }


def snapshot_file(root: Path, version: int) -> Path:
    return Path(root) / SNAPSHOTS_DIR / f"{version:08d}.json"


def snapshot_versions(root: Path) -> list[int]:
    """Versions of every snapshot file in the store, oldest first."""
    folder = Path(root) / SNAPSHOTS_DIR
    if not folder.is_dir():
        return []
    return sorted(int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit())


def read_snapshot(root: Path, version: int) -> Snapshot:
    path = snapshot_file(root, version)
    try:
        data = json.loads(path.read_text())
        return Snapshot(
            version=int(data["version"]),
            tables=dict(data.get("tables", {})),
            created_at=float(data.get("created_at", 0.0)),
            operation=str(data.get("operation", "")),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(
            f"{path}: the store snapshot cannot be read ({exc}). Run `bonmf-pipe verify`; re-running "
            "`bonmf-pipe ingest` writes a new snapshot."
        ) from exc


def current_version(root: Path) -> int | None:
    """The version ``CURRENT`` points at, or None for a store without snapshots yet."""
    path = Path(root) / CURRENT
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"{path}: unreadable ({exc}). Check the store folder's permissions.") from exc
    stem = text.removesuffix(".json")
    if not stem.isdigit():
        raise StoreError(
            f"{path} holds {text[:40]!r}, not a snapshot name. It should name a file in "
            f"{Path(root) / SNAPSHOTS_DIR}; write the newest one's name into it, then run `bonmf-pipe verify`."
        )
    return int(stem)


def read_current(root: Path) -> Snapshot:
    """The store's current snapshot (snapshot 0 from legacy manifests when there is none)."""
    version = current_version(root)
    return legacy_snapshot(root) if version is None else read_snapshot(root, version)


def legacy_snapshot(root: Path) -> Snapshot:
    """Snapshot 0: the ``tables/<name>/manifest.json`` of a store written before snapshots."""
    tables = {}
    base = Path(root) / TABLES_DIR
    if base.is_dir():
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            if (folder / MANIFEST_NAME).is_file():
                tables[folder.name] = f"{TABLES_DIR}/{folder.name}/{MANIFEST_NAME}"
    return Snapshot(version=0, tables=tables)


def commit(root: Path, changes: Mapping[str, str | None], operation: str) -> Snapshot:
    """Make ``changes`` (table -> manifest path relative to ``root``, None drops the table)
    the store's state, all at once, on top of whatever is current now."""
    root = Path(root)
    with store_lock(root, "commit"):
        base = read_current(root)
        tables = dict(base.tables)
        for name, rel in changes.items():
            if rel is None:
                tables.pop(name, None)
            else:
                tables[name] = rel
        new = Snapshot(version=base.version + 1, tables=tables, created_at=time.time(), operation=operation)
        # A file of this version can only be left by a commit killed before its swap: never current.
        atomic_write_json(snapshot_file(root, new.version), new.to_json())
        atomic_write_bytes(root / CURRENT, f"{new.version:08d}.json\n".encode())
    return new


def _pin_file(root: Path, version: int):
    path = lock_path(root, f"snapshot-{version:08d}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a+b")  # noqa: SIM115 - held open for as long as the pin lives


def pin(root: Path) -> tuple[Snapshot, object | None]:
    """The current snapshot and its pin (a file holding a shared lock; close it to unpin).

    Snapshot 0 (a legacy store) has no pin. A snapshot that ``vacuum`` removed between
    reading ``CURRENT`` and pinning is read again from the new ``CURRENT``.
    """
    for _ in range(100):
        snap = read_current(root)
        if snap.version == 0:
            return snap, None
        handle = _pin_file(root, snap.version)
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)  # waits while vacuum decides about it
        if snapshot_file(root, snap.version).is_file():
            return snap, handle
        handle.close()
    raise StoreError(f"{root}: the current snapshot keeps disappearing; is `bonmf-pipe vacuum` running in a loop?")


def claim(root: Path, version: int):
    """An exclusive hold on snapshot ``version`` if no reader pins it (for vacuum), else None."""
    handle = _pin_file(root, version)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle
