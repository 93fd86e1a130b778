"""Named feature sets: train fuses any subset of the store's feature sets (text, image and
imported ones), each through its own projection and missing-vector handling."""

from __future__ import annotations

import numpy as np
import pytest

from bonmf_pipe.errors import ConfigError, StoreError
from bonmf_pipe.evaluation.foldin import fold_in
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.pipeline.ablate import AblateSettings, ablate, parse_features
from bonmf_pipe.pipeline.features_import import ImportSettings, import_features
from bonmf_pipe.trainer import TrainSettings, load_scorer, read_run_config, train
from tests.trainer.conftest import build_store


@pytest.fixture
def store_with_import(tmp_path):
    """The trainer's synthetic store plus an imported 'taste' set covering 60 of its 80 items:
    noisy copies of the text vectors (which reveal each item's hidden taste)."""
    store = build_store(tmp_path / "store")
    items = store.read_table("items", columns=["item_id"]).column(0).to_numpy()[:60]
    rng = np.random.default_rng(4)
    vecs = rng.normal(size=(60, 8)).astype(np.float32)
    np.save(tmp_path / "taste.npy", vecs)
    (tmp_path / "ids.txt").write_text("\n".join(map(str, items)))
    result = import_features(store, ImportSettings(path=tmp_path / "taste.npy", ids=tmp_path / "ids.txt", name="taste",
                                                   provenance="synthetic"))
    return store, result


def test_train_fuses_an_imported_feature_set_beside_text_and_image(store_with_import):
    store, imported = store_with_import
    run = train(store, TrainSettings(features=("text", "image", "taste"), epochs=3, batch_size=256, device="cpu", seed=1))
    config = read_run_config(store, run.run_id)
    assert set(config["features"]) == {"text", "image", "taste"}
    assert config["features"]["taste"] == {"key": imported.key, "dim": 8, "items_with_vector": 60}
    scorer = load_scorer(store, run.run_id)
    assert set(scorer.model.sides) == {"text", "image", "taste"}  # one projection and missing vector each
    assert scorer.model.sides["taste"].proj.in_features == 8
    assert np.isfinite(scorer.score_items(scorer.user_ids[:3])).all()
    # the imported set alone, and a fold-in through it
    alone = train(store, TrainSettings(features=("taste",), epochs=2, batch_size=256, device="cpu", seed=1))
    folded = fold_in(load_scorer(store, alone.run_id), {int(scorer.item_ids[0]): 5.0, int(scorer.item_ids[1]): 1.0})
    assert folded.n_ratings == 2
    runs = query(store, f"SELECT features FROM runs WHERE run_id = '{run.run_id}'").column(0).to_pylist()
    assert runs == ["text,image,taste"]


def test_feature_names_are_checked(store_with_import):
    store, _ = store_with_import
    assert parse_features("text+taste") == ("text", "taste")
    with pytest.raises(ConfigError, match="feature-set name"):
        parse_features("text+Bad Name")
    with pytest.raises(ConfigError, match="name each feature set once"):
        TrainSettings(features=("text", "text"))
    with pytest.raises(StoreError, match="features import FILE --name nosuch"):
        train(store, TrainSettings(features=("text", "nosuch"), epochs=1, device="cpu"))


def test_ablate_compares_imported_sets(store_with_import):
    store, _ = store_with_import
    result = ablate(store, AblateSettings(train=TrainSettings(epochs=2, batch_size=256, device="cpu"),
                                          features=("text", "text+taste"), baselines=("svd",)))
    assert {r["features"] for r in result.table.to_pylist()} == {"none", "text", "text+taste"}
