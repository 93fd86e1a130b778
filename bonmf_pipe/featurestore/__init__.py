"""The feature store: Parquet tables and shards with manifests, queried through DuckDB."""

from bonmf_pipe.featurestore.manifest import SCHEMA_VERSION, Manifest, ShardEntry, read_manifest, write_manifest
from bonmf_pipe.featurestore.store import Store, TableWriter, default_store_path

__all__ = [
    "SCHEMA_VERSION",
    "Manifest",
    "ShardEntry",
    "Store",
    "TableWriter",
    "default_store_path",
    "read_manifest",
    "write_manifest",
]
