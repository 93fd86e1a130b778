"""SQL literals for DuckDB text built from the store's own paths and names."""

from __future__ import annotations


def sql_literal(text: str) -> str:
    """A single-quoted SQL string literal of ``text``."""
    return "'" + str(text).replace("'", "''") + "'"


def sql_list(paths) -> str:
    """A DuckDB list literal of file paths."""
    return "[" + ", ".join(sql_literal(str(p)) for p in paths) + "]"
