"""Cold-start splits: whole items (users) held out for test, none of their ratings in train or
valid; seeded; and a model trained on them meets the held-out items through the unknown ID."""

from __future__ import annotations

import numpy as np
import pytest

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.evaluation import EvalSettings, evaluate_run
from bonmf_pipe.trainer import TrainSettings, load_scorer, make_split, read_run_config, split_dataset, train
from bonmf_pipe.trainer.splits import parse_split

from .conftest import build_store


def _parts(store, split_id):
    t = split_dataset(store, split_id).to_table().sort_by([("user_id", "ascending"), ("item_id", "ascending")])
    return (t.column("user_id").to_numpy(), t.column("item_id").to_numpy(),
            t.column("part").to_numpy(zero_copy_only=False))


@pytest.mark.parametrize("kind, column", [("cold-items", 1), ("cold-users", 0)])
def test_cold_split_holds_out_whole_entities_and_nothing_leaks(small_store, kind, column):
    split_id = make_split(small_store, f"{kind}:0.2", seed=5)
    cols = _parts(small_store, split_id)
    key, parts = cols[column], cols[2]
    assert len(parts) == small_store.read_table("ratings").num_rows  # every rating, once
    held = np.unique(key[parts == "test"])
    seen = np.unique(key[parts != "test"])
    assert held.size > 0 and np.intersect1d(held, seen).size == 0  # no held-out id in train or valid
    assert set(np.unique(parts)) == {"train", "valid", "test"}
    share = held.size / np.unique(key).size
    assert 0.08 < share < 0.35  # about the asked 20% of the ids (hash-drawn)
    # every rating of a held-out id is in test
    assert np.all(parts[np.isin(key, held)] == "test")


def test_cold_split_is_seeded(tmp_path):
    one = build_store(tmp_path / "one")
    two = build_store(tmp_path / "two", rows_per_file=700, row_group_size=150)
    a = _parts(one, make_split(one, "cold-items:0.25", seed=3))
    b = _parts(two, make_split(two, "cold-items:0.25", seed=3))
    assert np.array_equal(a[2], b[2])  # same seed, same ratings -> same split (whatever the sharding)
    c = _parts(one, make_split(one, "cold-items:0.25", seed=4))
    assert not np.array_equal(np.unique(a[1][a[2] == "test"]), np.unique(c[1][c[2] == "test"]))


def test_cold_split_spec_is_checked():
    assert parse_split("cold-items") == ("cold-items", 0.1)
    assert parse_split("cold-users:0.3") == ("cold-users", 0.3)
    with pytest.raises(ConfigError, match="held-out share"):
        parse_split("cold-items:1.5")


def test_held_out_items_are_scored_through_the_unknown_id_from_their_content(small_store):
    s = TrainSettings(model="bonmf", split="cold-items:0.2", seed=2, epochs=8, device="cpu", batch_size=128)
    run = train(small_store, s)
    scorer = load_scorer(small_store, run.run_id)
    _, items, parts = _parts(small_store, read_run_config(small_store, run.run_id)["split_id"])
    held = np.unique(items[parts == "test"])
    index = scorer.maps.item_index[scorer.maps.item_pos(held)]
    assert np.all(index == 0)  # every held-out item maps to the unknown ID embedding
    assert np.all(scorer.maps.item_index[scorer.maps.item_pos(np.unique(items[parts == "train"]))] > 0)
    # different held-out items get different predictions for one user: their content tells them apart
    user = scorer.user_ids[:1].repeat(held.size)
    pred = scorer.predict(user, held)
    assert np.ptp(pred) > 0.05
    result = evaluate_run(small_store, run.run_id, EvalSettings(ks=(5,), max_users=50))
    assert result.count("rmse", subset="unseen") == result.count("rmse", subset="all") > 0


def test_cold_items_on_real_ml_latest_small(tmp_path, ml_latest_small):
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

    store = Store.open(tmp_path / "store", create=True)
    ingest(store, IngestSettings(path=ml_latest_small))
    users, items, parts = _parts(store, make_split(store, "cold-items:0.1", seed=42))
    assert len(parts) == 100_836
    held = np.unique(items[parts == "test"])
    assert np.intersect1d(held, items[parts != "test"]).size == 0
    assert 0.08 < held.size / np.unique(items).size < 0.12  # ~10% of the 9,724 rated movies
    assert 0.05 < (parts == "test").mean() < 0.2  # their ratings: a tenth of the ratings, give or take popularity
