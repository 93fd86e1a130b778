"""train: runs on synthetic stores, bit-identical reruns, resume after a kill, unknown ids,
failures recorded in the runs view, the on_epoch hook, Scorer."""

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
from safetensors.torch import load_file

from bonmf_pipe.errors import ConfigError, StoreError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.trainer import (
    TrainSettings,
    list_runs,
    load_scorer,
    lr_at,
    read_run_config,
    run_dir,
    split_dataset,
    train,
)

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


def test_same_seed_gives_bit_identical_runs_and_another_seed_differs(small_store):
    a = train(small_store, TrainSettings(**FAST))
    b = train(small_store, TrainSettings(**FAST))
    c = train(small_store, TrainSettings(seed=5, **FAST))
    # metrics: exactly equal, epoch by epoch and on the test rows
    def numbers(r):
        return [(e["epoch"], e["train_loss"], e["valid_rmse"], e["lr"]) for e in r.epochs]

    assert numbers(a) == numbers(b)
    assert (a.test_mse, a.test_rmse, a.test_mae) == (b.test_mse, b.test_rmse, b.test_mae)
    # predictions: the same bytes of every value
    pa_, pb = (pq.read_table(r.run_dir / "predictions.parquet") for r in (a, b))
    for col in ("user_id", "item_id", "rating", "prediction"):
        assert pa_.column(col).to_numpy().tobytes() == pb.column(col).to_numpy().tobytes(), col
    # checkpoints: every tensor (weights, best weights, optimiser state, id maps) bit for bit
    # (the file bytes differ only by the run id, timestamps and timings in its metadata)
    ta, tb = (load_file(str(r.run_dir / "checkpoint.safetensors")) for r in (a, b))
    assert sorted(ta) == sorted(tb) and any(k.startswith("model/") for k in ta)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape, k
        assert ta[k].numpy().tobytes() == tb[k].numpy().tobytes(), k
    # what made it reproducible is recorded
    config = read_run_config(small_store, a.run_id)
    assert config["threads"] == config["effective"]["threads"] >= 1
    assert config["runtime"]["deterministic_algorithms"] is True
    assert {"torch", "numpy", "pyarrow", "duckdb", "polars"} <= set(config["environment"])
    assert config["environment"]["torch"] and config["environment"]["numpy"]
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


def test_paper_mode_trains_the_epochs_asked_for(small_store):
    assert TrainSettings().effective().epochs == 30
    assert TrainSettings(paper=True).effective().epochs == 10  # the paper's default
    assert TrainSettings(paper=True, epochs=30).effective().epochs == 30  # was silently 10
    assert TrainSettings(paper=True, epochs=10).effective().epochs == 10
    result = train(small_store, TrainSettings(paper=True, epochs=12, batch_size=256))
    assert [e["epoch"] for e in result.epochs] == list(range(1, 13))
    config = read_run_config(small_store, result.run_id)
    assert config["settings"]["epochs"] == 12 and config["effective"]["epochs"] == 12 and config["epochs_run"] == 12


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
    # the killed run is in the runs view (its summary row is written before the first epoch)
    rows = query(small_store, "SELECT run_id, status FROM runs ORDER BY created_at").to_pylist()
    assert {"run_id": killed[0]["run_id"], "status": "running"} in rows and len(rows) == 2
    assert pq.read_table(run_dir(small_store, killed[0]["run_id"]) / "epochs.parquet").num_rows == 2
    resumed = train(small_store, TrainSettings(), resume=killed[0]["run_id"])
    assert resumed.run_id == killed[0]["run_id"]
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([e["train_loss"] for e in resumed.epochs], [e["train_loss"] for e in full.epochs], rtol=1e-5)
    assert resumed.test_rmse == pytest.approx(full.test_rmse, rel=1e-5)
    assert read_run_config(small_store, resumed.run_id)["status"] == "done"


def test_resume_refuses_options_that_contradict_the_run(small_store):
    run = train(small_store, TrainSettings(model="nmf", **FAST))
    with pytest.raises(ConfigError) as err:
        train(small_store, TrainSettings(epochs=8, model="svd", seed=99), resume=run.run_id)
    message = str(err.value)
    assert "model 'svd'" in message and "seed 99" in message and "epochs 8" in message and "--resume" in message
    # the fields the caller names as given are checked even when they equal a default
    with pytest.raises(ConfigError, match="seed 42 .the run has 7"):
        train(small_store, TrainSettings(seed=42), resume=train(small_store, TrainSettings(seed=7, **FAST)).run_id,
              given={"seed"})
    with pytest.raises(ConfigError, match="unknown setting"):
        train(small_store, TrainSettings(), resume=run.run_id, given={"colour"})
    # repeating the run's own settings is no contradiction: it resumes (nothing left to train)
    again = train(small_store, TrainSettings(model="nmf", **FAST), resume=run.run_id)
    assert again.run_id == run.run_id and [e["epoch"] for e in again.epochs] == [1, 2, 3, 4]
    assert again.test_rmse == run.test_rmse


def test_on_epoch_hook_sees_each_epoch_and_can_stop_the_run(small_store):
    calls = []

    def hook(epoch: int, rmse: float | None) -> bool:
        calls.append((epoch, rmse))
        return epoch == 2

    settings = TrainSettings(epochs=5, early_stopping_patience=0, lr_schedule="cosine", **{k: v for k, v in FAST.items() if k != "epochs"})
    result = train(small_store, settings, on_epoch=hook)
    assert [e for e, _ in calls] == [1, 2] and all(isinstance(r, float) for _, r in calls)
    assert [r for _, r in calls] == [e["valid_rmse"] for e in result.epochs]
    assert result.stopped_by == "on_epoch" and [e["epoch"] for e in result.epochs] == [1, 2]
    config = read_run_config(small_store, result.run_id)
    assert config["status"] == "done" and config["epochs_run"] == 2 and config["stopped_by"] == "on_epoch"
    assert pq.read_metadata(result.run_dir / "predictions.parquet").num_rows == result.test_rows > 0
    # the per-epoch learning rate follows the pure schedule function
    eff = settings.effective()
    assert [e["lr"] for e in result.epochs] == [lr_at(1, eff), lr_at(2, eff)]


def test_batch_size_and_lr_default_by_model_and_device_and_are_recorded(small_store):
    from bonmf_pipe.trainer.models import model_batch_lr

    for model in ("bonmf", "nmf", "svd"):
        batch, lr = model_batch_lr(model, "cpu")
        assert (TrainSettings(model=model, device="cpu").effective().batch_size,) == (batch,)
        assert TrainSettings(model=model, device="cpu").effective().lr == lr
        # CUDA: a large batch when the split is large, lr by the square root of the batch ...
        for device in ("cuda", "cuda:1"):
            big = TrainSettings(model=model, device=device).effective(n_train=17_500_000)
            assert big.batch_size == 32768 and big.lr == pytest.approx(lr * (32768 / batch) ** 0.5)
        mid = TrainSettings(model=model, device="cuda").effective(n_train=280_000)  # 32 steps of 8,192
        assert mid.batch_size == max(batch, 8192) and mid.lr == pytest.approx(lr * (mid.batch_size / batch) ** 0.5)
        # ... and on a split too small for it, the CPU's pair
        assert model_batch_lr(model, "cuda", n_train=batch * 40) == (batch, lr)
        # an explicit batch size trains as it always did (lr 1e-3) unless --lr is given too
        assert TrainSettings(model=model, batch_size=512).effective().lr == 1e-3
        assert TrainSettings(model=model, batch_size=512, device="cuda").effective(n_train=10**8).batch_size == 512
        assert TrainSettings(model=model, lr=0.02, device="cpu").effective().batch_size == batch
    assert model_batch_lr("svd", "mps") == model_batch_lr("svd", "cpu")
    for bad in ({"batch_size": 0}, {"lr": 0.0}):
        with pytest.raises(ConfigError):
            TrainSettings(**bad)
    # config.json: what was asked (None) and what ran (the device's default)
    run = train(small_store, TrainSettings(model="svd", epochs=1, device="cpu"))
    config = read_run_config(small_store, run.run_id)
    assert config["settings"]["batch_size"] is None and config["settings"]["lr"] is None
    assert (config["effective"]["batch_size"], config["effective"]["lr"]) == model_batch_lr("svd", "cpu")


def test_lr_schedules_are_pure_functions_of_the_epoch():
    constant = TrainSettings(lr=0.01, epochs=5).effective()
    assert [lr_at(e, constant) for e in range(1, 6)] == [0.01] * 5
    cosine = TrainSettings(lr=0.01, epochs=5, lr_schedule="cosine").effective()
    lrs = [lr_at(e, cosine) for e in range(1, 6)]
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.001)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs == [lr_at(e, cosine) for e in range(1, 6)]


def test_a_diverging_run_fails_loudly_and_the_runs_view_says_why(small_store):
    with pytest.raises(ConfigError, match="(?s)diverged.*--lr"):
        train(small_store, TrainSettings(**{**FAST, "lr": 1e12}))
    (run,) = list_runs(small_store)
    assert run["status"] == "failed" and "diverged" in run["error"]
    row = query(small_store, "SELECT status, error, test_rmse FROM runs").to_pylist()[0]
    assert row["status"] == "failed" and "Lower --lr" in row["error"] and row["test_rmse"] is None
    with pytest.raises(ConfigError, match="--lr must be a positive finite number"):
        TrainSettings(lr=float("inf"))
    with pytest.raises(ConfigError, match="--lr must be a positive finite number .got nan"):
        TrainSettings(lr=float("nan"))


def test_an_interrupted_run_is_marked_killed(small_store):
    def interrupt(event):
        if event.kind == "note" and event.message.startswith("epoch 2:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(small_store, TrainSettings(**FAST), interrupt)
    (run,) = list_runs(small_store)
    assert run["status"] == "killed" and "--resume" in run["error"]
    assert query(small_store, "SELECT status FROM runs").to_pylist() == [{"status": "killed"}]
    resumed = train(small_store, TrainSettings(), resume=run["run_id"])
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3, 4]
    assert read_run_config(small_store, run["run_id"])["status"] == "done"


def test_run_ids_carry_a_safe_label():
    from bonmf_pipe.trainer import label, new_run_id

    assert label("my run/ç'; DROP") == "my-run-----DROP"
    assert label("x" * 60) == "x" * 40
    run_id = new_run_id("bonmf text")
    assert run_id[16:].startswith("bonmf-text-") and len(run_id.split("-")[-1]) == 6


def test_runs_metrics_and_predictions_views(small_store):
    a = train(small_store, TrainSettings(model="svd", **FAST))
    runs = query(small_store, "SELECT run_id, model, test_rmse FROM runs").to_pylist()
    assert runs == [{"run_id": a.run_id, "model": "svd", "test_rmse": pytest.approx(a.test_rmse)}]
    row = query(small_store, "SELECT status, typeof(created_at) AS t, threads FROM runs").to_pylist()[0]
    assert row["status"] == "done" and row["t"].startswith("TIMESTAMP") and row["threads"] >= 1
    metrics = query(small_store, "SELECT count(*) AS n FROM metrics WHERE run_id = ?".replace("?", f"'{a.run_id}'"))
    assert metrics.column("n")[0].as_py() == 4
    n = query(small_store, "SELECT count(*) AS n FROM predictions").column("n")[0].as_py()
    assert n == a.test_rows


def test_errors_say_what_to_fix(small_store, tmp_path):
    with pytest.raises(ConfigError, match="--model"):
        TrainSettings(model="xgboost")
    with pytest.raises(ConfigError, match="features"):
        TrainSettings(features=("Audio!",))  # not a feature-set name; an unknown name fails when the run loads it
    with pytest.raises(ConfigError, match="--epochs must be at least 1 .got 0"):
        TrainSettings(epochs=0)
    with pytest.raises(ConfigError, match="dropout must be in .0, 1. .got 1.5"):
        TrainSettings(dropout=1.5)
    with pytest.raises(ConfigError, match="--device 'tpu'"):
        TrainSettings(device="tpu")
    with pytest.raises(StoreError, match="encoder key 'nope'"):
        train(small_store, TrainSettings(text_encoder="nope", **FAST))
    with pytest.raises(ConfigError, match="no CUDA device|numbered from 0"):
        train(small_store, TrainSettings(device="cuda:99", **FAST))
    with pytest.raises(StoreError, match="is not a run"):
        train(small_store, TrainSettings(), resume="no-such-run")
    # a run that fails before its first epoch leaves no folder behind
    assert not small_store.runs_dir.exists() or list(small_store.runs_dir.iterdir()) == []
    empty = Store.open(tmp_path / "empty", create=True)
    with pytest.raises(StoreError, match="ingest"):
        train(empty, TrainSettings(**FAST))


def _checkpoint_weights(run_dir_: Path) -> dict:
    return {k: v for k, v in load_file(str(run_dir_ / "checkpoint.safetensors")).items() if k.startswith("model/")}


def test_the_best_epoch_weights_live_in_their_own_file_and_are_the_ones_kept(small_store, monkeypatch):
    """Epoch 2 validates best and later epochs worse: its weights (best.safetensors, written when
    it improved, no copy held in memory) are what the final checkpoint and the predictions use."""
    module = sys.modules["bonmf_pipe.trainer.train"]
    rmses = iter([1.0, 0.9, 0.95, 0.97])
    monkeypatch.setattr(module, "valid_rmse", lambda ctx, model: next(rmses))
    seen: dict[int, dict] = {}
    holder: dict[str, Path] = {}

    def on_epoch(epoch, rmse):
        run = list_runs(small_store)[-1]["run_id"]
        holder["dir"] = run_dir(small_store, run)
        seen[epoch] = _checkpoint_weights(holder["dir"])
        return False

    result = train(small_store, TrainSettings(model="svd", early_stopping_patience=5, **FAST), on_epoch=on_epoch)
    assert result.best_epoch == 2 and [e["epoch"] for e in result.epochs] == [1, 2, 3, 4]
    final = load_file(str(result.run_dir / "checkpoint.safetensors"))
    assert not any(k.startswith("best/") for k in final)  # format 3: no second copy inside
    best = load_file(str(result.run_dir / "best.safetensors"))
    for k, v in seen[2].items():
        assert final[k].numpy().tobytes() == v.numpy().tobytes() == best[k[6:]].numpy().tobytes(), k
    assert any(final[k].numpy().tobytes() != v.numpy().tobytes() for k, v in seen[4].items())
    scorer = load_scorer(small_store, result.run_id)  # the predictions come from the kept weights
    p = pq.read_table(result.run_dir / "predictions.parquet").slice(0, 50)
    np.testing.assert_array_equal(scorer.predict(p.column("user_id").to_numpy(), p.column("item_id").to_numpy()),
                                  p.column("prediction").to_numpy())


@pytest.mark.parametrize("fmt", ["bonmf-checkpoint-3", "bonmf-checkpoint-2"])
def test_a_stopped_run_resumes_to_the_uninterrupted_result_in_either_checkpoint_format(small_store, fmt):
    """Format 3 keeps the best weights in best.safetensors; runs of the previous version (format 2)
    kept them as "best/" tensors of the checkpoint, and still resume."""
    from safetensors.torch import save_file

    settings = TrainSettings(model="svd", **{**FAST, "epochs": 3})
    full = train(small_store, settings)
    stopped = train(small_store, settings, on_epoch=lambda epoch, rmse: epoch == 2)
    folder = stopped.run_dir
    path = folder / "checkpoint.safetensors"
    if fmt == "bonmf-checkpoint-2":
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
        tensors = load_file(str(path))
        tensors.update({f"best/{k}": v for k, v in load_file(str(folder / "best.safetensors")).items()})
        save_file(tensors, str(path), metadata={**meta, "format": fmt})
        (folder / "best.safetensors").unlink()
    resumed = train(small_store, TrainSettings(), resume=stopped.run_id)
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3]
    assert (folder / "best.safetensors").exists()
    assert (resumed.test_mse, resumed.best_epoch) == (full.test_mse, full.best_epoch)


def test_row_sparse_gradients_give_the_same_bits_as_dense_ones(small_store, monkeypatch):
    """On the CPU the embeddings' gradients are added row by row into gradients kept across steps
    (no table-sized allocation per step); the weights come out bit for bit as with dense ones."""
    sparse = train(small_store, TrainSettings(model="svd", **FAST))
    monkeypatch.setattr(sys.modules["bonmf_pipe.trainer.setup"], "_row_sparse_gradients", lambda model, opt: None)
    dense = train(small_store, TrainSettings(model="svd", **FAST))
    ta, tb = (load_file(str(r.run_dir / "checkpoint.safetensors")) for r in (sparse, dense))
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k].numpy().tobytes() == tb[k].numpy().tobytes(), k
