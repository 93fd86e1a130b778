"""Encoder ceilings with the project's own encoder classes (no store needed; gpu_check uses it too).

- forward only: the encoder's forward pass over inputs already tokenized / decoded and
  resized, in the same batches (same device, batch size, dtype) as ``encode``;
- decode only: the poster loader (read, hash check, decode, resize) and, for the tensor
  backend, the on-device decode, with no model call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def text_forward(encoder: Any, texts: Sequence[str], batch_size: int) -> dict[str, float]:
    """Texts/s of the forward pass alone (tokenized beforehand, length-ordered batches)."""
    from bonmf_pipe.pipeline.encode.text import length_order

    t0 = time.perf_counter()
    tokens = encoder.tokenize(list(texts))
    tokenize_s = time.perf_counter() - t0
    order = length_order(tokens, list(range(len(tokens))))
    encoder([tokens[i] for i in order[:batch_size]])  # warm-up batch (kernels, allocator)
    t0 = time.perf_counter()
    for b in range(0, len(order), batch_size):
        encoder([tokens[i] for i in order[b : b + batch_size]])
    _sync(getattr(encoder, "device", "cpu"))
    forward_s = time.perf_counter() - t0
    return {"items": len(texts), "forward_per_s": len(texts) / forward_s, "tokenize_per_s": len(texts) / tokenize_s}


def image_decode(encoder: Any, runtime: Any, paths: Sequence[str], hashes: Sequence[str], batch_size: int,
                 workers: int) -> tuple[dict[str, float], Any]:
    """Posters/s of reading + decoding + resizing alone; also returns the decoded batches."""
    import torch

    from bonmf_pipe.pipeline.encode.posters import PosterDataset, decode_on_device, poster_loader

    tensor = runtime.image_backend == "tensor"
    loader = poster_loader(PosterDataset(paths, hashes, None if tensor else encoder.resize), batch_size, workers,
                           pin_memory=runtime.device == "cuda")
    batches, n = [], 0
    t0 = time.perf_counter()
    for batch in loader:
        pixels = batch.pixels
        if tensor and pixels is not None:
            _, pixels, _ = decode_on_device(pixels, encoder.device, encoder.resize)
        if pixels is not None:
            n += len(pixels)
            batches.append(pixels)
    _sync(encoder.device)
    seconds = time.perf_counter() - t0
    if not batches:
        raise RuntimeError("no poster decoded: nothing to measure")
    return {"items": n, "decode_per_s": n / seconds}, torch.cat([b.to(encoder.device) for b in batches])


def image_forward(encoder: Any, pixels: Any, batch_size: int) -> dict[str, float]:
    """Posters/s of the forward pass alone over pixels already decoded (on the device)."""
    encoder(pixels[:batch_size])  # warm-up
    t0 = time.perf_counter()
    for b in range(0, len(pixels), batch_size):
        encoder(pixels[b : b + batch_size])
    _sync(encoder.device)
    return {"items": len(pixels), "forward_per_s": len(pixels) / (time.perf_counter() - t0)}


class NullWriter:
    """Stands in for the FeatureWriter where no store exists (gpu_check): counts rows."""

    def __init__(self) -> None:
        self.rows = 0

    def write(self, ids: np.ndarray, hashes: list[str], vectors: np.ndarray) -> None:
        self.rows += len(ids)
