"""Manifests: every folder of Parquet shards lists its files, row counts and checksums.

Readers go through the manifest, never a glob: a file that is not in the manifest (a
half-written shard of a killed run, an old generation) does not exist for them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bonmf_pipe.errors import StoreError
from bonmf_pipe.featurestore.io import atomic_write_json, sha256_file

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ShardEntry:
    path: str  # relative to the manifest's folder
    rows: int
    bytes: int
    sha256: str

    @classmethod
    def of(cls, folder: Path, path: Path, rows: int) -> "ShardEntry":
        return cls(
            path=path.relative_to(folder).as_posix(),
            rows=rows,
            bytes=path.stat().st_size,
            sha256=sha256_file(path),
        )


@dataclass(frozen=True)
class Manifest:
    name: str  # table name, e.g. "items" or "features/text/<key>"
    kind: str  # "table", "features", "run-table", ...
    files: tuple[ShardEntry, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)  # the stage settings that wrote it
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. encoder key and spec
    schema_version: int = SCHEMA_VERSION
    created_at: float = field(default_factory=time.time)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def paths(self, folder: Path) -> list[Path]:
        return [folder / f.path for f in self.files]

    def with_files(self, files: list[ShardEntry] | tuple[ShardEntry, ...]) -> "Manifest":
        return Manifest(
            name=self.name,
            kind=self.kind,
            files=tuple(files),
            settings=self.settings,
            extra=self.extra,
            schema_version=self.schema_version,
            created_at=time.time(),
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = self.rows
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Manifest":
        return cls(
            name=d["name"],
            kind=d["kind"],
            files=tuple(ShardEntry(**f) for f in d.get("files", [])),
            settings=d.get("settings", {}),
            extra=d.get("extra", {}),
            schema_version=d.get("schema_version", SCHEMA_VERSION),
            created_at=d.get("created_at", 0.0),
        )


def write_manifest(folder: Path, manifest: Manifest) -> None:
    atomic_write_json(Path(folder) / MANIFEST_NAME, manifest.to_json())


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest in ``folder``, or None when the folder has none."""
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(
            f"{path}: the manifest cannot be read ({exc}). Run `bonmf-pipe verify` and re-run "
            "the stage that wrote this folder."
        ) from exc
    if data.get("schema_version", 0) > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: written by a newer bonmf-pipe (schema version {data['schema_version']}, "
            f"this one reads up to {SCHEMA_VERSION}). Upgrade bonmf-pipe."
        )
    return Manifest.from_json(data)
