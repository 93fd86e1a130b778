"""Template sets: `encode --name NAME --text-template TEMPLATE` writes a named text feature set
with the packaged offline MiniLM (its own key, manifest, view, coverage), rejects the items
whose text renders empty, re-runs as a cached no-op, follows edits of the fields it renders,
and is fused by `train --features text,image,NAME` and listed by `ablate`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.errors import ConfigError, StoreError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.features import load_feature_matrix, resolve_feature_set
from bonmf_pipe.featurestore.info import store_info
from bonmf_pipe.featurestore.schema import ITEMS
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.pipeline.ablate import AblateSettings, ablate, store_feature_names
from bonmf_pipe.pipeline.encode import EncodeSettings, encode
from bonmf_pipe.pipeline.encode.templates import render
from bonmf_pipe.pipeline.features_import import ImportSettings, import_features
from bonmf_pipe.trainer import TrainSettings, load_scorer, read_run_config, train
from tests.trainer.conftest import build_store

runner = CliRunner()
TAGS = EncodeSettings(name="tags", text_template="{tags}", device="cpu", cpu_threads=1)
TAGGED = 50  # of the synthetic store's 80 items


def set_tags(store: Store, tags: dict[int, list[str]]) -> None:
    """Rewrite the items table with these items' tags (the others keep theirs)."""
    items = store.read_table("items")
    old = dict(zip(items.column("item_id").to_pylist(), items.column("tags").to_pylist(), strict=True))
    old.update(tags)
    new = items.set_column(items.schema.get_field_index("tags"), "tags",
                           pa.array([old[i] for i in items.column("item_id").to_pylist()], pa.list_(pa.string())))
    with store.writer("items", ITEMS) as w:
        w.write(new.cast(ITEMS))
        w.commit()


@pytest.fixture
def tagged_store(tmp_path):
    """The trainer's synthetic store (80 items, 8-d stand-in text and image sets) with tags on 50 items."""
    store = build_store(tmp_path / "store")
    ids = store.read_table("items", columns=["item_id"]).column(0).to_pylist()
    set_tags(store, {i: [f"tag{i % 7}", "quiet" if k % 2 else "loud"] for k, i in enumerate(ids[:TAGGED])})
    return store


def test_render_drops_sentences_with_an_empty_field():
    values = {"title": "Toy Story", "year": "", "tags": "pixar, fun"}
    assert render("{tags}", values) == "pixar, fun"
    assert render("{tags}", {**values, "tags": " "}) == ""
    assert render("{title} ({year}). Tags: {tags}.", values) == "Toy Story. Tags: pixar, fun."
    assert render("{title} ({year}). Tags: {tags}.", {**values, "tags": ""}) == "Toy Story."


def test_a_template_set_is_encoded_once_rejects_empty_texts_and_follows_its_fields(tagged_store):
    store = tagged_store
    first = encode(store, TAGS).of("tags")
    assert (first.encoded, first.failed, first.model_loaded, first.dim) == (TAGGED, 80 - TAGGED, True, 384)
    fs = resolve_feature_set(store, "tags")
    assert fs.key == first.encoder_key and fs.template == "{tags}" and fs.rows == TAGGED and fs.matched_by == "template"
    assert fs.key != resolve_feature_set(store, "text").key
    rejects = query(store, "SELECT raw, reason FROM rejects WHERE stage = 'encode'").to_pylist()
    assert len(rejects) == 80 - TAGGED and all("renders empty" in r["reason"] for r in rejects)
    assert {json.loads(r["raw"])["modality"] for r in rejects} == {"tags"}

    again = encode(store, TAGS).of("tags")  # nothing new: no model, no vector, no new reject
    assert (again.encoded, again.failed, again.excluded, again.model_loaded) == (0, 0, 80 - TAGGED, False)
    assert again.encoder_key == first.encoder_key
    assert query(store, "SELECT count(*) FROM rejects").column(0)[0].as_py() == 80 - TAGGED

    # Another template is another key; so is the same template under the default text rules.
    other = encode(store, EncodeSettings(name="tagline", text_template="{title}. Tags: {tags}.", device="cpu",
                                         cpu_threads=1)).of("tagline")
    assert other.encoded == 80 and other.failed == 0 and other.encoder_key != first.encoder_key

    # Edit one tagged item's tags, tag an untagged one: only those two are encoded; the edited
    # item's old vector is no longer current anywhere (loader, view, coverage).
    ids = store.read_table("items", columns=["item_id"]).column(0).to_pylist()
    edited, added = ids[0], ids[-1]
    before, _ = load_feature_matrix(store, fs, np.array([edited]))
    set_tags(store, {edited: ["something", "else"], added: ["new"]})
    third = encode(store, TAGS).of("tags")
    assert (third.encoded, third.skipped, third.model_loaded) == (2, TAGGED - 1, True)
    fs = resolve_feature_set(store, "tags")
    after, found = load_feature_matrix(store, fs, np.array([edited, added]))
    assert found.all() and not np.allclose(before[0], after[0], atol=1e-3)
    view = query(store, f"SELECT item_id, vector FROM tags_features WHERE item_id = {edited}").to_pylist()
    assert len(view) == 1 and np.allclose(np.array(view[0]["vector"], np.float32), after[0], atol=1e-3)
    coverage = {c.feature_set: c for c in store_info(store).coverage}
    assert (coverage["tags"].with_vector, coverage["tags"].without_vector) == (TAGGED + 1, 80 - TAGGED - 1)
    assert (coverage["tagline"].with_vector, coverage["tagline"].without_vector) == (78, 2)  # its two edited items wait


def test_template_settings_and_fields_are_checked(tagged_store, tmp_path):
    with pytest.raises(ConfigError, match="needs --name"):
        EncodeSettings(text_template="{tags}")
    with pytest.raises(ConfigError, match="needs --text-template"):
        EncodeSettings(name="tags")
    for bad in ("text", "all", "Tags"):
        with pytest.raises(ConfigError, match="--name"):
            EncodeSettings(name=bad, text_template="{tags}")
    with pytest.raises(ConfigError, match="no placeholder"):
        EncodeSettings(name="tags", text_template="just words")
    with pytest.raises(ConfigError, match=r"uses \{plot\}.*the fields are \{title\}, \{year\}, \{genres\}, \{tags\}, \{text\}"):
        encode(tagged_store, EncodeSettings(name="plot", text_template="{plot}", device="cpu"))
    # one name, one kind of set: imported vectors and template sets never share a name
    np.save(tmp_path / "v.npy", np.ones((3, 4), np.float32))
    (tmp_path / "ids.txt").write_text("10\n20\n30\n")
    import_features(tagged_store, ImportSettings(path=tmp_path / "v.npy", ids=tmp_path / "ids.txt", name="mine"))
    with pytest.raises(ConfigError, match="holds imported vectors"):
        encode(tagged_store, EncodeSettings(name="mine", text_template="{tags}", device="cpu"))
    encode(tagged_store, TAGS)
    with pytest.raises(ConfigError, match="encoded from a text template"):
        import_features(tagged_store, ImportSettings(path=tmp_path / "v.npy", ids=tmp_path / "ids.txt", name="tags"))
    with pytest.raises(StoreError, match="encode --name nosuch --text-template"):
        resolve_feature_set(tagged_store, "nosuch")


def test_train_fuses_a_template_set_and_ablate_lists_it(tagged_store):
    store = tagged_store
    encode(store, TAGS)
    key = resolve_feature_set(store, "tags").key
    run = train(store, TrainSettings(features=("text", "image", "tags"), epochs=2, batch_size=256, device="cpu", seed=1))
    config = read_run_config(store, run.run_id)
    assert config["features"]["tags"] == {"key": key, "dim": 384, "items_with_vector": TAGGED}
    scorer = load_scorer(store, run.run_id)
    assert scorer.model.sides["tags"].proj.in_features == 384
    assert np.isfinite(scorer.score_items(scorer.user_ids[:3])).all()

    assert store_feature_names(store) == ["text", "image", "tags"]
    assert AblateSettings().variants(store_feature_names(store))[2:] == [
        ("bonmf", ()), ("bonmf", ("text",)), ("bonmf", ("image",)), ("bonmf", ("tags",)),
        ("bonmf", ("text", "image")), ("bonmf", ("text", "image", "tags"))]
    result = ablate(store, AblateSettings(train=TrainSettings(epochs=1, batch_size=256, device="cpu", threads=1),
                                          features=("tags", "all"), baselines=("svd",)))
    assert [r["features"] for r in result.table.to_pylist()] == ["none", "tags", "text+image+tags"]


@pytest.mark.slow
def test_cli_template_set_on_ml_latest_small(encoded_small_store, tmp_path):
    """The real catalogue: a tags-only set beside the default text and image sets, from the CLI."""
    shutil.copytree(encoded_small_store.root, tmp_path / "store")
    root = str(tmp_path / "store")
    argv = ["encode", "--name", "tags", "--text-template", "{tags}", "--cpu-threads", "1", "--store", root]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    store = Store.open(tmp_path / "store")
    tags, text = resolve_feature_set(store, "tags"), resolve_feature_set(store, "text")
    tagged = query(store, "SELECT count(*) FROM items WHERE len(tags) > 0").column(0)[0].as_py()
    assert tags.key != text.key and tags.key in result.output and tags.rows == tagged > 1000
    again = runner.invoke(app, argv)
    assert again.exit_code == 0 and "nothing new to encode: no model was loaded" in again.output
    assert resolve_feature_set(Store.open(tmp_path / "store"), "tags").rows == tagged

    info = runner.invoke(app, ["info", "--store", root])
    assert info.exit_code == 0, info.output
    items = query(store, "SELECT count(*) FROM items").column(0)[0].as_py()
    assert f"coverage tags ({tags.key}, 384-d): {tagged:,} of {items:,} items have a vector" in info.output

    run = train(store, TrainSettings(features=("text", "image", "tags"), epochs=2, device="cpu", seed=42, threads=1))
    assert read_run_config(store, run.run_id)["features"]["tags"]["items_with_vector"] == tagged
    assert ("bonmf", ("text", "image", "tags")) in AblateSettings().variants(store_feature_names(store))
