"""Poster JPEGs of the synthetic sample, drawn with PIL from each item's latent factors.

What a poster shows, and which part of the model it comes from:

- background hue: the angle of (factor 0, factor 1), so the hue turns with those two factors;
- background brightness: the item's appeal (bias plus population taste): better films are brighter;
- shape kind (circle, square, triangle, diamond, bars, ring): the strongest of factors 2..;
  shapes are drawn in the complementary hue;
- shape count (1 to 6): the magnitude of that strongest factor;
- a title band at the bottom with the title in PIL's default font.

Each poster depends only on its own item (and the seed), so the pool of worker processes
that draws them changes nothing in the bytes written.
"""

from __future__ import annotations

import colorsys
import io
import math
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bonmf_pipe.pipeline.sample.latent import STREAM_POSTERS, rng_for

SHAPES = ("circle", "square", "triangle", "diamond", "bars", "ring")
POSTER_SIZE = (185, 278)  # width, height: like the ML-1M posters
JPEG_QUALITY = 85


@dataclass(frozen=True)
class PosterSpec:
    """Everything needed to draw one poster (plain values, cheap to send to a worker)."""

    item_id: int
    title: str
    hue: float  # 0..1
    brightness: float  # 0..1 (HSV value)
    shape: str
    count: int


def poster_specs(ids: np.ndarray, titles: list[str], z: np.ndarray, appeal: np.ndarray) -> list[PosterSpec]:
    """One spec per item from its standardised factors ``z`` and appeal (see the docstring)."""
    hue = (np.arctan2(z[:, 1 % z.shape[1]], z[:, 0]) / (2 * math.pi)) % 1.0
    brightness = 0.35 + 0.55 / (1.0 + np.exp(-appeal / 0.3))
    rest = z[:, 2:] if z.shape[1] > 2 else z
    strongest = np.argmax(np.abs(rest), axis=1)
    value = rest[np.arange(len(z)), strongest]
    kind = (2 * strongest + (value < 0)) % len(SHAPES)
    count = np.clip(1 + np.floor(np.abs(value) * 2), 1, 6).astype(int)
    return [
        PosterSpec(int(i), t, float(h), float(b), SHAPES[k], int(c))
        for i, t, h, b, k, c in zip(ids.tolist(), titles, hue, brightness, kind, count, strict=True)
    ]


def _rgb(hue: float, sat: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, sat, value)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_poster(spec: PosterSpec, seed: int, size: tuple[int, int] = POSTER_SIZE) -> bytes:
    """The JPEG bytes of one poster."""
    from PIL import Image, ImageDraw

    w, h = size
    rng = rng_for(seed, STREAM_POSTERS, spec.item_id)
    img = Image.new("RGB", size, _rgb(spec.hue, 0.75, spec.brightness))
    draw = ImageDraw.Draw(img)
    fill = _rgb(spec.hue + 0.5, 0.8, 0.95)
    for _ in range(spec.count):
        r = int(rng.integers(w // 10, w // 4))
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, int(h * 0.8) - r))
        _shape(draw, spec.shape, cx, cy, r, fill)
    draw.rectangle((0, int(h * 0.85), w, h), fill=(20, 20, 20))
    draw.text((6, int(h * 0.87)), spec.title[:28], fill=(235, 235, 235))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _shape(draw, kind: str, cx: int, cy: int, r: int, fill: tuple[int, int, int]) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif kind == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif kind == "bars":
        for k in range(3):
            y = cy - r + k * (2 * r // 3)
            draw.rectangle((cx - r, y, cx + r, y + r // 3), fill=fill)
    else:
        draw.ellipse(box, outline=fill, width=max(2, r // 4))


def _draw_chunk(args: tuple[list[PosterSpec], int, str]) -> int:
    specs, seed, folder = args
    for spec in specs:
        (Path(folder) / f"{spec.item_id}.jpg").write_bytes(draw_poster(spec, seed))
    return len(specs)


def draw_posters(specs: list[PosterSpec], seed: int, folder: Path, workers: int = 0, chunk: int = 64) -> Iterator[int]:
    """Write ``<item_id>.jpg`` for every spec into ``folder``; yields the number done per chunk.

    ``workers``: processes to draw with (0: one per CPU; 1: in this process).
    """
    workers = workers or os.cpu_count() or 1
    jobs = [(specs[i : i + chunk], seed, str(folder)) for i in range(0, len(specs), chunk)]
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield _draw_chunk(job)
        return
    # forkserver: the parent may run polars/torch threads, which a plain fork must not copy
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        yield from pool.map(_draw_chunk, jobs)
