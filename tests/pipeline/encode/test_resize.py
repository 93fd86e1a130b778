"""The device-side preprocessing reproduces timm's own CPU transform on real posters.

Tolerance (measured on these posters): every normalised pixel within 2 ``uint8`` levels of
timm's ``create_transform`` (1 level for the float kernel that CUDA uses), fewer than 1% of
values differing at all, and EfficientNet-Lite0 features with cosine similarity >= 0.999
(measured: above 0.99999).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.pipeline.encode.posters import collate, decode_rgb
from bonmf_pipe.pipeline.encode.resize import DeviceResize

CPU = torch.device("cpu")
GREYSCALE = 1789


def _posters(folder) -> list[np.ndarray]:
    """40 real posters (mixed native sizes, the greyscale one) and four reshaped copies:
    landscape, 8x larger (a downscale), smaller than the crop (an upscale), already square."""
    from PIL import Image

    names = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem))[:39] + [folder / f"{GREYSCALE}.jpg"]
    arrays = [decode_rgb(p.read_bytes()) for p in names]
    im = Image.fromarray(arrays[0])
    for size in ((400, 250), (1480, 2224), (100, 150), (256, 256)):
        arrays.append(np.asarray(im.resize(size, Image.BICUBIC)))
    return arrays


def _timm(arch: str):
    import timm
    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config({}, model=timm.create_model(arch, pretrained=False))
    return cfg, create_transform(**cfg, is_training=False)


def _reference(transform, arrays) -> torch.Tensor:
    from PIL import Image

    return torch.stack([transform(Image.fromarray(a)) for a in arrays])


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "vit_base_patch16_224"])
@pytest.mark.parametrize("kernel,levels", [("uint8", 2), ("float", 1)])
def test_device_resize_matches_timms_cpu_transform(ml_1m_posters, arch, kernel, levels):
    torch.set_num_threads(1)
    cfg, transform = _timm(arch)
    arrays = _posters(ml_1m_posters)
    assert len({a.shape for a in arrays}) >= 6 and arrays[39].std(axis=2).max() == 0  # mixed sizes; grey as RGB
    batch = collate([(i, a, None) for i, a in enumerate(arrays)])
    got = DeviceResize.from_data_config(cfg)(batch.pixels, batch.sizes, CPU, kernel=kernel)
    want = _reference(transform, arrays)
    assert got.shape == want.shape == (len(arrays), 3, 224, 224)
    diff = (got - want).abs() * torch.tensor(cfg["std"]).view(1, 3, 1, 1) * 255  # in uint8 levels
    assert diff.max().item() <= levels + 1e-3
    assert (diff > 0.5).float().mean().item() < 0.01


def test_efficientnet_lite0_features_match_timms_transform(ml_1m_posters):
    from bonmf_pipe.pipeline.encode.image import ImageEncoder, image_options
    from bonmf_pipe.pipeline.encode.registry import resolve_source
    from bonmf_pipe.pipeline.encode.settings import EncodeSettings, resolve_runtime
    from timm.data import create_transform

    torch.set_num_threads(1)
    settings = EncodeSettings(device="cpu")
    runtime = resolve_runtime(settings)
    encoder = ImageEncoder(resolve_source("image", "offline-efficientnet-lite0"), image_options(settings, runtime), runtime)
    arrays = _posters(ml_1m_posters)[::2]
    want = _reference(create_transform(**encoder.data_config, is_training=False), arrays)
    with torch.inference_mode():
        ref = encoder.model(want.contiguous(memory_format=torch.channels_last)).float().numpy()
    batch = collate([(i, a, None) for i, a in enumerate(arrays)])
    for kernel in ("uint8", "float"):
        x = encoder.preprocess(batch.pixels, batch.sizes, CPU, kernel=kernel)
        with torch.inference_mode():
            got = encoder.model(x.contiguous(memory_format=torch.channels_last)).float().numpy()
        assert _cosines(got, ref).min() >= 0.999, kernel
    assert _cosines(encoder(batch.pixels, batch.sizes), ref).min() >= 0.999  # the encoder's own call


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_posters_of_one_size_need_not_be_adjacent(ml_1m_posters):
    cfg, _ = _timm("efficientnet_lite0")
    resize = DeviceResize.from_data_config(cfg)
    a = decode_rgb((ml_1m_posters / "1.jpg").read_bytes())
    b = np.ascontiguousarray(a[:200, :150])
    c = np.ascontiguousarray(a[::-1])
    together = collate([(0, a, None), (1, b, None), (2, c, None)])
    out = resize(together.pixels, together.sizes, CPU)
    for i, x in enumerate((a, b, c)):
        alone = collate([(0, x, None)])
        assert torch.equal(out[i : i + 1], resize(alone.pixels, alone.sizes, CPU))


@pytest.mark.parametrize("change", [{"crop_mode": "border"}, {"interpolation": "lanczos"}, {"crop_pct": 1.2},
                                    {"input_size": (3, 224, 160)}])
def test_preprocessing_it_cannot_reproduce_is_refused(change):
    cfg, _ = _timm("efficientnet_lite0")
    with pytest.raises(ConfigError, match="cannot reproduce"):
        DeviceResize.from_data_config({**cfg, **change})


def test_squash_mode_follows_timm():
    cfg, _ = _timm("efficientnet_lite0")
    resize = DeviceResize.from_data_config({**cfg, "crop_mode": "squash"})
    assert resize.resized_size(278, 185) == (256, 256)
    plain = DeviceResize.from_data_config(cfg)
    assert plain.resized_size(278, 185) == (384, 256) and plain.resized_size(185, 278) == (256, 384)
