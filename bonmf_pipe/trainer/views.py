"""SQL views over the runs: ``runs`` (one row per run), ``metrics`` (per-epoch rows) and
``predictions`` (test predictions), each with a run_id column."""

from __future__ import annotations

from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.featurestore.views import register_view_provider, sql_list
from bonmf_pipe.trainer.runs import EPOCHS, PREDICTIONS, SUMMARY


def _files(store: Store, name: str) -> list:
    if not store.runs_dir.exists():
        return []
    return sorted(p / name for p in store.runs_dir.iterdir() if (p / name).exists())


@register_view_provider
def run_views(store: Store) -> dict[str, str]:
    views = {}
    for view, name in (("runs", SUMMARY), ("metrics", EPOCHS), ("predictions", PREDICTIONS)):
        files = _files(store, name)
        if files:
            views[view] = f"SELECT * FROM read_parquet({sql_list(files)}, union_by_name = true)"
    return views
