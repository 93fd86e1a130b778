"""Posters that cannot be used are rejected and skipped; the tensor decode path and its fallbacks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.features import feature_sets, resolve_feature_set
from bonmf_pipe.pipeline.encode import EncodeSettings, encode
from bonmf_pipe.pipeline.encode.posters import decode_on_device

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


def test_tensor_backend_decodes_on_the_device_and_keys_separately(ml_1m_posters, tmp_path):
    from PIL import Image

    png = tmp_path / "poster.png"
    with Image.open(ml_1m_posters / "2.jpg") as im:
        im.save(png)
    store = Store.open(tmp_path / "s", create=True)
    write_items(store, _poster_items(ml_1m_posters, tmp_path, [
        {"item_id": 20, "title": "png", "text": "p", "poster_path": str(png), "poster_sha256": _sha(png)},
    ]))
    encode(store, EncodeSettings(modalities=("image",), image_backend="pil", **THREADS))
    encode(store, EncodeSettings(modalities=("image",), image_backend="tensor", **THREADS))
    sets = {fs.spec["preprocessing"]["backend"]: fs for fs in feature_sets(store, "image")}
    assert set(sets) == {"pil", "tensor"} and sets["pil"].key != sets["tensor"].key
    assert resolve_feature_set(store, "image").key == sets["tensor"].key  # the newest
    ids_pil, pil = vectors(store, "image", sets["pil"].key)
    ids_t, ten = vectors(store, "image", sets["tensor"].key)
    assert ids_pil.tolist() == ids_t.tolist() == [1, 2, 20, GREYSCALE]
    cos = (pil * ten).sum(1) / (np.linalg.norm(pil, axis=1) * np.linalg.norm(ten, axis=1))
    assert cos.min() > 0.97  # torchvision's resize is not PIL's, but close
    assert np.allclose(pil[1], pil[2], atol=0.05)  # the PNG copy of poster 2 gives poster 2's vector


def test_decode_on_device_falls_back_per_image(ml_1m_posters):
    import torch
    from torchvision import transforms as T

    raws = [np.fromfile(ml_1m_posters / "1.jpg", dtype=np.uint8), np.frombuffer(b"\xff\xd8junk", dtype=np.uint8),
            np.fromfile(ml_1m_posters / f"{GREYSCALE}.jpg", dtype=np.uint8)]
    resize = T.Compose([T.Resize(64), T.CenterCrop(64)])
    ok, pixels, failures = decode_on_device(raws, torch.device("cpu"), resize)
    assert ok == [0, 2] and pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.uint8
    assert [i for i, _ in failures] == [1] and failures[0][1].startswith("poster_undecodable:")
    grey = pixels[1].float()
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # grey expanded to RGB


@pytest.mark.parametrize("bad", [{"shard": (2, 2)}, {"modalities": ("audio",)}, {"device": "tpu"},
                                 {"store_dtype": "int8"}, {"text_pooling": "max"}, {"batch_size": 0}])
def test_settings_refuse_bad_values(bad):
    from bonmf_pipe.errors import ConfigError

    with pytest.raises(ConfigError):
        EncodeSettings(**bad)
