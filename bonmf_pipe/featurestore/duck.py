"""Small DuckDB helpers that the store's modules share: literals and Arrow results."""

from __future__ import annotations

import duckdb
import pyarrow as pa


def sql_literal(text: str) -> str:
    """A single-quoted SQL string literal of ``text``."""
    return "'" + str(text).replace("'", "''") + "'"


def sql_list(paths) -> str:
    """A DuckDB list literal of file paths."""
    return "[" + ", ".join(sql_literal(str(p)) for p in paths) + "]"


def fetch_arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    """A relation's rows as an Arrow table (DuckDB 2 renamed fetch_arrow_table)."""
    fetch = getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table
    return fetch()
