"""The store's named DuckDB views, declared in one place.

| view | what | from |
| --- | --- | --- |
| one per table (``items``, ``users``, ``ratings``, ``tags``, ``rejects``, ``split_<id>``, ...) | the table's rows | the store's snapshot |
| ``text_features``, ``image_features``, ``<name>_features`` | the newest feature set of the modality or imported / template name, current rows only (the item's content hash matches ``items``; for a template set, the hash of the fields it renders; for imported vectors, every row of a known item), one row per item: ``item_id, content_hash, vector, encoder_key`` | feature manifests |
| ``coverage`` | per feature-set name (its newest set): ``feature_set, encoder_key, dim, items, with_vector, without_vector`` | feature manifests, ``items`` |
| ``features`` | every feature set, every row (stale ones too): ``modality, encoder_key, item_id, content_hash, vector`` | feature manifests |
| ``runs``, ``metrics``, ``predictions``, ``evaluations`` | one row per run; per-epoch rows; test predictions; evaluation metric rows (each with ``run_id``) | ``runs/<run-id>/`` files |
| ``ablations`` | every ablation's comparison rows, with ``ablation_id`` | ``ablations/<id>/`` files |

Vectors arrive as ``FLOAT[]``: use ``list_cosine_similarity(a.vector, b.vector)`` or cast
(``vector::FLOAT[1280]``) for ``array_cosine_similarity``. Timestamps (``runs.created_at``)
are ``TIMESTAMP WITH TIME ZONE`` (older runs' epoch seconds included). Every view of one call comes from one snapshot of the store.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bonmf_pipe.featurestore.features import (
    FeatureSet, feature_names, feature_sets, template_inputs_sql, text_content_hash_sql,
)
from bonmf_pipe.featurestore.duck import sql_list, sql_literal
from bonmf_pipe.featurestore.manifest import read_manifest
from bonmf_pipe.featurestore.runs import EPOCHS, PREDICTIONS, SUMMARY
from bonmf_pipe.featurestore.store import Store

__all__ = ["FILE_VIEWS", "all_views", "current_features_sql", "sql_list"]

# Files of the evaluation and ablation workflows (which import these names from here).
EVALUATION = "evaluation.parquet"  # runs/<run-id>/evaluation.parquet
ABLATIONS_DIR = "ablations"
ABLATION_RESULTS = "results.parquet"  # ablations/<ablation-id>/results.parquet

# Views over files that stages write in their own folders: view -> (folder under the store, file name).
FILE_VIEWS: dict[str, tuple[str, str]] = {
    "runs": ("runs", SUMMARY),
    "metrics": ("runs", EPOCHS),
    "predictions": ("runs", PREDICTIONS),
    "evaluations": ("runs", EVALUATION),
    "ablations": (ABLATIONS_DIR, ABLATION_RESULTS),
}
# Columns of file views stored as float epoch seconds, shown as TIMESTAMP.
EPOCH_SECONDS = ("created_at",)


def all_views(store: Store) -> dict[str, str]:
    """Every view of the store: ``{name: SELECT ...}``."""
    return {**table_views(store), **feature_views(store), **file_views(store)}


def table_views(store: Store) -> dict[str, str]:
    """One view per table of the store's snapshot (items, users, ratings, rejects, ...)."""
    views = {}
    for name in store.tables():
        files = store.table_files(name)
        if files:
            views[name] = f"SELECT * FROM read_parquet({sql_list(files)})"
    return views


def feature_files(fs: FeatureSet) -> list[str]:
    manifest = read_manifest(fs.folder)
    return [str(p) for p in manifest.paths(fs.folder)] if manifest else []


def current_features_sql(store: Store, fs: FeatureSet, *, ids_only: bool = False) -> str | None:
    """SELECT of the feature set's current rows, one per item; None if it has no shards or no items table.

    ``ids_only``: just the distinct ``item_id`` of those rows (no vector is read: coverage counts).
    """
    files = feature_files(fs)
    if not files or not store.has_table("items") or not store.table_files("items"):
        return None
    items = sql_list(store.table_files("items"))
    select = ("SELECT DISTINCT f.item_id" if ids_only else
              f"SELECT DISTINCT ON (f.item_id) f.item_id, f.content_hash, f.vector, {sql_literal(fs.key)} AS encoder_key")
    if fs.matched_by == "id":  # imported vectors belong to item ids: every row of a known item is current
        return f"{select} FROM read_parquet({sql_list(files)}) f SEMI JOIN read_parquet({items}) c USING (item_id)"
    if fs.matched_by == "template":  # the hash of the items fields the template renders
        current = template_inputs_sql(store, fs.template)
    else:
        hash_expr = text_content_hash_sql("text") if fs.modality == "text" else "poster_sha256"
        current = f"SELECT item_id, {hash_expr} AS content_hash FROM read_parquet({items})"
    return (
        f"{select} FROM read_parquet({sql_list(files)}) f "
        f"SEMI JOIN (SELECT item_id, content_hash FROM ({current})) c "
        "USING (item_id, content_hash)"
    )


def feature_views(store: Store) -> dict[str, str]:
    views: dict[str, str] = {}
    sets = feature_sets(store)
    coverage = []
    for modality in feature_names(store):
        newest = next((fs for fs in sets if fs.modality == modality), None)
        sql = current_features_sql(store, newest) if newest else None
        if sql:
            views[f"{modality}_features"] = sql
            coverage.append(
                f"SELECT {sql_literal(modality)} AS feature_set, {sql_literal(newest.key)} AS encoder_key, "
                f"{newest.dim} AS dim, n.items, count(f.item_id) AS with_vector, n.items - count(f.item_id) AS "
                f"without_vector FROM (SELECT count(*) AS items FROM read_parquet({sql_list(store.table_files('items'))})) n "
                f"LEFT JOIN ({current_features_sql(store, newest, ids_only=True)}) f ON true GROUP BY n.items"
            )
    if coverage:  # per feature set (the newest of each name): items with and without a current vector
        views["coverage"] = " UNION ALL ".join(coverage)
    parts = [
        f"SELECT {sql_literal(fs.modality)} AS modality, {sql_literal(fs.key)} AS encoder_key, item_id, content_hash, vector "
        f"FROM read_parquet({sql_list(files)})"
        for fs in sets
        if (files := feature_files(fs))
    ]
    if parts:
        views["features"] = " UNION ALL ".join(parts)
    return views


def file_views(store: Store) -> dict[str, str]:
    """The ``FILE_VIEWS``: one file per run (or ablation) folder, combined by column name."""
    views = {}
    for view, (folder, name) in FILE_VIEWS.items():
        base = store.root / folder
        files = sorted(p / name for p in base.iterdir() if (p / name).is_file()) if base.is_dir() else []
        if files:
            views[view] = " UNION ALL BY NAME ".join(_file_select(f) for f in files)
    return views


def _file_select(path: Path) -> str:
    """SELECT of one file, its epoch-seconds columns turned into TIMESTAMP."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid):
        schema = pa.schema([])  # unreadable: let the query report it
    fix = [
        f"to_timestamp({c}) AS {c}"
        for c in EPOCH_SECONDS
        if c in schema.names and pa.types.is_floating(schema.field(c).type)
    ]
    replace = f" REPLACE ({', '.join(fix)})" if fix else ""
    return f"SELECT *{replace} FROM read_parquet({sql_literal(str(path))})"
