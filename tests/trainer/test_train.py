"""train: runs on synthetic stores, reproducibility, resume after a kill, unknown ids, Scorer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors import safe_open

from bonmf_pipe.errors import ConfigError, StoreError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.trainer import TrainSettings, list_runs, load_scorer, read_run_config, run_dir, split_dataset, train

FAST = {"epochs": 4, "batch_size": 128, "lr": 0.01, "l2": 0.01}  # a tiny synthetic store learns fast


def _test_rmse(store, result) -> float:
    p = pq.read_table(result.run_dir / "predictions.parquet")
    err = p.column("prediction").to_numpy() - p.column("rating").to_numpy()
    return float(np.sqrt(np.mean(err**2)))


def test_bonmf_run_writes_every_file_and_learns(small_store):
    result = train(small_store, TrainSettings(**FAST))
    folder = result.run_dir
    assert folder == run_dir(small_store, result.run_id) == run_dir(small_store, result.run_id[:22])
    for name in ("config.json", "epochs.parquet", "checkpoint.safetensors", "predictions.parquet", "summary.parquet"):
        assert (folder / name).exists(), name
    config = read_run_config(small_store, result.run_id)
    assert config["status"] == "done" and config["mode"] == "resident"
    assert config["effective"]["features"] == ["text", "image"]
    assert config["features"]["text"] == {"key": "synthetic-text-abc123", "dim": 16, "items_with_vector": 80}
    assert config["features"]["image"]["items_with_vector"] == 40
    assert config["environment"]["torch"] and "numpy" in config["environment"]
    assert config["split_rows"]["test"] == result.test_rows
    epochs = pq.read_table(folder / "epochs.parquet").to_pylist()
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    # predictions: exactly the split's test rows, and the reported RMSE is theirs
    import pyarrow.compute as pc

    test = split_dataset(small_store, config["split_id"]).to_table(filter=pc.field("part") == "test")
    assert result.test_rows == test.num_rows == pq.read_metadata(folder / "predictions.parquet").num_rows
    assert result.test_rmse == pytest.approx(_test_rmse(small_store, result), rel=1e-5)
    std = float(np.std(test.column("rating").to_numpy()))
    assert result.test_rmse < 0.8 * std  # far better than predicting the mean
    assert [r["run_id"] for r in list_runs(small_store)] == [result.run_id]


def test_checkpoint_is_safetensors_and_the_scorer_reproduces_the_predictions(small_store):
    result = train(small_store, TrainSettings(**FAST))
    path = result.run_dir / "checkpoint.safetensors"
    assert path.read_bytes()[8:9] == b"{"  # safetensors: 8-byte header length, then a JSON header
    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
        meta = json.loads(fh.metadata()["bonmf"])
    assert {"maps/user_ids", "maps/item_ids", "model/user.weight", "side/text/mean"} <= keys
    assert any(k.startswith("optim/") for k in keys) and meta["epoch"] == 4
    scorer = load_scorer(small_store, result.run_id)
    p = pq.read_table(result.run_dir / "predictions.parquet")
    pred = scorer.predict(p.column("user_id").to_numpy(), p.column("item_id").to_numpy())
    assert pred.dtype == np.float32
    np.testing.assert_allclose(pred, p.column("prediction").to_numpy(), atol=1e-4)
    grid = scorer.score_items(scorer.user_ids[:3])
    assert grid.shape == (3, len(scorer.item_ids)) == (3, 80)
    cols = np.searchsorted(scorer.item_ids, [10, 20])
    np.testing.assert_allclose(grid[0, cols], scorer.predict(np.repeat(scorer.user_ids[0], 2), np.array([10, 20])), atol=1e-5)


def test_same_seed_same_metrics_and_another_seed_differs(small_store):
    a = train(small_store, TrainSettings(**FAST))
    b = train(small_store, TrainSettings(**FAST))
    c = train(small_store, TrainSettings(seed=5, **FAST))
    assert [e["train_loss"] for e in a.epochs] == [e["train_loss"] for e in b.epochs]
    assert a.test_rmse == b.test_rmse
    assert c.test_rmse != a.test_rmse


@pytest.mark.parametrize("model", ["nmf", "svd"])
def test_baselines_use_no_side_information(small_store, model):
    result = train(small_store, TrainSettings(model=model, **FAST))
    config = read_run_config(small_store, result.run_id)
    assert config["effective"]["features"] == [] and config["features"] == {}
    assert np.isfinite(result.test_rmse)


def test_paper_mode_records_the_paper_network(small_store):
    result = train(small_store, TrainSettings(paper=True, epochs=2, batch_size=128))
    eff = read_run_config(small_store, result.run_id)["effective"]
    assert (eff["projection_dim"], eff["biases"], eff["dropout"], eff["l2"], eff["early_stopping_patience"]) == (
        0, False, 0.0, 0.0, 0,
    )
    assert len(result.epochs) == 2


def test_unknown_users_and_items_are_predicted_through_side_information(tmp_path):
    store = build_cold_store(tmp_path)
    result = train(store, TrainSettings(epochs=12, batch_size=128, lr=0.01, l2=0.01, unknown_prob=0.1, early_stopping_patience=0))
    scorer = load_scorer(store, result.run_id)
    cold = np.array([810, 820, 830, 840, 850, 860, 870, 880, 890, 900])  # items without any rating
    assert not np.isin(cold, pq.read_table(result.run_dir / "predictions.parquet").column("item_id").to_numpy()).any()
    truth = np.load(tmp_path / "quality.npy")  # each item's mean appeal (taste[:, 0])
    unknown_user = np.full(len(cold), 999_999)
    pred = scorer.predict(unknown_user, cold)
    assert np.isfinite(pred).all()
    # the ID embeddings are all the "unknown" one, so only the side vectors can order these items
    assert np.corrcoef(pred, truth[cold // 10 - 1])[0, 1] > 0.6
    # an item id that is not even in the items table still gets a prediction
    assert np.isfinite(scorer.predict(np.array([1]), np.array([123_456]))).all()


def build_cold_store(tmp_path: Path) -> Store:
    """80 rated items + 10 items (ids 810..900) in the items table with vectors but no ratings."""
    from .conftest import build_store

    store = build_store(tmp_path / "store", n_items=90, per_user=25)
    ratings = store.read_table("ratings")
    keep = ratings.filter(ratings.column("item_id").to_numpy() <= 800)
    from bonmf_pipe.featurestore.schema import RATINGS

    with store.writer("ratings", RATINGS, store.manifest("ratings").settings) as w:
        w.write(keep)
        w.commit()
    rng = np.random.default_rng(0)
    taste = rng.normal(size=(90, 4))  # the same draw as build_store's
    np.save(tmp_path / "quality.npy", taste[:, 0])
    return store


def test_resume_after_a_kill_at_epoch_2_ends_like_an_uninterrupted_run(small_store, tmp_path):
    settings = TrainSettings(epochs=5, batch_size=128, early_stopping_patience=0)
    full = train(small_store, settings)
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from bonmf_pipe.featurestore import Store
from bonmf_pipe.trainer import TrainSettings, train
def progress(event):
    if event.kind == "note" and event.message.startswith("epoch 2:"):
        os._exit(9)  # killed right after epoch 2's checkpoint
train(Store({str(small_store.root)!r}), TrainSettings(epochs=5, batch_size=128, early_stopping_patience=0), progress)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 9, proc.stderr
    killed = [r for r in list_runs(small_store) if r["status"] == "running"]
    assert len(killed) == 1
    assert pq.read_table(run_dir(small_store, killed[0]["run_id"]) / "epochs.parquet").num_rows == 2
    resumed = train(small_store, TrainSettings(), resume=killed[0]["run_id"])
    assert resumed.run_id == killed[0]["run_id"]
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([e["train_loss"] for e in resumed.epochs], [e["train_loss"] for e in full.epochs], rtol=1e-5)
    assert resumed.test_rmse == pytest.approx(full.test_rmse, rel=1e-5)


def test_runs_metrics_and_predictions_views(small_store):
    a = train(small_store, TrainSettings(model="svd", **FAST))
    runs = query(small_store, "SELECT run_id, model, test_rmse FROM runs").to_pylist()
    assert runs == [{"run_id": a.run_id, "model": "svd", "test_rmse": pytest.approx(a.test_rmse)}]
    metrics = query(small_store, "SELECT count(*) AS n FROM metrics WHERE run_id = ?".replace("?", f"'{a.run_id}'"))
    assert metrics.column("n")[0].as_py() == 4
    n = query(small_store, "SELECT count(*) AS n FROM predictions").column("n")[0].as_py()
    assert n == a.test_rows


def test_errors_say_what_to_fix(small_store, tmp_path):
    with pytest.raises(ConfigError, match="--model"):
        TrainSettings(model="xgboost")
    with pytest.raises(ConfigError, match="features"):
        TrainSettings(features=("audio",))
    with pytest.raises(StoreError, match="encoder key 'nope'"):
        train(small_store, TrainSettings(text_encoder="nope", **FAST))
    with pytest.raises(StoreError, match="is not a run"):
        train(small_store, TrainSettings(), resume="no-such-run")
    empty = Store.open(tmp_path / "empty", create=True)
    with pytest.raises(StoreError, match="ingest"):
        train(empty, TrainSettings(**FAST))
