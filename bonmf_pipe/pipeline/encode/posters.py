"""Reading posters for the image encoder: a DataLoader whose workers read, check and decode.

Each worker reads a poster's bytes, checks them against ``items.poster_sha256`` (a file
changed since ingest is rejected, never encoded under the wrong hash) and then either

- ``pil`` backend: decodes with PIL, always ``.convert("RGB")`` (some posters are
  greyscale), applies the model's timm resize/crop and returns ``uint8`` CHW numpy;
- ``tensor`` backend: returns the raw bytes as a numpy array; the main process decodes on
  the compute device (``torchvision.io.decode_jpeg`` with nvJPEG on CUDA, batched, with a
  per-image CPU fallback since nvJPEG refuses some real posters) and resizes tensors there.

A batch crosses the process boundary as one ``uint8`` tensor (or a list of byte arrays),
never many small tensors, which would exhaust file-descriptor sharing.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


class PosterBatch(NamedTuple):
    index: Any  # int64 tensor: positions (in the dataset) of the decoded posters
    pixels: Any  # uint8 tensor [k, 3, H, W] (pil), list of uint8 byte arrays (tensor backend), None if k = 0
    failures: list[tuple[int, str]]  # (position, reason) of posters that could not be used


class PosterDataset:
    """Posters by position: ``(position, array or None, reason or None)``."""

    def __init__(self, paths: Sequence[str], hashes: Sequence[str], resize: Callable | None):
        self.paths = list(paths)
        self.hashes = list(hashes)
        self.resize = resize  # None: return raw bytes (tensor backend)

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
        if self.resize is None:
            return i, np.frombuffer(data, dtype=np.uint8).copy(), None
        try:
            return i, pil_pixels(data, self.resize), None
        except Exception as exc:  # noqa: BLE001 - one bad poster must not stop the run
            return i, None, f"poster_undecodable: {type(exc).__name__}: {exc}"


def pil_pixels(data: bytes, resize: Callable) -> np.ndarray:
    """Decode with PIL as RGB, resize/crop, return ``uint8`` CHW."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        img = resize(im.convert("RGB"))
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def collate(items: list[tuple[int, np.ndarray | None, str | None]]) -> PosterBatch:
    import torch

    ok = [(i, a) for i, a, reason in items if reason is None]
    failures = [(i, reason) for i, _, reason in items if reason is not None]
    index = torch.tensor([i for i, _ in ok], dtype=torch.long)
    arrays = [a for _, a in ok]
    if not arrays:
        pixels = None
    elif arrays[0].ndim == 3:  # pil backend: decoded and resized
        pixels = torch.from_numpy(np.stack(arrays))
    else:  # tensor backend: raw bytes
        pixels = arrays
    return PosterBatch(index, pixels, failures)


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
    )


def decode_on_device(raws: list[np.ndarray], device: Any, resize: Callable) -> tuple[list[int], Any, list[tuple[int, str]]]:
    """Decode byte arrays on ``device`` and resize/crop them as tensors.

    Returns (positions in ``raws`` that decoded, uint8 tensor [k, 3, H, W] on the device,
    failures). On CUDA the JPEGs are decoded in one nvJPEG call; if that call fails, each
    image is tried alone, then on the CPU (torchvision, then PIL).
    """
    import torch

    tensors = [torch.from_numpy(r if r.flags.writeable else r.copy()) for r in raws]
    decoded: list[Any] = [None] * len(raws)
    failures: list[tuple[int, str]] = []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they still work.
        warnings.simplefilter("ignore", DeprecationWarning)
        if device.type == "cuda":
            _decode_jpegs_cuda(tensors, decoded, device)
        for i, t in enumerate(tensors):
            if decoded[i] is None:
                try:
                    decoded[i] = _decode_cpu(t, raws[i]).to(device, non_blocking=True)
                except Exception as exc:  # noqa: BLE001 - one bad poster must not stop the run
                    failures.append((i, f"poster_undecodable: {type(exc).__name__}: {exc}"))
    ok = [i for i in range(len(raws)) if decoded[i] is not None]
    if not ok:
        return [], torch.empty((0, 3, 1, 1), dtype=torch.uint8, device=device), failures
    return ok, torch.stack([resize(decoded[i]) for i in ok]), failures


def _decode_jpegs_cuda(tensors: list[Any], decoded: list[Any], device: Any) -> None:
    from torchvision.io import ImageReadMode, decode_jpeg

    jpeg = [i for i, t in enumerate(tensors) if t.numel() > 2 and int(t[0]) == 0xFF and int(t[1]) == 0xD8]
    if not jpeg:
        return
    try:
        out = decode_jpeg([tensors[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)
        for i, img in zip(jpeg, out, strict=True):
            decoded[i] = img
        return
    except RuntimeError:
        pass  # nvJPEG refused one of them ("Failed to get image info"): go one by one
    for i in jpeg:
        try:
            decoded[i] = decode_jpeg(tensors[i], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded[i] = None  # the CPU fallback takes it


def _decode_cpu(t: Any, raw: np.ndarray) -> Any:
    import torch
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(t, mode=ImageReadMode.RGB)
    except RuntimeError:
        from PIL import Image

        with Image.open(io.BytesIO(raw.tobytes())) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy())
