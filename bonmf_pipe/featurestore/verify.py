"""Check every manifest folder in the store against its shards; never changes anything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from bonmf_pipe.featurestore.info import manifest_folders
from bonmf_pipe.featurestore.io import sha256_file
from bonmf_pipe.featurestore.manifest import SCHEMA_VERSION, read_manifest
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.progress import ProgressCallback, Reporter


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str
    severity: str = "error"  # "warning": harmless leftovers that readers never see


@dataclass(frozen=True)
class VerifyReport:
    folders: int
    shards: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def verify_store(store: Store, progress: ProgressCallback | None = None) -> VerifyReport:
    report = Reporter(progress)
    folders = manifest_folders(store)
    problems: list[Problem] = []
    shards = 0
    report.begin("verify", total=len(folders), unit="folders")
    for folder in folders:
        problems.extend(_verify_folder(store, folder))
        m = read_manifest(folder)
        shards += len(m.files) if m else 0
        report.advance("verify")
    report.end("verify")
    return VerifyReport(folders=len(folders), shards=shards, problems=tuple(problems))


def _verify_folder(store: Store, folder: Path) -> list[Problem]:
    m = read_manifest(folder)
    rel = lambda p: p.relative_to(store.root).as_posix()  # noqa: E731
    out: list[Problem] = []
    listed = set()
    for entry in m.files:
        path = folder / entry.path
        listed.add(path.resolve())
        if not path.exists():
            out.append(Problem(rel(path), "listed in the manifest but missing"))
            continue
        if path.stat().st_size != entry.bytes:
            out.append(Problem(rel(path), f"size {path.stat().st_size} != manifest {entry.bytes}"))
        if sha256_file(path) != entry.sha256:
            out.append(Problem(rel(path), "checksum differs from the manifest (file changed or corrupt)"))
            continue
        try:
            meta = pq.read_metadata(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a problem to report
            out.append(Problem(rel(path), f"not a readable Parquet file ({exc})"))
            continue
        if meta.num_rows != entry.rows:
            out.append(Problem(rel(path), f"{meta.num_rows} rows != manifest {entry.rows}"))
        kv = meta.metadata or {}
        version = int(kv.get(b"bonmf.schema_version", b"0"))
        if version != SCHEMA_VERSION:
            out.append(Problem(rel(path), f"schema version {version} != {SCHEMA_VERSION}"))
        key = m.extra.get("encoder_key")
        if key is not None and kv.get(b"bonmf.encoder_key", b"").decode() != key:
            out.append(Problem(rel(path), "encoder key in the shard differs from the manifest"))
    for path in folder.rglob("*.parquet"):
        if path.resolve() not in listed and ".tmp-" not in path.name and not _in_uncommitted_gen(folder, path, m):
            out.append(Problem(rel(path), "not in the manifest: left by an interrupted run, never read", "warning"))
    return out


def _in_uncommitted_gen(folder: Path, path: Path, manifest) -> bool:
    """Shards of another table folder nested below (never the case) are skipped."""
    parent = path.parent
    while parent != folder:
        if (parent / "manifest.json").exists():
            return True
        parent = parent.parent
    return False
