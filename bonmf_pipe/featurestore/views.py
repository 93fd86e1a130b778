"""Named DuckDB views over the store, found automatically.

Each provider maps a store to ``{view_name: SELECT ...}``. Stages that add data to the
store register a provider here (``register_view_provider``) so their tables appear in
``bonmf-pipe sql`` without anyone editing this file's callers.
"""

from __future__ import annotations

from collections.abc import Callable

from bonmf_pipe.featurestore.store import Store

ViewProvider = Callable[[Store], dict[str, str]]
_PROVIDERS: list[ViewProvider] = []


def register_view_provider(provider: ViewProvider) -> ViewProvider:
    if provider not in _PROVIDERS:
        _PROVIDERS.append(provider)
    return provider


def sql_list(paths) -> str:
    """A DuckDB list literal of file paths."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


@register_view_provider
def table_views(store: Store) -> dict[str, str]:
    """One view per committed table under ``tables/`` (items, users, ratings, rejects, ...)."""
    views = {}
    for name, manifest in store.tables().items():
        files = manifest.paths(store.table_dir(name))
        if files:
            views[name] = f"SELECT * FROM read_parquet({sql_list(files)})"
    return views


def all_views(store: Store) -> dict[str, str]:
    _load_stage_providers()
    views: dict[str, str] = {}
    for provider in _PROVIDERS:
        views.update(provider(store))
    return views


def _load_stage_providers() -> None:
    """Import the stages that register view providers (features, runs)."""
    import importlib

    for module in ("bonmf_pipe.pipeline.encode.views", "bonmf_pipe.trainer.views", "bonmf_pipe.evaluation.views"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not (exc.name and module.startswith(exc.name)):
                raise
