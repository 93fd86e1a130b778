"""The bonmf-pipe command line: parses options and calls one library function per command."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from bonmf_pipe import __version__
from bonmf_pipe.console import RichProgress, console, err_console
from bonmf_pipe.errors import BonmfError

app = typer.Typer(
    name="bonmf-pipe",
    help="Multimodal BoNMF recommenders on MovieLens: ingest, encode text and posters once "
    "into a Parquet feature store, train, evaluate, and query it all with SQL.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

StoreOpt = Annotated[
    Path,
    typer.Option("--store", envvar="BONMF_STORE", help="Store folder (env BONMF_STORE).", show_default=True),
]
DEFAULT_STORE = Path("bonmf-store")


@contextlib.contextmanager
def library_call() -> Iterator[None]:
    """Print a BonmfError in red and exit 1; anything unexpected exits 3 with a hint."""
    try:
        yield
    except BonmfError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]: the store keeps what was committed; re-run to resume.")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception:
        err_console.print_exception(max_frames=8)
        err_console.print(
            "[red]internal error[/red]: this is a bug in bonmf-pipe. Please report it with the "
            "traceback above and the command you ran."
        )
        raise typer.Exit(3) from None


def version_callback(value: bool) -> None:
    if value:
        console.print(f"bonmf-pipe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


# --- store: info, sql, verify ---------------------------------------------------------


@app.command()
def info(store: StoreOpt = DEFAULT_STORE) -> None:
    """Show the store's tables, row counts, shards, bytes and schema version."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.info import store_info
    from bonmf_pipe.render import render_info

    with library_call():
        render_info(store_info(Store.open(store)))


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A read-only SQL query over the store's views.")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="table, csv, json or parquet.")
    ] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result to this file.")] = None,
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Run DuckDB SQL over the store, read-only. Views: items, users, ratings, rejects, ..."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.sql import query as run_query
    from bonmf_pipe.render import render_query_result

    with library_call():
        result = run_query(Store.open(store), query)
        render_query_result(result, format, output)


@app.command()
def verify(store: StoreOpt = DEFAULT_STORE) -> None:
    """Check every shard against its manifest (rows, checksums, schema, encoder key)."""
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.verify import verify_store
    from bonmf_pipe.render import render_verify

    with library_call():
        report = verify_store(Store.open(store))
        render_verify(report)
        if not report.ok:
            raise typer.Exit(1)


# --- pipeline: sample, fetch, ingest --------------------------------------------------


# --- pipeline: encode, similar ----------------------------------------------------------


# --- trainer and evaluation: train, evaluate, ablate, recommend, demo -----------------


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
