"""``verify``: check the store's bytes and its meaning; never changes anything.

- The snapshot: ``CURRENT`` names a readable snapshot, each of whose tables has its
  manifest in its own table folder; generations and table folders outside the current
  snapshot are reported as warnings (older states kept for readers, or uncommitted
  leftovers of a killed writer; ``vacuum`` removes them).
- The bytes: every shard of every manifest (the snapshot's tables, the feature sets) is
  present, with the listed size, checksum, row count, schema version and encoder key.
- The meaning: ratings and tags reference known items and users; every feature row
  references an item of the current ``items`` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from bonmf_pipe.errors import StoreError
from bonmf_pipe.featurestore.info import manifest_folders
from bonmf_pipe.featurestore.io import sha256_file
from bonmf_pipe.featurestore.duck import sql_list
from bonmf_pipe.featurestore.manifest import MANIFEST_NAME, SCHEMA_VERSION, read_manifest
from bonmf_pipe.featurestore.snapshot import read_snapshot, snapshot_versions
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.progress import ProgressCallback, Reporter

# (table, column, referenced table, key): every value of the column must be a key there.
REFERENCES = (
    ("ratings", "item_id", "items", "item_id"),
    ("ratings", "user_id", "users", "user_id"),
    ("tags", "item_id", "items", "item_id"),
    ("tags", "user_id", "users", "user_id"),
)


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
    snapshot: int = 0  # the snapshot verified (0: a store without snapshots)
    references: int = 0  # reference checks run (ratings -> items, features -> items, ...)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def verify_store(store: Store, progress: ProgressCallback | None = None) -> VerifyReport:
    report = Reporter(progress)
    store = Store(store.root)  # the newest snapshot, whatever the caller's store has pinned
    try:
        snapshot = store.snapshot
    except StoreError as exc:
        return VerifyReport(folders=0, shards=0, problems=(Problem("CURRENT", str(exc)),))
    problems = _snapshot_problems(store)
    folders = manifest_folders(store)
    shards = 0
    report.begin("verify", total=len(folders) + 1, unit="folders")
    for folder in folders:
        folder_problems = _verify_folder(store, folder)
        problems.extend(folder_problems)
        m = read_manifest(folder)
        shards += len(m.files) if m else 0
        report.advance("verify")
    meaning, checked = _reference_problems(store)  # a file DuckDB cannot read is reported there too
    problems.extend(meaning)
    report.advance("verify")
    report.end("verify")
    return VerifyReport(
        folders=len(folders), shards=shards, problems=tuple(problems), snapshot=snapshot.version, references=checked
    )


def _rel(store: Store, path: Path) -> str:
    return path.relative_to(store.root).as_posix()


def _snapshot_problems(store: Store) -> list[Problem]:
    """Tables whose manifest is not in their folder; folders and generations outside the snapshot."""
    out: list[Problem] = []
    snap = store.snapshot
    live: set[Path] = set()
    for name, rel in snap.tables.items():
        path = store.root / rel
        if not rel.startswith(f"tables/{name}/"):
            out.append(Problem(rel, f"snapshot {snap.version} gives table '{name}' a manifest outside tables/{name}/"))
        if not path.is_file():
            out.append(Problem(rel, f"the manifest of table '{name}' in snapshot {snap.version} is missing"))
            continue
        m = read_manifest(path.parent)
        if m is not None and m.name != name:
            out.append(Problem(rel, f"manifest of table '{m.name}' listed as table '{name}' in snapshot {snap.version}"))
        live.add(path.parent.resolve())
        live.update(p.parent.resolve() for p in (m.paths(path.parent) if m else []))
    if not store.tables_dir.is_dir():
        return out
    live |= _kept_dirs(store)
    for folder in sorted(p for p in store.tables_dir.iterdir() if p.is_dir()):
        if folder.name not in snap.tables:
            out.append(Problem(_rel(store, folder), "not in the current snapshot: left by an interrupted writer, "
                               "never read; `bonmf-pipe vacuum` removes it", "warning"))
            continue
        for gen in sorted(p for p in folder.iterdir() if p.is_dir() and p.resolve() not in live):
            out.append(Problem(_rel(store, gen), "in no snapshot: an uncommitted generation or one of a snapshot "
                               "vacuum removed, never read; `bonmf-pipe vacuum` removes it", "warning"))
    return out


def _kept_dirs(store: Store) -> set[Path]:
    """Generation folders that older, still kept snapshots use (readers may hold them)."""
    dirs: set[Path] = set()
    for version in snapshot_versions(store.root):
        try:
            snap = read_snapshot(store.root, version)
        except StoreError:
            continue  # a snapshot never made current (killed commit); vacuum removes it
        for rel in snap.tables.values():
            folder = (store.root / rel).parent
            dirs.add(folder.resolve())
            if not folder.name.startswith("gen-"):  # a legacy manifest: its shards' folders
                m = read_manifest(folder)
                dirs.update(p.parent.resolve() for p in (m.paths(folder) if m else []))
    return dirs


def _verify_folder(store: Store, folder: Path) -> list[Problem]:
    m = read_manifest(folder)
    out: list[Problem] = []
    if m is None:
        return [Problem(_rel(store, folder / MANIFEST_NAME), "missing")]
    listed = set()
    for entry in m.files:
        path = folder / entry.path
        listed.add(path.resolve())
        if not path.exists():
            out.append(Problem(_rel(store, path), "listed in the manifest but missing"))
            continue
        if path.stat().st_size != entry.bytes:
            out.append(Problem(_rel(store, path), f"size {path.stat().st_size} != manifest {entry.bytes}"))
        if sha256_file(path) != entry.sha256:
            out.append(Problem(_rel(store, path), "checksum differs from the manifest (file changed or corrupt)"))
            continue
        try:
            meta = pq.read_metadata(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a problem to report
            out.append(Problem(_rel(store, path), f"not a readable Parquet file ({exc})"))
            continue
        if meta.num_rows != entry.rows:
            out.append(Problem(_rel(store, path), f"{meta.num_rows} rows != manifest {entry.rows}"))
        kv = meta.metadata or {}
        version = int(kv.get(b"bonmf.schema_version", b"0"))
        if version != SCHEMA_VERSION:
            out.append(Problem(_rel(store, path), f"schema version {version} != {SCHEMA_VERSION}"))
        key = m.extra.get("encoder_key")
        if key is not None and kv.get(b"bonmf.encoder_key", b"").decode() != key:
            out.append(Problem(_rel(store, path), "encoder key in the shard differs from the manifest"))
    if folder.is_relative_to(store.features_dir):  # feature sets: shards appended in place
        for path in folder.glob("*.parquet"):
            if path.resolve() not in listed:
                out.append(Problem(_rel(store, path), "not in the manifest: left by an interrupted run, never read",
                                   "warning"))
    return out


def _reference_problems(store: Store) -> tuple[list[Problem], int]:
    """Rows that reference an item or user the store does not know."""
    import duckdb


    out: list[Problem] = []
    checks = [(t, c, ref, key, store.table_files(t)) for t, c, ref, key in REFERENCES if store.has_table(t)]
    checks = [x for x in checks if store.has_table(x[2])]
    if store.has_table("items"):
        for folder in manifest_folders(store)[len(store.snapshot.tables):]:
            m = read_manifest(folder)
            if m is not None and m.files:
                checks.append((_rel(store, folder), "item_id", "items", "item_id", m.paths(folder)))
    con = duckdb.connect(":memory:")
    try:
        for table, column, ref, key, files in checks:
            if not files:
                continue
            sql = (
                f"SELECT {column} AS id, count(*) AS n FROM read_parquet({sql_list(files)}) "
                f"WHERE {column} NOT IN (SELECT {key} FROM read_parquet({sql_list(store.table_files(ref))})) "
                "GROUP BY ALL ORDER BY n DESC"
            )
            try:
                rows = con.sql(sql).fetchall()
            except duckdb.Error as exc:
                out.append(Problem(table, f"cannot check {column} against {ref}: {exc}"))
                continue
            if rows:
                n = sum(r[1] for r in rows)
                examples = ", ".join(str(r[0]) for r in rows[:5])
                out.append(Problem(table, (
                    f"{n:,} rows reference {len(rows):,} {column} values that are not in {ref} (e.g. {examples}). "
                    + _fix(table, ref)
                )))
    finally:
        con.close()
    return out, len(checks)


def _fix(table: str, ref: str) -> str:
    if table.startswith("features/"):
        return (f"These vectors were encoded for another dataset: re-ingest that dataset, or move the feature "
                f"folder {table} out of the store and run `bonmf-pipe encode` again.")
    return f"The store mixes two datasets: run `bonmf-pipe ingest` again to rewrite {table} and {ref} together."
