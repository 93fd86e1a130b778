"""``vacuum``: delete what no kept snapshot refers to.

Commits never delete anything (a reader of an older snapshot keeps its files). ``vacuum``
keeps the newest ``keep`` snapshots (the current one always), deletes older snapshot
files, snapshot files a killed commit left beyond ``CURRENT``, every table generation
(``tables/<name>/gen-*``) and legacy manifest that none of the kept snapshots refers to,
and temporary files of interrupted atomic writes. It holds the store's ``writers`` lock
exclusively, so it waits for (or, with ``no_wait``, refuses to run beside) any writer
that still has uncommitted files, and none starts while it runs.

Snapshots that a reader has pinned (a ``Store`` reading through it, in any process on
this machine) are kept as well, with their files, so vacuum never pulls files from under
a running query or training. (``flock`` pins are per machine: on a shared network
filesystem, run ``vacuum`` when no other machine reads the store.)
Feature sets are append-only and are not touched here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore.lock import lock_path, store_lock
from bonmf_pipe.featurestore.manifest import MANIFEST_NAME, read_manifest
from bonmf_pipe.featurestore.snapshot import (
    CURRENT,
    SNAPSHOTS_DIR,
    TABLES_DIR,
    Snapshot,
    current_version,
    read_current,
    claim,
    read_snapshot,
    snapshot_file,
    snapshot_versions,
)
from bonmf_pipe.progress import ProgressCallback


@dataclass(frozen=True)
class VacuumReport:
    current: int  # the current snapshot's version
    kept_snapshots: tuple[int, ...]
    snapshots_removed: int
    generations_removed: int  # table generation folders deleted
    files_removed: int  # files deleted, the generations' shards and manifests included
    bytes_freed: int


def vacuum(root: Path, *, keep: int = 1, no_wait: bool = False, progress: ProgressCallback | None = None) -> VacuumReport:
    """Delete snapshots older than the newest ``keep`` and every unreferenced generation."""
    if keep < 1:
        raise ConfigError(f"vacuum keep={keep}: keep at least 1 snapshot (the current one).")
    root = Path(root)
    with store_lock(root, "writers", no_wait=no_wait, what="vacuum", progress=progress), store_lock(root, "commit"):
        current = current_version(root)
        versions = snapshot_versions(root)
        if current is None:
            kept: list[Snapshot] = [read_current(root)]  # legacy store: snapshot 0
        else:
            kept = [read_snapshot(root, v) for v in versions if v <= current][-keep:]
        claims = {}
        for v in versions:  # a snapshot that a reader has pinned is kept too
            if v not in {s.version for s in kept}:
                handle = claim(root, v)
                if handle is None:
                    kept.append(read_snapshot(root, v))
                else:
                    claims[v] = handle
        kept_versions = {s.version for s in kept}
        counter = _Counter()
        for v, handle in claims.items():
            counter.remove(snapshot_file(root, v))
            lock_path(root, f"snapshot-{v:08d}").unlink(missing_ok=True)  # a late reader sees it is gone
            handle.close()
        live = _referenced_dirs(root, kept)
        base = root / TABLES_DIR
        for table in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
            for child in sorted(table.iterdir()):
                if child.is_dir() and child.name.startswith("gen-") and child.resolve() not in live:
                    counter.remove_tree(child)
                elif child.is_file() and (child.name == MANIFEST_NAME or ".tmp-" in child.name):
                    rel = child.relative_to(root).as_posix()
                    if ".tmp-" in child.name or not any(rel in s.tables.values() for s in kept):
                        counter.remove(child)
            if not any(table.iterdir()):
                table.rmdir()
        for folder in (root, root / SNAPSHOTS_DIR):
            for tmp in folder.glob(".*.tmp-*") if folder.is_dir() else []:
                if tmp.is_file() and (tmp.name.startswith(f".{CURRENT}") or folder.name == SNAPSHOTS_DIR):
                    counter.remove(tmp)
    return VacuumReport(
        current=current or 0,
        kept_snapshots=tuple(sorted(kept_versions)),
        snapshots_removed=counter.snapshots,
        generations_removed=counter.generations,
        files_removed=counter.files,
        bytes_freed=counter.bytes,
    )


def _referenced_dirs(root: Path, snapshots: list[Snapshot]) -> set[Path]:
    """Every folder holding a manifest or a shard that one of ``snapshots`` refers to."""
    dirs: set[Path] = set()
    for snap in snapshots:
        for rel in snap.tables.values():
            folder = (root / rel).parent
            dirs.add(folder.resolve())
            manifest = read_manifest(folder)
            for path in manifest.paths(folder) if manifest else []:
                dirs.add(path.parent.resolve())
    return dirs


class _Counter:
    def __init__(self) -> None:
        self.snapshots = self.generations = self.files = self.bytes = 0

    def remove(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        self.files += 1
        self.bytes += size
        if path.parent.name == SNAPSHOTS_DIR and path.suffix == ".json":
            self.snapshots += 1

    def remove_tree(self, folder: Path) -> None:
        files = [p for p in folder.rglob("*") if p.is_file()]
        self.files += len(files)
        self.bytes += sum(p.stat().st_size for p in files)
        self.generations += 1
        shutil.rmtree(folder, ignore_errors=True)
