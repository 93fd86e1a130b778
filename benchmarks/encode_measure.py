"""Encoder ceilings with the project's own encoder classes (no store needed; gpu_check uses it too).

- forward only: the encoder's forward pass over inputs ALREADY ON THE DEVICE (texts
  tokenized and padded there in the batches ``encode`` makes; posters decoded, resized and
  normalised there), every batch shape run once untimed first (warm kernels);
- decode only: the best decoding this machine does with all its loader workers: the
  project's poster loader (read, hash check, PIL decode at native size, packed into one
  tensor per batch), no resize and no model.
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


def text_batches(encoder: Any, texts: Sequence[str], batch_size: int) -> tuple[list[Any], float]:
    """The device-resident (ids, mask) batches ``encode`` would make, and the tokenize rate."""
    from bonmf_pipe.pipeline.encode.text import length_order

    t0 = time.perf_counter()
    tokens = encoder.tokenize(list(texts))
    tokenize_per_s = len(texts) / (time.perf_counter() - t0)
    order = length_order(tokens, list(range(len(tokens))))
    batches = [encoder.pad([tokens[i] for i in order[b : b + batch_size]]) for b in range(0, len(order), batch_size)]
    _sync(encoder.device)
    return batches, tokenize_per_s


def text_forward(encoder: Any, texts: Sequence[str], batch_size: int) -> dict[str, float]:
    """Texts/s of the warm forward pass alone over inputs already on the device."""
    batches, tokenize_per_s = text_batches(encoder, texts, batch_size)
    shapes = {}
    for ids, mask in batches:
        shapes.setdefault(tuple(ids.shape), (ids, mask))
    for ids, mask in shapes.values():  # warm: every shape once
        encoder.forward(ids, mask)
    _sync(encoder.device)
    t0 = time.perf_counter()
    for ids, mask in batches:
        encoder.forward(ids, mask)
    _sync(encoder.device)
    seconds = time.perf_counter() - t0
    return {"items": len(texts), "forward_per_s": len(texts) / seconds, "tokenize_per_s": tokenize_per_s,
            "distinct_shapes": len(shapes)}


def image_decode(paths: Sequence[str], hashes: Sequence[str], batch_size: int, workers: int, pin_memory: bool,
                 keep: int = 0) -> tuple[dict[str, float], list[Any]]:
    """Posters/s of the loader alone (read, hash check, PIL decode at native size, packing).

    Also returns the first ``keep`` batches (for the forward-only measurement)."""
    from bonmf_pipe.pipeline.encode.posters import PosterDataset, poster_loader

    loader = poster_loader(PosterDataset(paths, hashes), batch_size, workers, pin_memory=pin_memory)
    kept, n = [], 0
    t0 = time.perf_counter()
    for batch in loader:
        n += len(batch.index)
        if len(kept) < keep and len(batch.index):
            kept.append(batch)
    seconds = time.perf_counter() - t0
    if not n:
        raise RuntimeError("no poster decoded: nothing to measure")
    return {"items": n, "decode_per_s": n / seconds, "workers": workers}, kept


def image_forward(encoder: Any, batches: Sequence[Any], items: int) -> dict[str, float]:
    """Posters/s of the forward pass alone over ``items`` posters whose model input is
    already on the device (the given batches preprocessed once, then cycled)."""
    inputs = [encoder.preprocess(b.pixels, b.sizes, encoder.device) for b in batches]
    encoder.forward(inputs[0])  # warm-up
    if len(inputs[-1]) != len(inputs[0]):
        encoder.forward(inputs[-1])
    _sync(encoder.device)
    done, k = 0, 0
    t0 = time.perf_counter()
    while done < items:
        x = inputs[k % len(inputs)]
        encoder.forward(x)
        done += len(x)
        k += 1
    _sync(encoder.device)
    return {"items": done, "forward_per_s": done / (time.perf_counter() - t0)}


class NullWriter:
    """Stands in for the FeatureWriter where no store exists (gpu_check): counts rows."""

    def __init__(self) -> None:
        self.rows = 0

    def write(self, ids: np.ndarray, hashes: list[str], vectors: np.ndarray) -> None:
        self.rows += len(ids)
