"""The feature store: Parquet tables and shards with manifests, committed through store
snapshots, locked against concurrent writers, queried through DuckDB."""

from bonmf_pipe.featurestore.manifest import SCHEMA_VERSION, Manifest, ShardEntry, read_manifest, write_manifest
from bonmf_pipe.featurestore.snapshot import Snapshot
from bonmf_pipe.featurestore.store import Store, TableWriter, default_store_path
from bonmf_pipe.featurestore.vacuum import VacuumReport

__all__ = [
    "SCHEMA_VERSION",
    "Manifest",
    "ShardEntry",
    "Snapshot",
    "Store",
    "TableWriter",
    "VacuumReport",
    "default_store_path",
    "read_manifest",
    "write_manifest",
]
