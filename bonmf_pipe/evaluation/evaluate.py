"""Evaluate a trained run: rating errors and top-K ranking under two protocols.

Writes ``runs/<run-id>/evaluation.parquet`` (one row per run_id, protocol, subset, metric,
k: value and n) and ``evaluation.json`` (the same rows plus the settings), both atomically.

Protocols (see ``metrics`` for the exact formulas):

- ``rating``: MSE, RMSE, MAE over the run's test predictions (``predictions.parquet``).
- ``rated_items``: each user's test items ranked by prediction; relevant when the true
  rating >= ``threshold``. Cheap and comparable with papers that rank rated items only.
- ``full_catalogue``: every item of the scorer's catalogue the user has not rated in the
  train or valid part, scored by the model; relevant = the user's test items rated
  >= ``threshold``. Users are scored in batches (memory bounded by the batch).

Subsets: ``all`` test rows; ``cold``, test items with fewer than ``cold_max_train_ratings``
training ratings (the train part only); ``unseen``, items with none. Rating metrics are
reported for every subset, ``rated_items`` ranking for ``all`` only (a user's one or two
cold test items make a trivial list), ``full_catalogue`` ranking for every subset: the
same top-K lists, with only the subset's items counted as relevant (can the model surface
cold items among the whole catalogue?).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from bonmf_pipe.errors import StoreError
from bonmf_pipe.evaluation import metrics as M
from bonmf_pipe.evaluation import streams
from bonmf_pipe.evaluation.settings import EvalSettings
from bonmf_pipe.featurestore import ids
from bonmf_pipe.featurestore.io import atomic_write_json
from bonmf_pipe.featurestore.runs import list_runs, read_run_config, run_dir
from bonmf_pipe.featurestore.store import Store, settings_dict, write_parquet_atomic
from bonmf_pipe.featurestore.views import EVALUATION
from bonmf_pipe.progress import ProgressCallback, Reporter
from bonmf_pipe.runtime import trim_heap
from bonmf_pipe.trainer import load_scorer

EVALUATION_JSON = "evaluation.json"
SUBSETS = ("all", "cold", "unseen")
EVAL_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("protocol", pa.string(), nullable=False),  # rating | rated_items | full_catalogue
        pa.field("subset", pa.string(), nullable=False),  # all | cold | unseen
        pa.field("metric", pa.string(), nullable=False),  # mse rmse mae | precision recall ndcg
        pa.field("k", pa.int32()),  # null for rating metrics
        pa.field("value", pa.float64()),  # NaN when no row/user qualifies
        pa.field("n", pa.int64(), nullable=False),  # test rows (rating) or users averaged (ranking)
    ]
)


@dataclass
class EvalReport:
    """The metrics of one run (``table`` has the EVAL_SCHEMA rows) and where they were written."""

    run_id: str
    settings: EvalSettings
    table: pa.Table
    path: Path
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def value(self, metric: str, protocol: str = "rating", subset: str = "all", k: int | None = None) -> float:
        """One metric's value; NaN when it was not computed."""
        for row in self.table.to_pylist():
            if (row["metric"], row["protocol"], row["subset"], row["k"]) == (metric, protocol, subset, k):
                return row["value"]
        return float("nan")

    def count(self, metric: str, protocol: str = "rating", subset: str = "all", k: int | None = None) -> int:
        for row in self.table.to_pylist():
            if (row["metric"], row["protocol"], row["subset"], row["k"]) == (metric, protocol, subset, k):
                return row["n"]
        return 0


def evaluate_run(
    store: Store, run_id: str, settings: EvalSettings | None = None, progress: ProgressCallback | None = None
) -> EvalReport:
    """Compute every metric of run ``run_id`` (an id, a unique prefix or ``latest``) and write them.

    Memory is bounded by ``settings.chunk_rows``, ``score_budget`` and ``memory_limit_mb`` (and the
    catalogue), not by the number of test ratings or users."""
    s = settings or EvalSettings()
    report = Reporter(progress)
    started = time.perf_counter()
    run_id = resolve_run_id(store, run_id)
    folder = run_dir(store, run_id)
    config = read_run_config(store, run_id)
    split_id = config.get("split_id")
    if not split_id:
        raise StoreError(f"{folder / 'config.json'} names no split_id: the run is incomplete. Train it again.")
    predictions = folder / "predictions.parquet"
    if not predictions.exists():
        raise StoreError(f"{predictions} is missing: the run stopped before testing. Train it again.")
    rows: list[dict] = []
    notes: list[str] = []
    files = streams.split_files(store, split_id)
    with streams.connection(store, s.memory_limit_mb) as con:
        count_ids, counts = streams.train_counts(con, files)
        con.register("counts", pa.table({"item_id": count_ids, "n": counts}))
        report.begin(f"evaluate {run_id}: test predictions", unit="users")
        rows += _rated_items(con, predictions, s, report, f"evaluate {run_id}: test predictions")
        report.end(f"evaluate {run_id}: test predictions")
        if s.full_catalogue:
            rows += _full_catalogue(store, con, files, run_id, (count_ids, counts), s, report, notes)
    table = pa.Table.from_pylist([{"run_id": run_id, **r} for r in rows], schema=EVAL_SCHEMA)
    write_parquet_atomic(folder / EVALUATION, table)
    seconds = time.perf_counter() - started
    atomic_write_json(
        folder / EVALUATION_JSON,
        {
            "run_id": run_id,
            "split_id": split_id,
            "settings": settings_dict(s),
            "seconds": seconds,
            "notes": notes,
            "metrics": table.to_pylist(),
        },
    )
    for note in notes:
        report.note(note)
    return EvalReport(run_id, s, table, folder / EVALUATION, seconds, notes)


def resolve_run_id(store: Store, run: str) -> str:
    """A full run id from an id, a unique prefix, or ``latest`` (the newest run)."""
    if run == "latest":
        runs = list_runs(store)
        if not runs:
            raise StoreError(f"The store at {store.root} has no runs yet. Train one with `bonmf-pipe train`.")
        return str(runs[-1]["run_id"])
    return run_dir(store, run).name


# -- rating metrics and the rated-items protocol -------------------------------------------
def _rated_items(con, predictions: Path, s: EvalSettings, report: Reporter, task: str) -> list[dict]:
    errors = {subset: M.ErrorSums() for subset in SUBSETS}
    ranking = M.RankingSums(tuple(s.ks))
    reader = streams.predictions_stream(con, predictions, s.chunk_rows)
    for chunk in streams.grouped_by_user(reader, s.chunk_rows):
        r = chunk.column("rating").to_numpy()
        p = chunk.column("prediction").to_numpy()
        n_train = chunk.column("n_train").to_numpy()
        for subset, mask in _subset_masks(n_train, s.cold_max_train_ratings).items():
            errors[subset].add(r[mask], p[mask])
        users = chunk.column("user_id").to_numpy()
        ranking.add(*M.topk_hits_grouped(users, p, r >= s.threshold, max(s.ks)))
        report.advance(task, int(np.unique(users).size))
    rows = []
    for subset, acc in errors.items():
        for metric, value in acc.values().items():
            rows.append(_row("rating", subset, metric, None, value, acc.n))
    rows += _ranking_rows("rated_items", "all", ranking)
    return rows


def _subset_masks(n_train: np.ndarray, cold_max: int) -> dict[str, np.ndarray]:
    return {"all": np.ones(n_train.shape, bool), "cold": n_train < cold_max, "unseen": n_train == 0}


def _row(protocol: str, subset: str, metric: str, k: int | None, value: float, n: int) -> dict:
    return {"protocol": protocol, "subset": subset, "metric": metric, "k": k, "value": float(value), "n": int(n)}


def _ranking_rows(protocol: str, subset: str, acc: M.RankingSums) -> list[dict]:
    return [_row(protocol, subset, m, k, v, acc.users) for (m, k), v in acc.values().items()]


# -- the full-catalogue protocol -------------------------------------------------------------
# Score batches between two ``trim_heap`` calls (one costs about what scoring a batch does).
TRIM_EVERY = 8


def _full_catalogue(store, con, files, run_id, train_counts, s: EvalSettings, report: Reporter, notes) -> list[dict]:
    scorer = load_scorer(store, run_id)
    new_items = getattr(scorer, "new_items", 0)  # test doubles of the scorer may not say
    if new_items:
        notes.append(f"full catalogue: {new_items:,} item(s) ingested after run {run_id} trained are ranked "
                     "too, scored from their current side vectors through the unknown item ID (no retraining).")
    item_ids = np.asarray(scorer.item_ids, dtype=np.int64)  # sorted: the scorer's id map
    n_train = ids.lookup_values(*train_counts, item_ids, default=0)
    subset_cols = _subset_masks(n_train, s.cold_max_train_ratings)
    chosen = _choose_users(con, files, np.asarray(scorer.user_ids, dtype=np.int64), s, notes)
    con.register("chosen", pa.table({"user_id": pa.array(chosen, pa.int64())}))
    accs = {subset: M.RankingSums(tuple(s.ks)) for subset in SUBSETS}
    per_batch = max(1, s.score_budget // max(1, item_ids.size))
    task = f"evaluate {run_id}: full catalogue"
    report.begin(task, total=int(chosen.size), unit="users")
    reader = streams.known_rows_stream(con, files, s.threshold, s.chunk_rows)
    batches = 0
    for group in streams.grouped_by_user(reader, s.chunk_rows):
        for chunk in streams.user_chunks(group, per_batch):
            batches += 1
            if batches % TRIM_EVERY == 0:  # each batch frees a few MB of scores and masks
                trim_heap()
            users, seen, relevant = _user_matrices(chunk, item_ids)
            scores = np.asarray(scorer.score_items(users), dtype=np.float32)
            scores[seen | ~np.isfinite(scores)] = -np.inf
            top = M.topk_columns(scores, max(s.ks))
            n_candidates = np.isfinite(scores).sum(axis=1)
            for subset, cols in subset_cols.items():
                rel = relevant & cols
                hits = np.take_along_axis(rel, top, axis=1)
                accs[subset].add(hits, n_candidates, rel.sum(axis=1))
            report.advance(task, int(users.size))
    report.end(task)
    return [r for subset, acc in accs.items() for r in _ranking_rows("full_catalogue", subset, acc)]


def _choose_users(con, files, scorer_users: np.ndarray, s: EvalSettings, notes: list[str]) -> np.ndarray:
    """Users with a relevant test item whom the model knows, sampled down to ``max_users``."""
    eligible = streams.users_with_relevant_test(con, files, s.threshold)
    known = np.intersect1d(eligible, scorer_users)
    if known.size < eligible.size:
        notes.append(
            f"full catalogue: {eligible.size - known.size} users with relevant test items have no "
            "training ratings, so the model cannot rank for them; they are left out."
        )
    if s.max_users is not None and known.size > s.max_users:
        rng = np.random.default_rng(s.sample_seed)
        known = np.sort(rng.choice(known, size=s.max_users, replace=False))
        notes.append(f"full catalogue: a random sample of {s.max_users} users (seed {s.sample_seed}).")
    return known


def _user_matrices(chunk: pa.Table, item_ids: np.ndarray):
    """The chunk's users and dense [users, items] masks of seen (train/valid) and relevant items
    (``item_ids`` sorted: the columns)."""
    u = chunk.column("user_id").to_numpy()
    users, row = np.unique(u, return_inverse=True)
    col, in_catalogue = ids.positions(item_ids, chunk.column("item_id").to_numpy())
    # items the model cannot score are left out
    seen_flag = chunk.column("seen").to_numpy(zero_copy_only=False).astype(bool)
    seen = np.zeros((users.size, item_ids.size), dtype=bool)
    relevant = np.zeros_like(seen)
    ok = in_catalogue & seen_flag
    seen[row[ok], col[ok]] = True
    ok = in_catalogue & ~seen_flag
    relevant[row[ok], col[ok]] = True
    return users, seen, relevant
