"""Read-only SQL over the store with DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa

from bonmf_pipe.errors import QueryError
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.featurestore.views import all_views

OutputFormat = Literal["table", "csv", "json", "parquet"]

# Statement types that only read. Everything else (INSERT, COPY, CREATE, ATTACH, SET, ...)
# is refused: the store is changed by the pipeline's stages, never by ad-hoc SQL.
_READ_ONLY = {"SELECT", "EXPLAIN"}  # DESCRIBE and SHOW parse as SELECT


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per table in the store."""
    con = duckdb.connect(":memory:")
    for name, select in all_views(store).items():
        con.execute(f'CREATE VIEW "{name}" AS {select}')
    return con


def spill_connection(tmp: Path, memory_limit_mb: int) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection held to ``memory_limit_mb`` that spills to folder ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit='{int(memory_limit_mb)}MB'")
    con.execute(f"SET temp_directory='{tmp.as_posix()}'")
    return con


def _check_read_only(query: str) -> None:
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {_clean(exc)}") from exc
    if not statements:
        raise QueryError("The query is empty. Pass a SELECT statement, e.g. 'SELECT count(*) FROM ratings'.")
    for st in statements:
        kind = st.type.name
        if kind not in _READ_ONLY:
            raise QueryError(
                f"Refused a {kind} statement: `bonmf-pipe sql` is read-only. Use SELECT (or DESCRIBE, "
                "SHOW, EXPLAIN); to export a result use --format csv|json|parquet --output FILE."
            )


def fetch_arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    """A relation's rows as an Arrow table (DuckDB 2 renamed fetch_arrow_table)."""
    fetch = getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table
    return fetch()


def _clean(exc: Exception) -> str:
    return str(exc).strip().replace("\n", " ")


def query(store: Store, sql: str) -> pa.Table:
    """Run a read-only query over the store and return the result as an Arrow table."""
    _check_read_only(sql)
    con = connect(store)
    try:
        statements = duckdb.extract_statements(sql)
        for st in statements[:-1]:
            con.execute(st.query)
        return fetch_arrow(con.sql(statements[-1].query))
    except duckdb.Error as exc:
        views = ", ".join(sorted(all_views(store))) or "none (run `bonmf-pipe ingest` first)"
        raise QueryError(f"SQL error: {_clean(exc)}\nViews in this store: {views}") from exc
    finally:
        con.close()


def write_result(table: pa.Table, fmt: OutputFormat, output: Path) -> None:
    """Write a query result to a file in csv, json (records) or parquet."""
    import pyarrow.csv as pacsv

    from bonmf_pipe.featurestore.io import atomic_path

    with atomic_path(output) as tmp:
        if fmt == "csv":
            pacsv.write_csv(table, tmp)
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        elif fmt == "json":
            import json

            tmp.write_text(json.dumps(table.to_pylist(), default=str, indent=1) + "\n")
        else:
            raise QueryError(f"--format {fmt} cannot be written to a file; use csv, json or parquet.")
