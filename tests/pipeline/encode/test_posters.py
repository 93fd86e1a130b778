"""Posters that cannot be used are rejected and skipped; every format decodes in the loader workers."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bonmf_pipe.featurestore import Store
from bonmf_pipe.pipeline.encode import EncodeSettings, encode

from .conftest import THREADS, vectors, write_items

GREYSCALE = 1789  # the one real ML-1M poster that is a greyscale JPEG


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _poster_items(posters, tmp_path, extra: list[dict]) -> list[dict]:
    rows = []
    for i in (1, 2, GREYSCALE):
        p = posters / f"{i}.jpg"
        rows.append({"item_id": i, "title": f"movie {i}", "text": f"movie {i}", "poster_path": str(p), "poster_sha256": _sha(p)})
    return rows + extra


def test_a_poster_that_fails_at_encode_time_is_rejected_and_skipped(ml_1m_posters, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)  # a JPEG header, then noise
    store = Store.open(tmp_path / "s", create=True)
    write_items(store, _poster_items(ml_1m_posters, tmp_path, [
        {"item_id": 10, "title": "corrupt", "text": "c", "poster_path": str(corrupt), "poster_sha256": _sha(corrupt)},
        {"item_id": 11, "title": "changed", "text": "c", "poster_path": str(ml_1m_posters / "3.jpg"), "poster_sha256": "0" * 64},
        {"item_id": 12, "title": "gone", "text": "c", "poster_path": str(tmp_path / "gone.jpg"), "poster_sha256": "1" * 64},
    ]))
    summary = encode(store, EncodeSettings(modalities=("image",), **THREADS))
    image = summary.of("image")
    assert (image.items, image.encoded, image.failed, summary.rejects_added) == (6, 3, 3, 3)
    ids, vecs = vectors(store, "image")
    assert ids.tolist() == [1, 2, GREYSCALE] and vecs.shape == (3, 1280)
    rejects = {r["source"]: r for r in store.read_table("rejects").to_pylist()}
    assert rejects[str(corrupt)]["reason"].startswith("poster_undecodable:")
    assert rejects[str(ml_1m_posters / "3.jpg")]["reason"].startswith("poster_changed:")
    assert rejects[str(tmp_path / "gone.jpg")]["reason"].startswith("poster_unreadable:")
    assert all(r["stage"] == "encode" and r["line"] is None for r in rejects.values())
    # The next run does not retry them (nothing new: no model is loaded) ...
    events = []
    again = encode(store, EncodeSettings(modalities=("image",), **THREADS), forward_hook=events.append)
    assert events == [] and (again.of("image").excluded, again.of("image").skipped) == (3, 3)
    # ... unless asked to; failing again, they are not recorded twice.
    retry = encode(store, EncodeSettings(modalities=("image",), retry_rejected=True, **THREADS))
    assert (retry.of("image").failed, retry.rejects_added, store.read_table("rejects").num_rows) == (3, 0, 3)


def test_png_webp_greyscale_and_huge_posters_decode_in_worker_processes(ml_1m_posters, tmp_path):
    """Two loader worker processes decode every format at native size; one flat uint8 tensor per batch."""
    from PIL import Image

    with Image.open(ml_1m_posters / "2.jpg") as im:
        assert im.info.get("progressive") or im.info.get("progression")  # a real progressive JPEG
        im.save(tmp_path / "poster.png")
        im.save(tmp_path / "poster.webp", lossless=True)
        im.resize((1850, 2780), Image.BICUBIC).save(tmp_path / "huge.jpg", quality=95)
    store = Store.open(tmp_path / "s", create=True)
    extra = [{"item_id": 20 + k, "title": name, "text": name, "poster_path": str(tmp_path / name),
              "poster_sha256": _sha(tmp_path / name)} for k, name in enumerate(["poster.png", "poster.webp", "huge.jpg"])]
    write_items(store, _poster_items(ml_1m_posters, tmp_path, extra))
    summary = encode(store, EncodeSettings(modalities=("image",), num_workers=2, batch_size=4, **THREADS))
    assert (summary.of("image").encoded, summary.of("image").failed) == (6, 0)
    ids, vecs = vectors(store, "image")
    assert ids.tolist() == [1, 2, 20, 21, 22, GREYSCALE] and vecs.shape == (6, 1280)
    assert np.array_equal(vecs[1], vecs[2]) and np.array_equal(vecs[1], vecs[3])  # PNG and WebP: poster 2's pixels
    cos = float(vecs[1] @ vecs[4] / (np.linalg.norm(vecs[1]) * np.linalg.norm(vecs[4])))
    assert cos > 0.98  # the 10x poster is downscaled (antialiased) back to about the same input


def test_the_removed_tensor_backend_is_refused_with_a_fix():
    from bonmf_pipe.errors import ConfigError

    with pytest.raises(ConfigError, match="Drop the option"):
        EncodeSettings(image_backend="tensor")


def test_collate_packs_native_sizes_back_to_back():
    from bonmf_pipe.pipeline.encode.posters import collate

    a, b = np.full((3, 2, 3), 7, np.uint8), np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    batch = collate([(0, a, None), (1, None, "poster_unreadable: gone"), (2, b, None)])
    assert batch.index.tolist() == [0, 2] and batch.sizes.tolist() == [[3, 2], [4, 5]]
    assert batch.pixels.dtype == torch_uint8() and batch.pixels.numel() == a.size + b.size
    assert np.array_equal(batch.pixels.numpy()[a.size :].reshape(4, 5, 3), b)
    assert batch.failures == [(1, "poster_unreadable: gone")]


def torch_uint8():
    import torch

    return torch.uint8


@pytest.mark.parametrize("bad", [{"shard": (2, 2)}, {"modalities": ("audio",)}, {"device": "tpu"},
                                 {"store_dtype": "int8"}, {"text_pooling": "max"}, {"batch_size": 0}])
def test_settings_refuse_bad_values(bad):
    from bonmf_pipe.errors import ConfigError

    with pytest.raises(ConfigError):
        EncodeSettings(**bad)
