"""Top-K recommendations of one user from a trained run."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.evaluation import streams
from bonmf_pipe.evaluation.evaluate import resolve_run_id
from bonmf_pipe.evaluation.metrics import topk_columns
from bonmf_pipe.featurestore import ids
from bonmf_pipe.featurestore.runs import read_run_config
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.trainer import load_scorer

RECOMMENDATIONS = pa.schema(
    [
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("year", pa.int32()),
        pa.field("score", pa.float32(), nullable=False),
    ]
)


def recommend(store: Store, run_id: str, user_id: int, k: int = 10) -> pa.Table:
    """The ``k`` items run ``run_id`` scores highest for ``user_id`` (rank, item_id, title,
    year, score; the schema metadata names the resolved run_id), leaving out every item the user rated in the run's training data (the
    split's train and valid parts). Ties go to the lower item id.

    A user without training ratings raises ConfigError: the run has no embedding for them
    (their recommendations would be everyone's, so none are made up).
    """
    if k < 1:
        raise ConfigError(f"-k must be at least 1 (got {k}).")
    run_id = resolve_run_id(store, run_id)
    scorer = load_scorer(store, run_id)
    user_ids = np.asarray(scorer.user_ids, dtype=np.int64)
    if not np.isin(int(user_id), user_ids):
        raise ConfigError(
            f"User {user_id} has no training ratings in run {run_id}, so the model has no embedding "
            f"for them. Pick one of its {user_ids.size:,} trained users (ids {user_ids.min()}..{user_ids.max()}), "
            "e.g. from `bonmf-pipe sql \"SELECT DISTINCT user_id FROM ratings LIMIT 10\"`. "
            "Or fold them in from a few of their ratings: --ratings FILE (item_id,rating rows) or --rate ITEM=STARS."
        )
    item_ids = np.asarray(scorer.item_ids, dtype=np.int64)
    scores = np.asarray(scorer.score_items(np.array([user_id], dtype=np.int64)), dtype=np.float64)[0]
    scores[np.isin(item_ids, _rated_in_training(store, read_run_config(store, run_id)["split_id"], int(user_id)))] = -np.inf
    top = topk_columns(scores[None, :], k)[0]
    top = top[np.isfinite(scores[top])]
    table = _with_titles(store, item_ids[top], scores[top])
    meta = {"run_id": run_id, "user_id": str(int(user_id))}
    if scorer.new_items:
        meta["note"] = new_items_note(scorer.new_items, run_id)
    return table.replace_schema_metadata(meta)


def new_items_note(n: int, run_id: str) -> str:
    return (f"{n:,} item(s) ingested after run {run_id} trained are scored from their current side vectors "
            "through the unknown item ID (no retraining).")


def _rated_in_training(store: Store, split_id: str, user_id: int) -> np.ndarray:
    files = streams.split_files(store, split_id)
    with streams.connection(store) as con:
        return streams.rated_in_training(con, files, user_id)


def _with_titles(store: Store, item_ids: np.ndarray, scores: np.ndarray) -> pa.Table:
    items = store.read_table("items", columns=["item_id", "title", "year"]).sort_by("item_id")
    pos, found = ids.positions(items.column("item_id").to_numpy(), item_ids)
    titles = items.column("title").take(pa.array(pos)).to_pylist()
    years = items.column("year").take(pa.array(pos)).to_pylist()
    return pa.table(
        {
            "rank": pa.array(np.arange(1, item_ids.size + 1), pa.int32()),
            "item_id": pa.array(item_ids, pa.int64()),
            "title": pa.array([t if f else None for t, f in zip(titles, found)], pa.string()),
            "year": pa.array([y if f else None for y, f in zip(years, found)], pa.int32()),
            "score": pa.array(scores, pa.float32()),
        },
        schema=RECOMMENDATIONS,
    )
