"""Encoder keys, the key cache, and the feature-set rules encode relies on (features.py)."""

from __future__ import annotations

import duckdb

from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.features import current_hashes, current_inputs, text_content_hash, text_content_hash_sql
from bonmf_pipe.pipeline.encode.keys import KeyCache, descriptor, encoder_key
from bonmf_pipe.pipeline.encode.registry import resolve_source

from .conftest import write_items


def test_the_key_hashes_the_spec_but_not_where_the_files_were():
    spec = {"model": "m", "weights_sha256": "ab", "dim": 4, "provenance": {"location": "/here"}}
    moved = {**spec, "provenance": {"location": "/elsewhere"}}
    assert encoder_key(spec) == encoder_key(moved) and len(encoder_key(spec)) == 16
    assert encoder_key({**spec, "dim": 8}) != encoder_key(spec)
    assert encoder_key({**spec, "weights_sha256": "cd"}) != encoder_key(spec)


def test_key_cache_is_keyed_by_files_and_options(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    source = resolve_source("text", "offline-minilm")
    desc = descriptor(source, {"max_length": 128})
    cache = KeyCache(store, "text")
    assert cache.get(desc) is None
    cache.put(desc, "k1")
    assert cache.get(descriptor(source, {"max_length": 128})) == "k1"
    assert cache.get(descriptor(source, {"max_length": 64})) is None  # other options: unknown until loaded
    assert {str(f) for f in source.files} >= {str(source.location / "model.safetensors"), str(source.location / "vocab.txt")}


def test_text_hash_rule_is_the_same_in_python_and_sql(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    texts = ["Toy Story (1995). Genres: Animation.", "Amélie (2001) — «Le fabuleux destin»", ""]
    write_items(store, [{"item_id": i, "title": t or "x", "text": t} for i, t in enumerate(texts)])
    sql = duckdb.sql(f"SELECT {text_content_hash_sql('t')} AS h FROM (SELECT unnest(?::VARCHAR[]) AS t)", params=[texts])
    assert [r[0] for r in sql.fetchall()] == [text_content_hash(t) for t in texts]
    inputs = current_inputs(store, "text")
    assert inputs.column_names == ["item_id", "content_hash", "input"] and inputs.column("input").to_pylist() == texts
    assert current_hashes(store, "text").column_names == ["item_id", "content_hash"]
    assert current_inputs(store, "image").num_rows == 0  # no posters
