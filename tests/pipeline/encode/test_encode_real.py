"""The offline encoders on real ML-1M titles and posters: quality, determinism, runs once."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.features import feature_sets, resolve_feature_set
from bonmf_pipe.featurestore.schema import ITEMS
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.featurestore.verify import verify_store
from bonmf_pipe.pipeline.encode import EncodeSettings, encode
from bonmf_pipe.pipeline.encode.registry import resolve_source

from .conftest import N_POSTERS, N_TEXTS, SCHINDLER, THREADS, TOY_STORY, TOY_STORY_2, ingest_into, vectors


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_text_vectors_put_toy_story_2_nearer_than_schindlers_list(encoded):
    s = encoded.summary.of("text")
    assert (s.items, s.encoded, s.skipped, s.failed, s.dim, s.model_loaded) == (N_TEXTS, N_TEXTS, 0, 0, 384, True)
    ids, vecs = vectors(encoded.store, "text")
    assert len(ids) == N_TEXTS and vecs.shape == (N_TEXTS, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=2e-3)  # L2-normalised like sentence-transformers
    v = dict(zip(ids.tolist(), vecs, strict=True))
    assert _cos(v[TOY_STORY], v[TOY_STORY_2]) > _cos(v[TOY_STORY], v[SCHINDLER]) + 0.1
    fs = resolve_feature_set(encoded.store, "text")
    assert fs.spec["pooling"] == "mean" and fs.spec["text_template"].startswith("{title}")
    assert len(list(fs.folder.glob("part-*.parquet"))) == 5 and fs.rows == N_TEXTS
    assert [e.items for e in encoded.events if e.kind == "forward" and e.modality == "text"] == [64] * 4 + [44]


def test_image_vectors_of_real_posters_are_1280d_and_deterministic(encoded, catalogue, tmp_path):
    s = encoded.summary.of("image")
    assert (s.items, s.encoded, s.failed, s.dim) == (N_POSTERS, N_POSTERS, 0, 1280)
    ids, vecs = vectors(encoded.store, "image")
    assert vecs.shape == (N_POSTERS, 1280) and np.isfinite(vecs).all()
    assert vecs.min() >= 0 and (vecs.std(axis=0) > 0).mean() > 0.9  # pooled ReLU6 features, varying
    # A second store, encoded again through two loader worker processes: the same vectors.
    other = ingest_into(tmp_path / "second", catalogue)
    encode(other, EncodeSettings(modalities=("image",), num_workers=2, rows_per_shard=64, **THREADS))
    ids2, vecs2 = vectors(other, "image")
    assert resolve_feature_set(other, "image").key == resolve_feature_set(encoded.store, "image").key
    assert np.array_equal(ids, ids2) and np.array_equal(vecs, vecs2)


def test_efficientnet_lite0_weights_classify_real_posters_sensibly(ml_1m_posters):
    """The package's weights mapped in order onto timm: the ImageNet head still makes sense."""
    import torch
    from PIL import Image
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    from bonmf_pipe.pipeline.encode.image import load_efficientnet_pytorch

    source = resolve_source("image", "offline-efficientnet-lite0")
    model = load_efficientnet_pytorch("efficientnet_lite0", source.location, num_classes=None)
    transform = create_transform(**resolve_data_config({}, model=model))
    info = ImageNetInfo()

    def top(movie_id: int, k: int) -> list[str]:
        with Image.open(ml_1m_posters / f"{movie_id}.jpg") as im:
            x = transform(im.convert("RGB"))[None]
        with torch.inference_mode():
            idx = model(x).softmax(-1)[0].topk(k).indices.tolist()
        return [info.index_to_description(i) for i in idx]

    assert top(2571, 1) == ["trench coat"]  # The Matrix: Neo and Morpheus in long coats
    assert any("prison" in label for label in top(318, 3))  # The Shawshank Redemption


def test_second_run_encodes_nothing_and_loads_no_model(encoded, copy_store):
    store = copy_store(encoded.root)
    events = []
    summary = encode(store, EncodeSettings(**THREADS), forward_hook=events.append)
    assert events == []
    for m in summary.modalities:
        assert (m.encoded, m.skipped, m.model_loaded) == (0, m.items, False)
        assert m.encoder_key == encoded.summary.of(m.modality).encoder_key


def test_editing_one_title_reencodes_one_text_and_no_image(encoded, copy_store):
    store = copy_store(encoded.root)
    before_ids, before = vectors(store, "text")
    items = store.read_table("items")
    edited = pc.if_else(pc.equal(items.column("item_id"), TOY_STORY), "Toy Story (1995). Genres: Horror, War.", items.column("text"))
    items = items.set_column(items.schema.get_field_index("text"), "text", edited)
    with store.writer("items", ITEMS, store.manifest("items").settings) as w:
        w.write(items)
        w.commit()
    # Leftovers of a killed run: a shard renamed but never listed, a half-written temp file.
    folder = resolve_feature_set(store, "text").folder
    (folder / "part-0-orphan.parquet").write_bytes(next(folder.glob("part-*.parquet")).read_bytes())
    (folder / ".part-1.parquet.tmp-99-abc").write_bytes(b"half")
    assert [p.severity for p in verify_store(store).problems] == ["warning"]
    events = []
    summary = encode(store, EncodeSettings(**THREADS), forward_hook=events.append)
    assert [(e.kind, e.modality, e.items) for e in events] == [("load", "text", 0), ("forward", "text", 1)]
    assert not verify_store(store).problems and not list(folder.glob("*orphan*")) and not list(folder.glob(".part-*"))
    text, image = summary.of("text"), summary.of("image")
    assert (text.encoded, text.skipped, image.encoded, image.model_loaded) == (1, N_TEXTS - 1, 0, False)
    assert text.encoder_key == encoded.summary.of("text").encoder_key  # same encoder, same feature set
    after_ids, after = vectors(store, "text")
    assert np.array_equal(before_ids, after_ids)
    changed = np.flatnonzero(np.any(before != after, axis=1))
    assert after_ids[changed].tolist() == [TOY_STORY]
    # SQL: the view holds current rows only; `features` keeps the old vector too.
    counts = query(store, "SELECT (SELECT count(*) FROM text_features) AS cur, (SELECT count(*) FROM features "
                          "WHERE modality = 'text') AS all_rows").to_pylist()[0]
    assert counts == {"cur": N_TEXTS, "all_rows": N_TEXTS + 1}


def test_sql_views_answer_the_readme_poster_query(encoded):
    store = encoded.store
    keys = {fs.modality: fs.key for fs in feature_sets(store)}
    rows = query(store, "SELECT modality, encoder_key, count(*) AS n, min(len(vector)) AS dim FROM features "
                        "GROUP BY ALL ORDER BY modality").to_pylist()
    assert rows == [
        {"modality": "image", "encoder_key": keys["image"], "n": N_POSTERS, "dim": 1280},
        {"modality": "text", "encoder_key": keys["text"], "n": N_TEXTS, "dim": 384},
    ]
    readme = query(
        store,
        "SELECT i.title, i.year, array_cosine_similarity(f.vector::FLOAT[1280], q.vector::FLOAT[1280]) AS sim "
        "FROM image_features f JOIN items i USING (item_id), "
        "(SELECT vector FROM image_features WHERE item_id = 1) q "
        "WHERE f.item_id <> 1 ORDER BY sim DESC LIMIT 5",
    ).to_pylist()
    assert len(readme) == 5 and all(-1 <= r["sim"] <= 1 for r in readme)
    assert [r["sim"] for r in readme] == sorted((r["sim"] for r in readme), reverse=True)
    assert readme[0]["title"] == "Toy Story 2"
    as_in_readme = query(  # the README's form, verbatim
        store,
        """WITH v AS (SELECT item_id, vector::FLOAT[1280] AS v FROM image_features)
SELECT i.title, i.year, array_cosine_similarity(v.v, t.v) AS similarity
FROM v JOIN items i USING (item_id),
     (SELECT v.v FROM v JOIN items USING (item_id) WHERE title = 'Toy Story' AND year = 1995) t
ORDER BY similarity DESC LIMIT 10""",
    ).to_pylist()
    assert [r["title"] for r in as_in_readme[:2]] == ["Toy Story", "Toy Story 2"] and len(as_in_readme) == 10
    assert as_in_readme[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    listed = query(store, "SELECT list_cosine_similarity(a.vector, b.vector) AS s FROM text_features a, text_features b "
                          f"WHERE a.item_id = {TOY_STORY} AND b.item_id = {TOY_STORY_2}").column("s")[0].as_py()
    ids, vecs = vectors(store, "text")
    v = dict(zip(ids.tolist(), vecs, strict=True))
    assert listed == pytest.approx(_cos(v[TOY_STORY], v[TOY_STORY_2]), abs=1e-4)


def test_similar_by_text_and_poster(encoded):
    from bonmf_pipe.errors import QueryError
    from bonmf_pipe.pipeline.encode import similar

    store = encoded.store
    by_text = similar(store, "Toy Story (1995)", "text", 5)
    assert by_text.column_names == ["rank", "item_id", "title", "year", "similarity"]
    assert by_text.column("rank").to_pylist() == [1, 2, 3, 4, 5]
    assert by_text.column("item_id")[0].as_py() == TOY_STORY_2 and TOY_STORY not in by_text.column("item_id").to_pylist()
    by_id = similar(store, TOY_STORY, "image", 3, key=encoded.summary.of("image").encoder_key[:6])
    assert by_id.column("title")[0].as_py() == "Toy Story 2"
    assert similar(store, "toy story", "text", 1).column("item_id").to_pylist() == [TOY_STORY_2]
    with pytest.raises(QueryError, match=r"Did you mean: Toy Story \(1995\)"):
        similar(store, "Toy Stroy (1995)")
    no_poster = next(i for i in store.read_table("items").to_pylist() if i["poster_path"] is None)
    with pytest.raises(QueryError, match="no current image vector"):
        similar(store, no_poster["item_id"], "image")


def test_similar_says_when_a_title_is_ambiguous(tmp_path):
    from bonmf_pipe.errors import QueryError
    from bonmf_pipe.pipeline.encode.similar import find_item

    from .conftest import write_items

    store = Store.open(tmp_path / "s", create=True)
    write_items(store, [
        {"item_id": 1, "title": "Hamlet", "year": 1990, "text": "a"},
        {"item_id": 2, "title": "Hamlet", "year": 1996, "text": "b"},
        {"item_id": 3, "title": "American President, The", "year": 1995, "text": "c"},
    ])
    with pytest.raises(QueryError, match=r"matches 2 items: Hamlet \(1990\) \[id 1\]; Hamlet \(1996\) \[id 2\]"):
        find_item(store, "Hamlet")
    assert find_item(store, "Hamlet (1996)")["item_id"] == 2
    assert find_item(store, "The American President (1995)")["item_id"] == 3
    assert find_item(store, "American President, The (1995)")["item_id"] == 3


def test_verify_accepts_feature_folders_and_catches_a_tampered_shard(encoded, copy_store):
    import json

    store = copy_store(encoded.root)
    assert verify_store(store).ok
    fs = resolve_feature_set(store, "image")
    shard = sorted(fs.folder.glob("part-*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = verify_store(store)
    assert not report.ok
    assert any(p.path.endswith(shard.name) and "checksum" in p.reason for p in report.problems)
    # A manifest whose key no longer matches its shards' metadata is caught too.
    text = resolve_feature_set(store, "text")
    manifest = json.loads((text.folder / "manifest.json").read_text())
    manifest["extra"]["encoder_key"] = "0" * 16
    (text.folder / "manifest.json").write_text(json.dumps(manifest))
    assert any("encoder key" in p.reason for p in verify_store(store).problems)


def test_shard_metadata_carries_key_and_spec(encoded):
    import json

    import pyarrow.parquet as pq

    fs = resolve_feature_set(encoded.store, "text")
    meta = pq.read_metadata(next(fs.folder.glob("part-*.parquet"))).metadata
    assert meta[b"bonmf.encoder_key"].decode() == fs.key
    spec = json.loads(meta[b"bonmf.spec"])
    assert spec["weights_sha256"] == fs.spec["weights_sha256"] and spec["dim"] == 384
    schema = pq.read_schema(next(fs.folder.glob("part-*.parquet")))
    assert schema.field("vector").type == pa.list_(pa.float16(), 384)
