"""tune on small synthetic stores: trials in the store and the ``tuning`` view, resuming a
killed study, the best params as TrainSettings overrides with their provenance, and the
proof that the test rows never reach the search (poisoned test ratings change nothing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pyarrow as pa
import pytest

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.schema import RATINGS
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.pipeline.train import train_and_evaluate
from bonmf_pipe.pipeline.tune import (
    TuneSettings,
    best_trial,
    default_study_name,
    load_params,
    record_params,
    search_space,
    storage_path,
    tune,
    write_params_file,
)
from bonmf_pipe.trainer import TrainSettings, make_split, read_run_config, run_dir, split_dataset
from tests.trainer.conftest import build_store

BASE = TrainSettings(epochs=3, device="cpu", threads=1)


def _settings(**kw) -> TuneSettings:
    kw = {"trials": 3, "train": BASE, **kw}
    return TuneSettings(model="bonmf", features=("text",), seed=3, startup_trials=2,
                        space=("embedding_dim", "l2", "lr", "dropout"), **kw)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    store = build_store(tmp_path_factory.mktemp("tune") / "store")
    events = []
    result = tune(store, _settings(), events.append)
    return store, result, events


def test_trials_land_in_the_store_and_the_tuning_view(tuned):
    store, result, events = tuned
    assert result.study == default_study_name("bonmf", ("text",), "random:0.7", 3) == "bonmf-text-random0.7-s3"
    assert result.storage == storage_path(store, result.study) and result.storage.exists()
    assert (result.already_done, result.ran) == (0, 3)
    t = query(store, "SELECT * FROM tuning ORDER BY trial")
    rows = t.to_pylist()
    assert [r["trial"] for r in rows] == [0, 1, 2]
    assert all(r["study"] == result.study and r["model"] == "bonmf" and r["features"] == "text" for r in rows)
    splits = set()
    for r in rows:
        assert r["state"] in ("COMPLETE", "PRUNED")
        params = json.loads(r["params"])
        assert set(params) == {"embedding_dim", "l2", "lr", "dropout"}
        config = read_run_config(store, r["run_id"])
        assert config["settings"]["embedding_dim"] == params["embedding_dim"]
        assert config["settings"]["lr"] == pytest.approx(params["lr"])
        epochs = config.get("epochs_run") or r["epochs_run"]
        assert 1 <= r["epochs_run"] <= 3 and epochs >= 1
        splits.add(r["split_id"])
        assert r["valid_rmse"] > 0
    assert len(splits) == 1  # every trial is scored on the same validation slice
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = min(complete, key=lambda r: r["valid_rmse"])
    assert result.best.trial == best["trial"] and result.best.valid_rmse == pytest.approx(best["valid_rmse"])
    assert [r["trial"] for r in rows if r["is_best"]] == [best["trial"]]
    lines = [e.message for e in events if e.kind == "note" and e.message.startswith("trial ")]
    assert len(lines) == 3 and "valid RMSE" in lines[0] and "lr=" in lines[0]


def test_a_killed_study_resumes(tuned, tmp_path):
    store, result, _ = tuned
    copy = Store.open(shutil.copytree(store.root, tmp_path / "store"))
    # a trial a killed tune left RUNNING: it is marked failed and not counted
    study = optuna.load_study(study_name=result.study, storage=f"sqlite:///{storage_path(copy, result.study)}")
    study.ask()
    more = tune(copy, _settings(trials=4))
    assert (more.already_done, more.ran) == (3, 1)
    states = [r["state"] for r in query(copy, "SELECT state FROM tuning ORDER BY trial").to_pylist()]
    assert states[3] == "FAIL" and len(states) == 5 and states[4] in ("COMPLETE", "PRUNED")
    assert tune(copy, _settings(trials=4)).ran == 0  # nothing left to do
    with pytest.raises(ConfigError, match="other settings"):
        tune(copy, _settings(trials=4, train=TrainSettings(epochs=2, device="cpu", threads=1)))


def test_best_params_train_a_run_that_records_its_source(tuned, tmp_path):
    store, result, _ = tuned
    settings = TrainSettings(model="bonmf", features=("text",), seed=3, epochs=2, device="cpu", threads=1)
    choice = load_params(store, "best", settings)
    assert choice.params == result.best.params
    assert choice.source["study"] == result.study and choice.source["trial"] == result.best.trial
    assert choice.apply(settings).lr == result.best.params["lr"]
    run = train_and_evaluate(store, settings, params="best").run
    recorded = json.loads((run_dir(store, run.run_id) / "params.json").read_text())
    assert recorded["source"] == "study" and recorded["params"] == result.best.params
    assert read_run_config(store, run.run_id)["settings"]["lr"] == result.best.params["lr"]
    # a params file written from the best trial gives the same overrides, with the file as source
    path = write_params_file(best_trial(store, result.study), tmp_path / "best.json")
    from_file = load_params(store, str(path), settings)
    assert from_file.params == choice.params and from_file.source["source"] == "file"
    path = record_params(store, run.run_id, from_file, overridden=("lr", "epochs"))
    recorded = json.loads(path.read_text())
    assert recorded["source"] == "file" and "lr" not in recorded["params"]
    assert recorded["not_used"] == {"lr": choice.params["lr"]}
    assert load_params(store, f"best:{result.study}", TrainSettings()).params == choice.params
    with pytest.raises(ConfigError, match="tuned bonmf, not svd"):
        load_params(store, f"best:{result.study}", TrainSettings(model="svd"))


def test_params_errors_say_what_to_do(tuned, tmp_path):
    store, _, _ = tuned
    with pytest.raises(ConfigError, match="Run `bonmf-pipe tune`"):
        load_params(store, "best", TrainSettings(model="svd"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"params": {"lr": 0.01, "colour": "red"}}))
    with pytest.raises(ConfigError, match="colour"):
        load_params(store, str(bad), TrainSettings())
    with pytest.raises(ConfigError, match="cannot read"):
        load_params(store, str(tmp_path / "missing.json"), TrainSettings())
    with pytest.raises(ConfigError, match="--trials"):
        TuneSettings(trials=0)
    with pytest.raises(ConfigError, match="--study"):
        TuneSettings(study="../elsewhere")
    with pytest.raises(ConfigError, match="--space"):
        TuneSettings(space=("colour",))
    with pytest.raises(ConfigError, match="valid_fraction"):
        TuneSettings(train=TrainSettings(valid_fraction=0.0))


def test_search_space_follows_the_model():
    names = lambda s: {p.name for p in search_space(s)}  # noqa: E731
    assert "dropout" not in names(TrainSettings(model="svd")) and "lr" in names(TrainSettings(model="svd"))
    assert "side_weight_decay" in names(TrainSettings(model="bonmf", features=("text",)))
    assert "side_weight_decay" not in names(TrainSettings(model="bonmf", features=()))
    assert "side_weight_decay" not in names(TrainSettings(model="nmf"))


def _poison_test_ratings(clean: Store, store: Store, split_id: str, seed: int) -> int:
    """Give every rating of the split's test part a random value: the ratings table changes
    only where the split puts test rows (the split's assignment hashes seed, user and item)."""
    part = split_dataset(clean, split_id).to_table(columns=["user_id", "item_id", "part"]).to_pylist()
    test = {(r["user_id"], r["item_id"]) for r in part if r["part"] == "test"}
    ratings = store.read_table("ratings")
    rng = np.random.default_rng(seed)
    keys = zip(ratings.column("user_id").to_pylist(), ratings.column("item_id").to_pylist(), strict=True)
    values = [float(rng.integers(1, 6)) if k in test else v
              for k, v in zip(keys, ratings.column("rating").to_pylist(), strict=True)]
    poisoned = ratings.set_column(ratings.schema.get_field_index("rating"), "rating",
                                  pa.array(values, ratings.schema.field("rating").type))
    with store.writer("ratings", RATINGS, store.manifest("ratings").settings) as w:
        w.write(poisoned)
        w.commit()
    return len(test)


def test_tune_never_reads_test_rows(tmp_path):
    clean = build_store(tmp_path / "clean")
    poisoned = Store.open(shutil.copytree(clean.root, tmp_path / "poisoned"))
    split_id = make_split(clean, "random:0.7", 3)
    assert _poison_test_ratings(clean, poisoned, split_id, seed=1) > 100
    settings = _settings(trials=3)
    a, b = tune(clean, settings), tune(poisoned, settings)
    # the poisoning reached the test rows: the trials' test RMSEs differ ...
    test_a = [read_run_config(clean, r["run_id"])["test"]["rmse"] for r in a.trials]
    test_b = [read_run_config(poisoned, r["run_id"])["test"]["rmse"] for r in b.trials]
    assert all(abs(x - y) > 1e-3 for x, y in zip(test_a, test_b, strict=True))
    # ... but the search saw the same thing: same params, same valid RMSEs, same states, same best
    assert [json.loads(r["params"]) for r in a.trials] == [json.loads(r["params"]) for r in b.trials]
    assert [r["valid_rmse"] for r in a.trials] == [r["valid_rmse"] for r in b.trials]
    assert [r["state"] for r in a.trials] == [r["state"] for r in b.trials]
    assert (a.best.trial, a.best.params) == (b.best.trial, b.best.params)


TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_tune_under_torchrun_trains_each_trial_on_every_process_and_writes_once(tmp_path):
    """2 gloo processes: rank 0 owns the study and draws what one process draws; both ranks train
    each trial (DDP); one run folder per trial, one tuning table, one printed result."""
    store = build_store(tmp_path / "store")
    # what the command below asks for (the CLI's defaults otherwise), in one process
    one = tune(build_store(tmp_path / "one"), TuneSettings(model="bonmf", features=("text",), seed=3, trials=2,
                                                           train=TrainSettings(epochs=2, device="cpu", threads=1)))
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "bonmf_pipe.cli", "tune",
           "--store", str(store.root), "--model", "bonmf", "--features", "text", "--trials", "2", "--epochs", "2",
           "--seed", "3", "--device", "cpu", "--threads", "1"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.count("next: bonmf-pipe train --params best:") == 1  # rank 0 alone reports
    study = optuna.load_study(study_name=one.study, storage=f"sqlite:///{storage_path(store, one.study)}")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1] and all(t.state.is_finished() for t in trials)
    rows = query(store, "SELECT * FROM tuning ORDER BY trial").to_pylist()
    assert [r["trial"] for r in rows] == [0, 1] and all(r["valid_rmse"] > 0 for r in rows)
    assert sorted(p.name for p in store.runs_dir.iterdir()) == sorted(r["run_id"] for r in rows)  # one set of runs
    for r in rows:
        config = read_run_config(store, r["run_id"])
        assert config["status"] == "done" and config["distributed"] == {"world_size": 2, "backend": "gloo"}
    # an error on rank 0 before any trial (the study exists with other settings) reaches every rank: no hang
    again = subprocess.run([*cmd, "--epochs", "3"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert again.returncode != 0  # and both ranks say why (rank 0 broadcast its error rather than leave rank 1 waiting)
    assert (again.stdout + again.stderr).count("exists in this store with other settings") == 2
    assert sorted(p.name for p in store.runs_dir.iterdir()) == sorted(r["run_id"] for r in rows)
    # rank 0's sampler is the one process's: the same seeded draws
    assert [t.params for t in trials] == [json.loads(r["params"]) for r in one.trials]
