"""Feature sets: per modality and encoder key, vectors of every item's current content.

Layout: ``<store>/features/<modality>/<encoder-key>/manifest.json`` + ``part-*.parquet``,
each row ``(item_id, content_hash, vector)``. The manifest's ``extra`` holds
``encoder_key``, ``spec`` (everything that went into the key), ``dim``, ``dtype`` and
``modality``. The content hash of a text is the SHA-256 of its UTF-8 bytes; of a poster,
the SHA-256 of the file's bytes (``items.poster_sha256``). A feature row is *current*
when its (item_id, content_hash) matches the items table, so an edited title never
picks up a stale vector.

The same text rule in SQL is ``text_content_hash_sql`` (DuckDB's ``sha256`` of the string).

**Template sets** (``encode --name NAME --text-template TEMPLATE``) live in
``features/<NAME>/<key>/`` like imported ones, with the template in the manifest's
``extra["text_template"]``. Their content hash is the SHA-256 of the values of the items
columns the template uses (each as text: lists ", "-joined, NULL as "", joined by U+001F, in
the order the fields first appear), computed by one DuckDB expression
(``template_inputs_sql``) wherever it is needed, so that a vector is current exactly while
the fields it was rendered from are unchanged.
``--shard i/N`` partitions items by ``item_partition`` (splitmix64 of the id, mod N): a rule
every process (and any scheduler) computes alike.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bonmf_pipe.errors import ConfigError, StoreError
from bonmf_pipe.featurestore.duck import fetch_arrow, sql_list
from bonmf_pipe.featurestore.manifest import read_manifest
from bonmf_pipe.featurestore.store import Store

MODALITIES = ("text", "image")  # what ``encode`` computes; other feature-set names are imported vectors
FEATURE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # a feature set's name: a folder, a view, a module key
RESERVED_NAMES = ("all", "auto", "none")  # words of ``ablate --features``: no feature set takes them


def is_feature_name(name: str) -> bool:
    """Lower-case letters, digits and '_', starting with a letter, at most 40 characters."""
    return bool(FEATURE_NAME.match(name or ""))


def text_content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_content_hash_sql(column: str) -> str:
    """The SQL (DuckDB) expression of ``text_content_hash`` over a string column."""
    return f"sha256({column})"


def item_partition(item_ids: np.ndarray | pa.Array | pa.ChunkedArray, parts: int) -> np.ndarray:
    """Each item's partition in ``[0, parts)``: splitmix64 of its id, mod ``parts``.

    Stable across processes, machines and versions, so ``--shard i/N`` runs agree.
    """
    ids = np.asarray(item_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = ids + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(parts)).astype(np.int64)


def feature_dir(store: Store, modality: str, key: str) -> Path:
    return store.features_dir / modality / key


def feature_names(store: Store) -> list[str]:
    """Every feature-set name in the store: the encoder modalities, then imported names (sorted)."""
    base = store.features_dir
    found = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    return [*MODALITIES, *(n for n in found if n not in MODALITIES)]


def is_imported(modality: str) -> bool:
    """Imported vectors (``features import``) belong to item ids, not to the items' current
    content: every row of theirs is current. (A name may instead hold template sets, which
    are matched by content: see ``FeatureSet.template``.)"""
    return modality not in MODALITIES


# --- template sets: which items columns a text template may use, and their content hash --------
TEMPLATE_SEPARATOR = "\x1f"
_NOT_TEMPLATE_FIELDS = ("item_id", "poster_path", "poster_sha256", "poster_width", "poster_height")


def template_fields(template: str) -> list[str]:
    """The distinct placeholders of ``template`` in first-use order; a ConfigError for bad syntax."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"--text-template {template!r}: {exc}. Use placeholders like {{title}} or {{tags}}.") from exc
    names = [name for _, name, _, _ in parsed if name is not None]
    if "" in names or any(not n.isidentifier() for n in names):
        raise ConfigError(f"--text-template {template!r}: every placeholder names an items column, e.g. {{tags}}.")
    if not names:
        raise ConfigError(f"--text-template {template!r} has no placeholder: use items columns, e.g. \"{{title}}. {{tags}}\".")
    return list(dict.fromkeys(names))


def _value_sql(column: str, type_: pa.DataType) -> str | None:
    """SQL of one items column as template text ('' for NULL); None: not usable in a template."""
    col = '"' + column.replace('"', '""') + '"'
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return f"coalesce(array_to_string({col}, ', '), '')"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return f"coalesce({col}, '')"
    if pa.types.is_integer(type_):
        return f"coalesce(CAST({col} AS VARCHAR), '')"
    return None


def template_columns(store: Store) -> dict[str, str]:
    """Items columns a template may use -> their SQL as text (lists ", "-joined, NULL as '')."""
    if not store.has_table("items") or not store.table_files("items"):
        raise StoreError(f"The store at {store.root} has no items table yet: run `bonmf-pipe ingest` first.")
    import pyarrow.parquet as pq

    schema = pq.read_schema(store.table_files("items")[0])
    out = {}
    for f in schema:
        sql = None if f.name in _NOT_TEMPLATE_FIELDS else _value_sql(f.name, f.type)
        if sql is not None:
            out[f.name] = sql
    return out


def check_template(store: Store, template: str) -> list[str]:
    """The template's fields, each an items column it may use; a ConfigError naming the usable ones."""
    fields = template_fields(template)
    usable = template_columns(store)
    unknown = [f for f in fields if f not in usable]
    if unknown:
        raise ConfigError(
            f"--text-template {template!r} uses {', '.join('{' + f + '}' for f in unknown)}, which the items table "
            f"does not have; the fields are {', '.join('{' + f + '}' for f in usable)}."
        )
    return fields


def template_inputs_sql(store: Store, template: str) -> str:
    """SELECT item_id, content_hash and one text column per template field, over the items table.

    The content hash is the SHA-256 of the field values joined by U+001F: the one definition
    that the encoder, the trainer's loader and the views share.
    """
    fields = check_template(store, template)
    usable = template_columns(store)
    values = [usable[f] for f in fields]
    joined = f" || chr({ord(TEMPLATE_SEPARATOR)}) || ".join(values)
    cols = ", ".join(f'{v} AS "{f}"' for f, v in zip(fields, values, strict=True))
    return (f"SELECT item_id, sha256({joined}) AS content_hash, {cols} "
            f"FROM read_parquet({sql_list(store.table_files('items'))})")


def template_inputs(store: Store, template: str) -> pa.Table:
    """(item_id, content_hash, <field>...) of every item: the fields as the template sees them."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        return fetch_arrow(con.sql(template_inputs_sql(store, template) + " ORDER BY item_id"))
    finally:
        con.close()


@dataclass(frozen=True)
class FeatureSet:
    modality: str
    key: str
    dim: int
    dtype: str
    rows: int
    updated_at: float
    folder: Path
    spec: dict[str, Any] = field(default_factory=dict)
    template: str | None = None  # template sets (``encode --name``): the text template; else None

    @property
    def matched_by(self) -> str:
        """How a row is current: "content" (text, image), "template" (its fields' hash) or "id" (imported)."""
        if self.template is not None:
            return "template"
        return "id" if is_imported(self.modality) else "content"


def feature_sets(store: Store, modality: str | None = None) -> list[FeatureSet]:
    """Every feature set in the store (optionally of one modality), newest first."""
    out: list[FeatureSet] = []
    for mod in (modality,) if modality else feature_names(store):
        base = store.features_dir / mod
        if not base.exists():
            continue
        for folder in base.iterdir():
            m = read_manifest(folder) if folder.is_dir() else None
            if m is None:
                continue
            out.append(
                FeatureSet(
                    modality=mod,
                    key=folder.name,
                    dim=int(m.extra.get("dim", 0)),
                    dtype=str(m.extra.get("dtype", "")),
                    rows=m.rows,
                    updated_at=m.created_at,
                    folder=folder,
                    spec=m.extra.get("spec", {}),
                    template=m.extra.get("text_template") if is_imported(mod) else None,
                )
            )
    return sorted(out, key=lambda f: f.updated_at, reverse=True)


def resolve_feature_set(store: Store, modality: str, key: str | None = None) -> FeatureSet:
    """The feature set named by ``key`` (a full key or a unique prefix), else the newest."""
    sets = feature_sets(store, modality)
    if not sets and is_imported(modality):
        raise StoreError(
            f"The store at {store.root} has no feature set named '{modality}'. Import one with `bonmf-pipe "
            f"features import FILE --name {modality}`, encode one with `bonmf-pipe encode --name {modality} "
            f"--text-template TEMPLATE`, or use one of: {', '.join(feature_names(store))}."
        )
    if not sets:
        raise StoreError(
            f"The store at {store.root} has no {modality} features. Run `bonmf-pipe encode "
            f"--modality {modality}` first, or train with --features that leave {modality} out."
        )
    if key is None:
        return sets[0]
    matches = [s for s in sets if s.key == key] or [s for s in sets if s.key.startswith(key)]
    if len(matches) != 1:
        known = ", ".join(s.key for s in sets)
        what = "matches several" if matches else "matches none"
        raise StoreError(f"{modality} encoder key '{key}' {what} of the keys in the store: {known}.")
    return matches[0]


def current_inputs(store: Store, modality: str) -> pa.Table:
    """(item_id, content_hash, input) of every item's current encoder input for ``modality``.

    ``input`` is the text itself, or the poster's absolute path; items without a poster
    have no image row.
    """
    if modality == "text":
        items = store.read_table("items", columns=["item_id", "text"])
        hashes = [text_content_hash(t) for t in items.column("text").to_pylist()]
        return pa.table(
            {"item_id": items.column("item_id"), "content_hash": pa.array(hashes, pa.string()), "input": items.column("text")}
        )
    if modality == "image":
        items = store.read_table("items", columns=["item_id", "poster_sha256", "poster_path"])
        items = items.filter(pc.and_(items.column("poster_sha256").is_valid(), items.column("poster_path").is_valid()))
        return items.rename_columns(["item_id", "content_hash", "input"])
    raise StoreError(f"Unknown modality '{modality}': use one of {', '.join(MODALITIES)}.")


def current_hashes(store: Store, modality: str) -> pa.Table:
    """(item_id, content_hash) of every item's current encoder input for ``modality``."""
    return current_inputs(store, modality).select(["item_id", "content_hash"])


def load_feature_matrix(
    store: Store, feature_set: FeatureSet, item_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of ``item_ids`` in that order as float32 ``[n, dim]``, and a mask of those found.

    Only current vectors count (matching the items table's content hash); items without
    one get a zero row and ``False`` in the mask.
    """
    import duckdb

    manifest = read_manifest(feature_set.folder)
    files = [str(p) for p in manifest.paths(feature_set.folder)] if manifest else []
    out = np.zeros((len(item_ids), feature_set.dim), dtype=np.float32)
    found = np.zeros(len(item_ids), dtype=bool)
    if not files:
        return out, found
    con = duckdb.connect(":memory:")
    try:
        con.register("wanted", pa.table({"item_id": pa.array(item_ids, pa.int64()), "pos": np.arange(len(item_ids))}))
        if feature_set.matched_by == "id":  # vectors of item ids, whatever the items' content
            match = f"JOIN read_parquet({sql_list(files)}) f ON f.item_id = w.item_id "
        else:
            cur = (current_hashes(store, feature_set.modality) if feature_set.matched_by == "content"
                   else template_inputs(store, feature_set.template).select(["item_id", "content_hash"]))
            con.register("cur", cur)
            match = ("JOIN cur c USING (item_id) "
                     f"JOIN read_parquet({sql_list(files)}) f ON f.item_id = c.item_id AND f.content_hash = c.content_hash ")
        rel = con.sql(f"SELECT w.pos, any_value(f.vector) AS vector FROM wanted w {match}GROUP BY w.pos ORDER BY w.pos")
        table = fetch_arrow(rel)
    finally:
        con.close()
    if table.num_rows:
        pos = table.column("pos").to_numpy()
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        out[pos] = flat.reshape(len(pos), feature_set.dim).astype(np.float32)
        found[pos] = True
    return out, found
