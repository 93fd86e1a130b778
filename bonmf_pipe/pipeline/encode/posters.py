"""Reading posters for the image encoder: a DataLoader whose workers read, check and decode.

Each worker reads a poster's bytes, checks them against ``items.poster_sha256`` (a file
changed since ingest is rejected, never encoded under the wrong hash) and decodes it with
PIL at its NATIVE size, always ``.convert("RGB")`` (progressive and baseline JPEG, PNG,
WebP; greyscale and palette images become RGB). No resize on the CPU: the model's timm
preprocessing runs batched on the compute device (``resize.DeviceResize``).

A batch crosses the process boundary as ONE flat ``uint8`` tensor (the posters' ``H x W x 3``
bytes back to back, no padding) plus their sizes, never many small tensors (which would
exhaust file-descriptor sharing) and never a canvas padded to the largest poster (one
huge poster would blow a batch up to gigabytes).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


class PosterBatch(NamedTuple):
    index: Any  # int64 tensor [k]: positions (in the dataset) of the decoded posters
    pixels: Any  # uint8 tensor [sum of H*W*3]: the k posters, HWC, back to back (empty if k = 0)
    sizes: Any  # int64 tensor [k, 2]: (height, width) of each poster
    failures: list[tuple[int, str]]  # (position, reason) of posters that could not be used


class PosterDataset:
    """Posters by position: ``(position, HWC uint8 array or None, reason or None)``."""

    def __init__(self, paths: Sequence[str], hashes: Sequence[str]):
        self.paths = list(paths)
        self.hashes = list(hashes)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            data = Path(self.paths[i]).read_bytes()
        except OSError as exc:
            return i, None, f"poster_unreadable: {exc.strerror or exc}"
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.hashes[i]:
            return i, None, (
                f"poster_changed: the file's SHA-256 {digest[:12]}... differs from items.poster_sha256 "
                f"{self.hashes[i][:12]}...; re-run `bonmf-pipe ingest` to pick up the new poster"
            )
        try:
            return i, decode_rgb(data), None
        except Exception as exc:  # noqa: BLE001 - one bad poster must not stop the run
            return i, None, f"poster_undecodable: {type(exc).__name__}: {exc}"


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode with PIL as RGB at native size: ``uint8 [H, W, 3]``."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    return np.asarray(rgb, dtype=np.uint8)


def collate(items: list[tuple[int, np.ndarray | None, str | None]]) -> PosterBatch:
    import torch

    ok = [(i, a) for i, a, reason in items if reason is None]
    failures = [(i, reason) for i, _, reason in items if reason is not None]
    index = torch.tensor([i for i, _ in ok], dtype=torch.long)
    sizes = torch.tensor([a.shape[:2] for _, a in ok], dtype=torch.long).reshape(-1, 2)
    pixels = torch.empty(int(sum(a.size for _, a in ok)), dtype=torch.uint8)
    flat, at = pixels.numpy(), 0
    for _, a in ok:
        flat[at : at + a.size] = a.reshape(-1)
        at += a.size
    return PosterBatch(index, pixels, sizes, failures)


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # in the loader's worker process only


def poster_loader(dataset: PosterDataset, batch_size: int, num_workers: int, pin_memory: bool):
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )
