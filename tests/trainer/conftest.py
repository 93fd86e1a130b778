"""Small synthetic stores for the trainer tests: items with a hidden taste vector that the
text (and, for half of the items, the image) vectors reveal; ratings follow user x item taste."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bonmf_pipe.featurestore import ShardEntry, Store, write_manifest
from bonmf_pipe.featurestore.features import feature_dir, text_content_hash
from bonmf_pipe.featurestore.manifest import Manifest
from bonmf_pipe.featurestore.schema import ITEMS, RATINGS, feature_schema


def write_feature_set(store: Store, modality: str, key: str, item_ids, hashes, vectors: np.ndarray, shards: int = 2) -> None:
    folder = feature_dir(store, modality, key)
    folder.mkdir(parents=True, exist_ok=True)
    dim = vectors.shape[1]
    schema = feature_schema(dim, "float32")
    entries = []
    for k, idx in enumerate(np.array_split(np.arange(len(item_ids)), shards)):
        path = folder / f"part-{k:05d}.parquet"
        table = pa.table(
            {
                "item_id": pa.array(np.asarray(item_ids)[idx], pa.int64()),
                "content_hash": pa.array([hashes[i] for i in idx], pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[idx].ravel(), pa.float32()), dim),
            },
            schema=schema,
        )
        pq.write_table(table, path)
        entries.append(ShardEntry.of(folder, path, len(idx)))
    extra = {"encoder_key": key, "spec": {"model": "synthetic"}, "dim": dim, "dtype": "float32", "modality": modality}
    write_manifest(folder, Manifest(name=f"features/{modality}/{key}", kind="features", files=tuple(entries), extra=extra))


def build_store(
    root: Path, n_users: int = 120, n_items: int = 80, per_user: int = 25, seed: int = 0,
    rows_per_file: int = 2_000_000, row_group_size: int = 128 * 1024, source: Path | None = None,
) -> Store:
    rng = np.random.default_rng(seed)
    store = Store.open(root, create=True)
    item_ids = np.arange(1, n_items + 1) * 10
    taste = rng.normal(size=(n_items, 4))
    texts = [f"movie {i}" for i in item_ids]
    poster = np.arange(n_items) % 2 == 0
    items = pa.table(
        {
            "item_id": pa.array(item_ids, pa.int64()),
            "title": pa.array(texts),
            "year": pa.array([2000] * n_items, pa.int32()),
            "genres": pa.array([["Drama"]] * n_items, pa.list_(pa.string())),
            "tags": pa.array([[]] * n_items, pa.list_(pa.string())),
            "text": pa.array(texts),
            "poster_path": pa.array([f"/p/{i}.jpg" if p else None for i, p in zip(item_ids, poster)]),
            "poster_sha256": pa.array([f"sha{i}" if p else None for i, p in zip(item_ids, poster)]),
            "poster_width": pa.array([100 if p else None for p in poster], pa.int32()),
            "poster_height": pa.array([150 if p else None for p in poster], pa.int32()),
            "imdb_id": pa.array([None] * n_items, pa.string()),
            "tmdb_id": pa.array([None] * n_items, pa.int64()),
        }
    )
    with store.writer("items", ITEMS) as w:
        w.write(items)
        w.commit()
    users = np.arange(1, n_users + 1)
    prefs = rng.normal(size=(n_users, 4))
    rows_u, rows_i = [], []
    for u in range(n_users):
        picked = rng.choice(n_items, size=per_user, replace=False)
        rows_u.extend([u] * per_user)
        rows_i.extend(picked)
    rows_u, rows_i = np.array(rows_u), np.array(rows_i)
    score = 3.0 + 0.8 * (prefs[rows_u] * taste[rows_i]).sum(1) + 0.6 * taste[rows_i, 0] + rng.normal(0, 0.3, len(rows_u))
    ratings = pa.table(
        {
            "user_id": pa.array(users[rows_u], pa.int64()),
            "item_id": pa.array(item_ids[rows_i], pa.int64()),
            "rating": pa.array(np.clip(np.round(score * 2) / 2, 0.5, 5.0), pa.float32()),
            "timestamp": pa.array(1_000_000 + np.arange(len(rows_u)) * 7, pa.int64()),
        }
    )
    settings = {"path": str(source) if source else str(root / "source")}
    with store.writer("ratings", RATINGS, settings, rows_per_file=rows_per_file, row_group_size=row_group_size) as w:
        w.write(ratings)
        w.commit()
    mix = rng.normal(size=(4, 16))
    text_vec = (taste @ mix + rng.normal(0, 0.05, (n_items, 16))).astype(np.float32)
    write_feature_set(store, "text", "synthetic-text-abc123", item_ids, [text_content_hash(t) for t in texts], text_vec)
    img_vec = (taste @ rng.normal(size=(4, 24)) + rng.normal(0, 0.05, (n_items, 24))).astype(np.float32)
    write_feature_set(
        store, "image", "synthetic-image-def456", item_ids[poster], [f"sha{i}" for i in item_ids[poster]], img_vec[poster]
    )
    return store


@pytest.fixture
def small_store(tmp_path: Path) -> Store:
    return build_store(tmp_path / "store")
