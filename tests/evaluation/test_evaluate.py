"""evaluate_run on a small synthetic store: files, ranges, cold subsets, both protocols
checked against a brute-force re-computation, and train items kept out of the catalogue."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from bonmf_pipe.errors import ConfigError, StoreError
from bonmf_pipe.evaluation import EvalSettings, evaluate_run, resolve_run_id
from bonmf_pipe.evaluation.evaluate import EVAL_SCHEMA
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.trainer import read_run_config, run_dir, split_dataset


def _split_rows(store, run_id):
    split = split_dataset(store, read_run_config(store, run_id)["split_id"]).to_table()
    return split.to_pylist()


def _user_metrics(ranked_relevance: list[bool], n_relevant: int, k: int) -> tuple[float, float, float]:
    """Precision, recall, NDCG@k of one ranked list, written out plainly."""
    shown = ranked_relevance[:k]
    hits = sum(shown)
    dcg = sum(1 / math.log2(j + 2) for j, rel in enumerate(shown) if rel)
    idcg = sum(1 / math.log2(j + 2) for j in range(min(k, n_relevant)))
    return hits / len(shown), hits / n_relevant, dcg / idcg


def test_writes_parquet_and_json(trained):
    store, run_id = trained
    report = evaluate_run(store, run_id)
    table = pq.read_table(run_dir(store, run_id) / "evaluation.parquet")
    assert table.schema.remove_metadata().equals(EVAL_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    assert {(r["protocol"], r["subset"]) for r in rows} == {
        ("rating", "all"), ("rating", "cold"), ("rating", "unseen"), ("rated_items", "all"),
        ("full_catalogue", "all"), ("full_catalogue", "cold"), ("full_catalogue", "unseen"),
    }
    assert {r["k"] for r in rows if r["protocol"] != "rating"} == {5, 10, 20}
    for r in rows:
        assert r["run_id"] == run_id
        if r["protocol"] == "rating":
            assert r["value"] >= 0 and r["n"] > 0
        else:
            assert 0.0 <= r["value"] <= 1.0
    # the cold store has cold and unseen test rows, and cold <= all, unseen <= cold
    n_all, n_cold, n_unseen = (report.count("rmse", "rating", s) for s in ("all", "cold", "unseen"))
    assert n_all > n_cold >= n_unseen > 0
    assert report.value("rmse") == pytest.approx(math.sqrt(report.value("mse")))
    # the trainer's own test RMSE over the same predictions agrees
    assert report.value("rmse") == pytest.approx(read_run_config(store, run_id)["test"]["rmse"], rel=1e-5)
    saved = json.loads((run_dir(store, run_id) / "evaluation.json").read_text())
    assert saved["settings"]["ks"] == [5, 10, 20]
    assert len(saved["metrics"]) == len(rows)


def test_rating_and_rated_items_match_brute_force(trained):
    store, run_id = trained
    report = evaluate_run(store, run_id, EvalSettings(ks=(3,), full_catalogue=False))
    preds = pq.read_table(run_dir(store, run_id) / "predictions.parquet").to_pylist()
    train_n: dict[int, int] = {}
    for r in _split_rows(store, run_id):
        if r["part"] == "train":
            train_n[r["item_id"]] = train_n.get(r["item_id"], 0) + 1
    cold = [p for p in preds if train_n.get(p["item_id"], 0) < 5]
    assert report.count("mse", "rating", "cold") == len(cold)
    assert report.value("mae", "rating", "cold") == pytest.approx(
        sum(abs(p["rating"] - p["prediction"]) for p in cold) / len(cold), rel=1e-6
    )
    by_user: dict[int, list[dict]] = {}
    for p in preds:
        by_user.setdefault(p["user_id"], []).append(p)
    per_user = []
    for rows in by_user.values():
        rows.sort(key=lambda p: (-p["prediction"], p["item_id"]))
        relevant = [p["rating"] >= 4.0 for p in rows]
        if any(relevant):
            per_user.append(_user_metrics(relevant, sum(relevant), 3))
    assert report.count("precision", "rated_items", "all", 3) == len(per_user)
    for j, metric in enumerate(("precision", "recall", "ndcg")):
        expected = sum(u[j] for u in per_user) / len(per_user)
        assert report.value(metric, "rated_items", "all", 3) == pytest.approx(expected, rel=1e-9)
    assert math.isnan(report.value("ndcg", "full_catalogue", "all", 3))  # full_catalogue=False


def test_full_catalogue_matches_brute_force(trained):
    from bonmf_pipe.trainer import load_scorer

    store, run_id = trained
    report = evaluate_run(store, run_id, EvalSettings(ks=(10,), score_budget=500))  # several user batches
    scorer = load_scorer(store, run_id)
    seen: dict[int, set] = {}
    relevant: dict[int, set] = {}
    for r in _split_rows(store, run_id):
        if r["part"] in ("train", "valid"):
            seen.setdefault(r["user_id"], set()).add(r["item_id"])
        elif r["rating"] >= 4.0:
            relevant.setdefault(r["user_id"], set()).add(r["item_id"])
    users = sorted(u for u in relevant if u in set(scorer.user_ids.tolist()))
    scores = scorer.score_items(np.array(users))
    per_user = []
    for row, u in enumerate(users):
        ranked = sorted(
            (i for i in range(len(scorer.item_ids)) if int(scorer.item_ids[i]) not in seen.get(u, set())),
            key=lambda i: (-float(scores[row, i]), int(scorer.item_ids[i])),
        )
        top = [int(scorer.item_ids[i]) for i in ranked[:10]]
        assert not set(top) & seen.get(u, set())
        per_user.append(_user_metrics([i in relevant[u] for i in top], len(relevant[u]), 10))
    assert report.count("recall", "full_catalogue", "all", 10) == len(users)
    for j, metric in enumerate(("precision", "recall", "ndcg")):
        expected = sum(v[j] for v in per_user) / len(per_user)
        assert report.value(metric, "full_catalogue", "all", 10) == pytest.approx(expected, rel=1e-6)


class _TrainFirstScorer:
    """Scores 10 for every item the user rated in train/valid, 5 for relevant test items, 0 else:
    only an evaluation that leaves train items out ranks the relevant ones first."""

    def __init__(self, real, seen, relevant):
        self.user_ids, self.item_ids = real.user_ids, real.item_ids
        self.seen, self.relevant = seen, relevant

    def score_items(self, user_ids):
        out = np.zeros((len(user_ids), len(self.item_ids)), np.float32)
        for row, u in enumerate(user_ids):
            out[row, np.isin(self.item_ids, list(self.relevant.get(int(u), ())))] = 5.0
            out[row, np.isin(self.item_ids, list(self.seen.get(int(u), ())))] = 10.0
        return out


def test_full_catalogue_excludes_train_items(trained, monkeypatch):
    from bonmf_pipe.evaluation import evaluate
    from bonmf_pipe.trainer import load_scorer

    store, run_id = trained
    real = load_scorer(store, run_id)
    seen: dict[int, set] = {}
    relevant: dict[int, set] = {}
    for r in _split_rows(store, run_id):
        target = seen if r["part"] in ("train", "valid") else relevant if r["rating"] >= 4.0 else None
        if target is not None:
            target.setdefault(r["user_id"], set()).add(r["item_id"])
    monkeypatch.setattr(evaluate, "load_scorer", lambda *_a, **_k: _TrainFirstScorer(real, seen, relevant))
    report = evaluate_run(store, run_id, EvalSettings(ks=(20,)))
    assert report.value("ndcg", "full_catalogue", "all", 20) == pytest.approx(1.0)
    assert report.value("recall", "full_catalogue", "all", 20) == pytest.approx(1.0)


def test_max_users_samples(trained):
    store, run_id = trained
    report = evaluate_run(store, run_id, EvalSettings(ks=(5,), max_users=7))
    assert report.count("ndcg", "full_catalogue", "all", 5) == 7
    assert any("sample of 7 users" in n for n in report.notes)


def test_evaluations_view_and_run_resolution(trained):
    store, run_id = trained
    evaluate_run(store, run_id)
    n = query(store, f"SELECT count(*) AS n FROM evaluations WHERE run_id = '{run_id}' AND metric = 'rmse'")
    assert n.column("n").to_pylist() == [3]
    assert resolve_run_id(store, "latest") == run_id
    assert resolve_run_id(store, run_id[:18]) == run_id
    with pytest.raises(StoreError, match="is not a run"):
        evaluate_run(store, "no-such-run")


@pytest.mark.parametrize(
    "bad",
    [
        {"ks": (0,)}, {"ks": ()}, {"ks": (2.5,)}, {"max_users": 0}, {"threshold": float("nan")},
        {"threshold": float("inf")}, {"threshold": "4; DROP TABLE x"}, {"chunk_rows": 0},
        {"memory_limit_mb": 1}, {"score_budget": 0}, {"cold_max_train_ratings": 0}, {"sample_seed": -1},
    ],
)
def test_settings_are_checked(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        EvalSettings(**bad)


def test_nan_threshold_on_the_command_line_is_a_config_error(trained):
    from typer.testing import CliRunner

    from bonmf_pipe.cli import app

    store, run_id = trained
    result = CliRunner().invoke(app, ["evaluate", run_id, "--threshold", "nan", "--store", str(store.root)])
    assert result.exit_code == 1, result.output
    assert "threshold must be a finite rating" in result.output
    assert "Binder" not in result.output


def test_chunk_size_bounds_the_rows_held_and_not_the_metrics(trained, monkeypatch):
    """Evaluation holds at most ``chunk_rows`` rows at once (whole users: a chunk over the
    bound is one user alone), whatever the number of test rows; the metrics do not change."""
    from bonmf_pipe.evaluation import streams

    store, run_id = trained
    real = streams.grouped_by_user
    streamed: list[list[list[int]]] = []  # per stream, the user ids of each chunk

    def recording(reader, max_rows):
        streamed.append([])
        for chunk in real(reader, max_rows):
            streamed[-1].append(chunk.column("user_id").to_pylist())
            yield chunk

    monkeypatch.setattr(streams, "grouped_by_user", recording)
    small = evaluate_run(store, run_id, EvalSettings(chunk_rows=7, max_users=None))
    small_streams, streamed[:] = list(streamed), []
    large = evaluate_run(store, run_id, EvalSettings(chunk_rows=10_000, max_users=None))
    assert len(small_streams) == len(streamed) == 2  # test predictions; known rows (full catalogue)
    n_test = small.count("rmse")
    predictions = small_streams[0]
    assert sum(map(len, predictions)) == n_test and len(predictions) >= n_test // 7
    assert all(len(big) * 10 < len(few) for big, few in zip(streamed, small_streams))
    for chunks in small_streams:
        users = [u for chunk in chunks for u in chunk]
        assert users == sorted(users)
        for chunk in chunks:
            assert len(chunk) <= 7 or len(set(chunk)) == 1
        firsts_lasts = [(chunk[0], chunk[-1]) for chunk in chunks]
        assert all(a[1] < b[0] for a, b in zip(firsts_lasts, firsts_lasts[1:]))  # no user split
    rows_small, rows_large = small.table.to_pylist(), large.table.to_pylist()
    assert len(rows_small) == len(rows_large) == 3 * 3 + 9 + 3 * 9
    for a, b in zip(rows_small, rows_large):
        assert (a["protocol"], a["subset"], a["metric"], a["k"], a["n"]) == (b["protocol"], b["subset"], b["metric"], b["k"], b["n"])
        assert a["value"] == pytest.approx(b["value"], rel=1e-12, abs=1e-15, nan_ok=True)
