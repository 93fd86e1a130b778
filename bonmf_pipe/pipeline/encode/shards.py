"""Feature shards on disk: what is missing, appending shards safely, and encode rejects.

Each shard is written to a temporary file in the feature folder, fsynced and renamed, and
then listed in the manifest, all under an ``fcntl`` lock on ``<folder>/.lock`` so that
``--shard i/N`` processes sharing a store never lose each other's entries. A process killed
at any moment leaves either nothing or a fully written shard; a shard that is on disk but
not in the manifest (killed between rename and manifest) is never read and is removed by
the next writer, with any half-written temp file (under the same lock, so never one that
another process is writing or registering). Shards are only ever appended, so a reader
never loses a file it resolved. Rejects go to the ``rejects`` table under the store's
``tables`` lock, on top of its newest snapshot.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from bonmf_pipe.featurestore.features import feature_dir
from bonmf_pipe.featurestore.io import file_lock
from bonmf_pipe.featurestore.manifest import Manifest, ShardEntry, read_manifest, write_manifest
from bonmf_pipe.featurestore.schema import REJECTS, feature_schema
from bonmf_pipe.featurestore.sql import fetch_arrow
from bonmf_pipe.featurestore.store import Store, parquet_metadata, write_parquet_atomic
from bonmf_pipe.featurestore.views import sql_list

STAGE = "encode"
LOCK_NAME = ".lock"


def listed_files(store: Store, modality: str, key: str) -> list[str]:
    folder = feature_dir(store, modality, key)
    manifest = read_manifest(folder)
    return [str(p) for p in manifest.paths(folder)] if manifest else []


def missing_inputs(store: Store, modality: str, key: str | None, inputs: pa.Table) -> pa.Table:
    """Rows of ``inputs`` whose (item_id, content_hash) is in no shard of ``key``, by item id.

    A DuckDB anti-join against the shards the manifest lists (two columns read).
    """
    import duckdb

    files = listed_files(store, modality, key) if key else []
    if not files:
        return inputs.sort_by("item_id")
    con = duckdb.connect(":memory:")
    try:
        con.register("cur", inputs)
        rel = con.sql(
            "SELECT c.* FROM cur c ANTI JOIN "
            f"(SELECT item_id, content_hash FROM read_parquet({sql_list(files)})) f "
            "USING (item_id, content_hash) ORDER BY c.item_id"
        )
        return fetch_arrow(rel).cast(inputs.schema)
    finally:
        con.close()


class FeatureWriter:
    """Appends shards of one feature set (modality + encoder key) to the store."""

    def __init__(self, store: Store, modality: str, key: str, spec: dict[str, Any], dim: int, dtype: str,
                 settings: dict[str, Any], extra: dict[str, Any] | None = None):
        self.folder = feature_dir(store, modality, key)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = f"features/{modality}/{key}"
        self.dim = dim
        self.dtype = dtype
        self.settings = settings
        # extra: more manifest fields (a template set's text_template and template_rules)
        self.extra = {"encoder_key": key, "spec": spec, "dim": dim, "dtype": dtype, "modality": modality, **(extra or {})}
        meta = parquet_metadata(self.name, settings, {"encoder_key": key, "spec": spec, "modality": modality})
        self.schema = feature_schema(dim, dtype).with_metadata(meta)
        self._cleaned = False
        self.shards_written = 0

    def write(self, item_ids: Sequence[int] | np.ndarray, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Write one shard (rows sorted by item id) and list it in the manifest."""
        ids = np.asarray(item_ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        vecs = np.ascontiguousarray(vectors[order], dtype=np.float16 if self.dtype == "float16" else np.float32)
        assert vecs.shape == (len(ids), self.dim), (vecs.shape, self.dim)
        values = pa.array(vecs.reshape(-1), type=self.schema.field("vector").type.value_type)
        table = pa.Table.from_arrays(
            [
                pa.array(ids[order], pa.int64()),
                pa.array([hashes[i] for i in order], pa.string()),
                pa.FixedSizeListArray.from_arrays(values, self.dim),
            ],
            schema=self.schema,
        )
        with file_lock(self.folder / LOCK_NAME):
            if not self._cleaned:
                self._remove_unlisted()
            path = self.folder / f"part-{time.time_ns():x}-{uuid.uuid4().hex[:8]}.parquet"
            write_parquet_atomic(path, table, compression="zstd")
            entry = ShardEntry.of(self.folder, path, table.num_rows)
            manifest = read_manifest(self.folder) or Manifest(
                name=self.name, kind="features", settings=self.settings, extra=self.extra
            )
            write_manifest(self.folder, manifest.with_files([*manifest.files, entry]))
        self.shards_written += 1

    def _remove_unlisted(self) -> None:
        """Delete what killed runs left: shards renamed but never listed, half-written temp files.

        Safe because every writer writes, renames and lists only while holding the lock
        (which the caller holds now): nothing else is in flight in this folder.
        """
        manifest = read_manifest(self.folder)
        listed = {f.path for f in manifest.files} if manifest else set()
        leftovers = [*self.folder.glob(".part-*.parquet.tmp-*"), *self.folder.glob(".manifest.json.tmp-*")]
        for path in [*self.folder.glob("part-*.parquet"), *leftovers]:
            if path.name not in listed:
                path.unlink(missing_ok=True)
        self._cleaned = True


def reject_raw(item_id: int, modality: str, content_hash: str) -> str:
    """The ``raw`` of an encode reject: which input of which item failed."""
    return json.dumps({"item_id": int(item_id), "modality": modality, "content_hash": content_hash}, sort_keys=True)


def rejected_inputs(store: Store, modality: str) -> set[tuple[int, str]]:
    """(item_id, content_hash) of the inputs an earlier encode rejected."""
    if not store.has_table("rejects"):  # read through the store's snapshot: never half-swapped
        return set()
    table = store.read_table("rejects", columns=["stage", "raw"])
    out = set()
    for stage, raw in zip(table.column("stage").to_pylist(), table.column("raw").to_pylist(), strict=True):
        if stage != STAGE or not raw:
            continue
        try:
            d = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if d.get("modality") == modality:
            out.add((int(d["item_id"]), str(d["content_hash"])))
    return out


def append_rejects(store: Store, rows: list[dict[str, Any]]) -> int:
    """Add encode rejects to the ``rejects`` table (a new generation: old rows + new ones).

    Rows already there (same stage, source and raw) are not repeated. Returns rows added.
    """
    if not rows:
        return 0
    with store.lock("tables", what="encode: add rejects"):  # never beside an ingest's commit
        store.refresh()  # the newest rejects, not the ones this encode started from
        old = store.read_table("rejects") if store.has_table("rejects") else REJECTS.empty_table()
        seen = set(zip(*(old.column(c).to_pylist() for c in ("stage", "source", "raw")), strict=True)) if old.num_rows else set()
        new = [r for r in rows if (r["stage"], r["source"], r["raw"]) not in seen]
        if not new:
            return 0
        settings = store.manifest("rejects").settings if store.has_table("rejects") else {}
        with store.writer("rejects", REJECTS, settings) as w:
            w.write(old.select(REJECTS.names).cast(REJECTS))
            w.write(pa.Table.from_pylist(new, schema=REJECTS))
            w.commit()
    return len(new)
