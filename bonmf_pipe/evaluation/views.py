"""SQL views over the evaluation's outputs: ``evaluations`` (every run's metric rows) and
``ablations`` (every ablation's comparison table, with its ablation_id)."""

from __future__ import annotations

from bonmf_pipe.evaluation.evaluate import EVALUATION
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.featurestore.views import register_view_provider, sql_list


def _files(folder, name: str) -> list:
    if not folder.exists():
        return []
    return sorted(p / name for p in folder.iterdir() if (p / name).exists())


@register_view_provider
def evaluation_views(store: Store) -> dict[str, str]:
    views = {}
    files = _files(store.runs_dir, EVALUATION)
    if files:
        views["evaluations"] = f"SELECT * FROM read_parquet({sql_list(files)}, union_by_name = true)"
    files = _files(store.root / "ablations", "results.parquet")  # written by pipeline/ablate.py
    if files:
        views["ablations"] = f"SELECT * FROM read_parquet({sql_list(files)}, union_by_name = true)"
    return views
