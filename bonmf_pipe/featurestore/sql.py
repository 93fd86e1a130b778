"""Read-only SQL over the store with DuckDB, and writing a result to a file.

``query`` runs user SQL behind two guards:

1. DuckDB's own: the connection reads only files under the store's folder
   (``allowed_directories`` + ``enable_external_access = false``: no other file, URL, glob,
   ATTACH, INSTALL or Python object is reachable), extensions are never installed or loaded
   on demand (``autoinstall_known_extensions`` / ``autoload_known_extensions`` off), and the
   configuration is locked (``lock_configuration``) once the views exist, so no ``SET`` can
   lift a guard.
2. Statement types: only SELECT (DESCRIBE, SHOW, SUMMARIZE, FROM ..., VALUES parse as one)
   and EXPLAIN of a SELECT run. COPY, CREATE, INSERT, ATTACH, SET, PRAGMA, CALL ... and
   ``EXPLAIN ANALYZE`` of any of them are refused before anything runs: the store's folder
   is readable, so DuckDB alone would let ``COPY ... TO '<store>/...'`` overwrite a shard.

Several statements (``SELECT 1; SELECT 2``) run one after another; the last one's rows are
the result. Each query reads the store's newest snapshot, opened once before the first
statement runs, so every view and statement of it sees one committed state (an ingest
committing meanwhile is seen by the next query).
Reading a file outside the store is refused; use DuckDB directly for other files.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa

from bonmf_pipe.errors import QueryError
from bonmf_pipe.featurestore.duck import fetch_arrow, sql_literal  # fetch_arrow re-exported for the stages
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.featurestore.views import all_views

OutputFormat = Literal["table", "csv", "json", "parquet"]
OUTPUT_FORMATS = ("table", "csv", "json", "parquet")

# Statement types that only read (DESCRIBE, SHOW and SUMMARIZE parse as SELECT); EXPLAIN is
# allowed when what it explains is one of these.
_READ_ONLY = {"SELECT"}
_EXPLAIN_PREFIX = re.compile(
    r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\((?:[^()']|'[^']*')*\)\s*)?", re.IGNORECASE
)


def connect(store: Store, views: dict[str, str] | None = None) -> tuple[duckdb.DuckDBPyConnection, Path]:
    """A locked-down in-memory DuckDB connection with one view per table, and its spill folder.

    The caller closes the connection and removes the spill folder (``query`` does both).
    """
    views = all_views(store) if views is None else views
    spill = Path(tempfile.mkdtemp(prefix="bonmf-sql-"))
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    try:
        roots = sorted({_dir_prefix(store.root), _dir_prefix(store.root.resolve()), _dir_prefix(spill)})
        con.execute(f"SET allowed_directories = [{', '.join(sql_literal(r) for r in roots)}]")
        con.execute(f"SET temp_directory = {sql_literal(str(spill))}")
        con.execute("SET enable_external_access = false")
        for name, select in views.items():
            con.execute(f'CREATE VIEW "{name}" AS {select}')
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
        raise QueryError(f"Could not open the store's views: {_clean(exc)}. Run `bonmf-pipe verify`.") from exc
    return con, spill


def spill_connection(tmp: Path, memory_limit_mb: int) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection held to ``memory_limit_mb`` that spills to folder ``tmp``.

    For the pipeline's own queries (split creation, id maps, evaluation streams), not for
    user SQL. Results without an ORDER BY may come in any order
    (``preserve_insertion_order = false``: DuckDB then need not buffer rows to keep their
    order); every query that needs an order says ORDER BY.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
    con.execute(f"SET temp_directory = {sql_literal(tmp.as_posix())}")
    con.execute("SET preserve_insertion_order = false")
    return con


def read_only_statements(sql: str) -> list[str]:
    """The statements of ``sql``, each checked to only read; a QueryError otherwise."""
    statements = _parse(sql)
    if not statements:
        raise QueryError("The query is empty. Pass a SELECT statement, e.g. 'SELECT count(*) FROM ratings'.")
    for st in statements:
        kind = st.type.name
        if kind == "EXPLAIN":
            _check_explained(st.query)
        elif kind not in _READ_ONLY:
            raise QueryError(_refusal(kind))
    return [st.query for st in statements]


def query(store: Store, sql: str, output: Path | None = None) -> pa.Table:
    """Run read-only SQL over the store; the last statement's rows as an Arrow table.

    With ``output`` (where the caller will write the result) the path is checked first, so a
    query meant to overwrite a store file is refused before it runs.
    """
    statements = read_only_statements(sql)
    if output is not None:
        check_output(store, output)
    snapshot = Store(store.root)  # this query's own view of the store: its newest snapshot, pinned once
    views = all_views(snapshot)  # resolved once: every statement sees the same files
    con, spill = connect(snapshot, views)
    try:
        for statement in statements[:-1]:  # read-only, so running them only surfaces their errors
            con.execute(statement)
            con.complete()
        return fetch_arrow(con.sql(statements[-1]))
    except duckdb.Error as exc:
        raise QueryError(_explain_error(exc, views)) from exc
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


# -- results to files ------------------------------------------------------------------


def check_output(store: Store, output: Path) -> None:
    """Refuse an output path inside the store, a folder, or one whose folder is missing."""
    output = Path(output)
    target = output.resolve()
    root = store.root.resolve()
    if target == root or target.is_relative_to(root):
        raise QueryError(
            f"--output {output} is inside the store ({store.root}): the store's files are written only by "
            "its stages. Write the result somewhere else, e.g. --output result.parquet."
        )
    if output.is_dir():
        raise QueryError(f"--output {output} is a folder. Give a file name, e.g. --output {output / 'result.csv'}.")
    if not output.parent.is_dir():
        raise QueryError(f"--output {output}: the folder {output.parent} does not exist. Create it first.")


def write_result(table: pa.Table, fmt: OutputFormat, output: Path, store: Store | None = None) -> None:
    """Write a query result to a file in csv, json (records) or parquet, atomically."""
    import pyarrow.parquet as pq

    from bonmf_pipe.featurestore.io import atomic_path

    if fmt not in ("csv", "json", "parquet"):
        raise QueryError(f"--format {fmt} cannot be written to a file; use csv, json or parquet.")
    if store is not None:
        check_output(store, output)
    elif Path(output).is_dir():
        raise QueryError(f"--output {output} is a folder. Give a file name, e.g. --output {Path(output) / 'result.csv'}.")
    try:
        with atomic_path(Path(output)) as tmp:
            if fmt == "csv":
                tmp.write_bytes(csv_bytes(table))
            elif fmt == "parquet":
                pq.write_table(table, tmp)
            else:
                tmp.write_text(json_text(table, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise QueryError(f"Could not write {output}: {exc.strerror or exc}. Check the path and its permissions.") from exc
    except pa.ArrowException as exc:
        types = ", ".join(f"{f.name} ({f.type})" for f in table.schema)
        raise QueryError(
            f"--format {fmt} cannot hold this result ({_clean(exc)}). Columns: {types}. Cast the odd column in "
            "the query, e.g. SELECT col::VARCHAR, or use another --format."
        ) from exc


def csv_bytes(table: pa.Table) -> bytes:
    """The table as CSV (UTF-8, with a header); list, struct and map columns as JSON text."""
    import io

    import pyarrow.csv as pacsv

    buf = io.BytesIO()
    pacsv.write_csv(_flatten_nested(table), buf)
    return buf.getvalue()


def json_text(table: pa.Table, indent: int | None = None) -> str:
    """The table as a JSON array of records (dates and other non-JSON values as text)."""
    return json.dumps(table.to_pylist(), default=str, indent=indent, ensure_ascii=False)


def _flatten_nested(table: pa.Table) -> pa.Table:
    """Columns CSV cannot hold become text: nested ones (lists, structs, maps) JSON, other odd
    ones (intervals, binary, bit strings) Python's ``str``; plain columns stay as they are."""
    for i, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            text = lambda v: json.dumps(v, default=str, ensure_ascii=False)  # noqa: E731
        elif not _csv_plain(field.type):
            text = str
        else:
            continue
        values = [None if v is None else text(v) for v in table.column(i).to_pylist()]
        table = table.set_column(i, pa.field(field.name, pa.string()), pa.array(values, pa.string()))
    return table


def _csv_plain(t: pa.DataType) -> bool:
    """Whether Arrow's CSV writer writes type ``t`` as it is."""
    t = t.value_type if pa.types.is_dictionary(t) else t
    return any(check(t) for check in (
        pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_string,
        pa.types.is_large_string, pa.types.is_decimal, pa.types.is_date, pa.types.is_timestamp,
        pa.types.is_time, pa.types.is_null,
    ))


# -- helpers ---------------------------------------------------------------------------


def _parse(sql: str) -> list:
    try:
        return duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {_clean(exc)}") from exc


def _check_explained(statement: str) -> None:
    match = _EXPLAIN_PREFIX.match(statement)
    inner = _parse(statement[match.end():]) if match else []
    if len(inner) != 1 or inner[0].type.name not in _READ_ONLY:
        kind = inner[0].type.name if len(inner) == 1 else "statement it wraps"
        raise QueryError(
            f"Refused EXPLAIN of a {kind}: `bonmf-pipe sql` is read-only, and EXPLAIN ANALYZE runs what it "
            "explains. EXPLAIN (ANALYZE) a SELECT instead."
        )


def _refusal(kind: str) -> str:
    return (
        f"Refused a {kind} statement: `bonmf-pipe sql` is read-only. Use SELECT (or DESCRIBE, SHOW, "
        "SUMMARIZE, EXPLAIN); to export a result use --format csv|json|parquet --output FILE (outside the store)."
    )


def _explain_error(exc: duckdb.Error, views: dict[str, str]) -> str:
    message = f"SQL error: {_clean(exc)}"
    if isinstance(exc, duckdb.PermissionException):
        return (
            f"{message}\n`bonmf-pipe sql` reads only the store's own files through its views; files outside "
            "the store, URLs, extensions and settings are off limits. Query another file with DuckDB itself."
        )
    names = ", ".join(sorted(views)) or "none (run `bonmf-pipe ingest` first)"
    return f"{message}\nViews in this store: {names}"


def _dir_prefix(path: Path) -> str:
    return str(path).rstrip("/") + "/"


def _clean(exc: Exception) -> str:
    return str(exc).strip().replace("\n", " ")
