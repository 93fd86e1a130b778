"""SQL views of the feature sets (registered with ``bonmf_pipe.featurestore.views``).

- ``text_features``, ``image_features``: the newest feature set of the modality (the one
  whose manifest changed last, as ``resolve_feature_set`` picks it), **current rows only**
  (the item's content hash matches the items table: an edited title's old vector is left
  out), one row per item: ``item_id, content_hash, vector, encoder_key``.
- ``features``: every feature set, every row (stale ones too):
  ``modality, encoder_key, item_id, content_hash, vector``.

Vectors arrive as ``FLOAT[]``: use ``list_cosine_similarity(a.vector, b.vector)`` or cast
(``vector::FLOAT[1280]``) for ``array_cosine_similarity``.
"""

from __future__ import annotations

from bonmf_pipe.featurestore.features import FeatureSet, feature_sets, text_content_hash_sql
from bonmf_pipe.featurestore.manifest import read_manifest
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.featurestore.views import register_view_provider, sql_list


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def feature_files(fs: FeatureSet) -> list[str]:
    manifest = read_manifest(fs.folder)
    return [str(p) for p in manifest.paths(fs.folder)] if manifest else []


def current_features_sql(store: Store, fs: FeatureSet) -> str | None:
    """SELECT of the feature set's current rows, one per item; None if it has no shards or no items table."""
    files = feature_files(fs)
    if not files or not store.has_table("items") or not store.table_files("items"):
        return None
    items = sql_list(store.table_files("items"))
    hash_expr = text_content_hash_sql("text") if fs.modality == "text" else "poster_sha256"
    return (
        f"SELECT DISTINCT ON (f.item_id) f.item_id, f.content_hash, f.vector, {_literal(fs.key)} AS encoder_key "
        f"FROM read_parquet({sql_list(files)}) f "
        f"SEMI JOIN (SELECT item_id, {hash_expr} AS content_hash FROM read_parquet({items})) c "
        "USING (item_id, content_hash)"
    )


@register_view_provider
def feature_views(store: Store) -> dict[str, str]:
    views: dict[str, str] = {}
    sets = feature_sets(store)
    for modality in ("text", "image"):
        newest = next((fs for fs in sets if fs.modality == modality), None)
        sql = current_features_sql(store, newest) if newest else None
        if sql:
            views[f"{modality}_features"] = sql
    parts = [
        f"SELECT {_literal(fs.modality)} AS modality, {_literal(fs.key)} AS encoder_key, item_id, content_hash, vector "
        f"FROM read_parquet({sql_list(files)})"
        for fs in sets
        if (files := feature_files(fs))
    ]
    if parts:
        views["features"] = " UNION ALL ".join(parts)
    return views
