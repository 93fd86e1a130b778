"""``similar``: the items nearest to one item by a modality's vectors (cosine, in DuckDB)."""

from __future__ import annotations

import difflib
import re

import pyarrow as pa

from bonmf_pipe.errors import QueryError
from bonmf_pipe.featurestore.features import resolve_feature_set
from bonmf_pipe.featurestore.sql import fetch_arrow
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.featurestore.views import current_features_sql, sql_list

_YEAR = re.compile(r"^(.*\S)\s*\((\d{4})\)\s*$")
_ARTICLE = re.compile(r"^(.*), (the|a|an|l'|le|la|les|il|el|der|die|das|det|den)$", re.IGNORECASE)


def _norm(title: str) -> str:
    """Case-folded, spaces collapsed, a trailing article moved to the front ("X, The" -> "the x")."""
    t = " ".join(title.split()).casefold()
    m = _ARTICLE.match(t)
    return f"{m.group(2)} {m.group(1)}" if m else t


def label(title: str, year: int | None) -> str:
    """An item as the MovieLens movie file names it: "Title (Year)"."""
    return f"{title} ({year})" if year is not None else title


def find_item(store: Store, title_or_id: str | int) -> dict:
    """The one item named by ``title_or_id``: an item id, "Title (Year)", or a title alone."""
    items = store.read_table("items", columns=["item_id", "title", "year"]).to_pylist()
    text = str(title_or_id).strip()
    if isinstance(title_or_id, int) or text.isdigit():
        found = [r for r in items if r["item_id"] == int(text)]
        if found:
            return found[0]
        raise QueryError(f"No item with id {text} in the store at {store.root}.")
    query = _norm(text)
    m = _YEAR.match(text)
    want_title, want_year = (_norm(m.group(1)), int(m.group(2))) if m else (query, None)
    found = [r for r in items if _norm(label(r["title"], r["year"])) == query]
    if not found:
        found = [r for r in items if _norm(r["title"]) == want_title and want_year in (None, r["year"])]
    if len(found) == 1:
        return found[0]
    if found:
        names = "; ".join(f"{label(r['title'], r['year'])} [id {r['item_id']}]" for r in found[:10])
        raise QueryError(f"'{text}' matches {len(found)} items: {names}. Add the year, e.g. \"Title (Year)\", or pass the id.")
    raise QueryError(f"No item titled '{text}' in the store.{_suggest(items, text)}")


def _suggest(items: list[dict], text: str) -> str:
    labels = {label(r["title"], r["year"]): r for r in items}
    normed = {_norm(k): k for k in labels}
    close = [normed[k] for k in difflib.get_close_matches(_norm(text), list(normed), n=5, cutoff=0.5)]
    words = _norm(_YEAR.sub(r"\1", text))
    close += [k for k in labels if words and words in _norm(k) and k not in close][: 5 - len(close)]
    return f" Did you mean: {'; '.join(close)}?" if close else " Try part of the title with `bonmf-pipe sql`."


def similar(store: Store, title_or_id: str | int, modality: str = "text", k: int = 10, key: str | None = None) -> pa.Table:
    """The ``k`` items nearest to one item by cosine similarity of their current vectors.

    Columns: rank, item_id, title, year, similarity (the query item itself is left out).
    ``key`` picks a feature set (full key or unique prefix); default the newest.
    """
    import duckdb

    if k < 1:
        raise QueryError(f"-k must be at least 1, not {k}.")
    fs = resolve_feature_set(store, modality, key)
    item = find_item(store, title_or_id)
    features = current_features_sql(store, fs)
    if features is None:
        raise QueryError(f"The {modality} feature set {fs.key} has no shards yet: run `bonmf-pipe encode`.")
    item_id = int(item["item_id"])
    sql = (
        f"WITH f AS ({features}), q AS (SELECT vector FROM f WHERE item_id = {item_id}) "
        "SELECT row_number() OVER (ORDER BY s.similarity DESC, s.item_id) AS rank, s.item_id, i.title, i.year, s.similarity "
        "FROM (SELECT f.item_id, list_cosine_similarity(f.vector, q.vector) AS similarity FROM f, q "
        f"WHERE f.item_id <> {item_id}) s JOIN read_parquet({sql_list(store.table_files('items'))}) i USING (item_id) "
        f"ORDER BY rank LIMIT {int(k)}"
    )
    con = duckdb.connect(":memory:")
    try:
        has_vector = con.sql(f"WITH f AS ({features}) SELECT count(*) FROM f WHERE item_id = {item_id}").fetchall()[0][0]
        if not has_vector:
            raise QueryError(
                f"{label(item['title'], item['year'])} [id {item_id}] has no current {modality} vector in feature set "
                f"{fs.key} (no {'poster' if modality == 'image' else 'text'} encoded for it): run `bonmf-pipe encode`."
            )
        return fetch_arrow(con.sql(sql))
    finally:
        con.close()
