"""The two encoding loops: batches in, shards out.

Texts are sorted by token length (then item id) and cut into shards of ``rows_per_shard``
in that order, each shard into batches; a shard's rows are written sorted by item id.
Posters go through the DataLoader in item-id order; every ``rows_per_shard`` vectors make a
shard. Both are deterministic: the same missing rows give the same batches and vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from bonmf_pipe.pipeline.encode.image import ImageEncoder
from bonmf_pipe.pipeline.encode.posters import PosterDataset, decode_on_device, poster_loader
from bonmf_pipe.pipeline.encode.settings import Runtime
from bonmf_pipe.pipeline.encode.shards import FeatureWriter
from bonmf_pipe.pipeline.encode.text import TextEncoder, length_order

OnBatch = Callable[[int, int], None]  # (items done, of which encoded)


@dataclass(frozen=True)
class Failure:
    item_id: int
    content_hash: str
    source: str
    reason: str


def encode_texts(
    encoder: TextEncoder, todo: pa.Table, writer: FeatureWriter, batch_size: int, rows_per_shard: int, on_batch: OnBatch
) -> list[Failure]:
    if todo.num_rows == 0:
        return []
    ids = todo.column("item_id").to_numpy()
    hashes = todo.column("content_hash").to_pylist()
    tokens = encoder.tokenize(todo.column("input").to_pylist())
    order = length_order(tokens, ids.tolist())
    for start in range(0, len(order), rows_per_shard):
        chunk = order[start : start + rows_per_shard]
        vectors = np.empty((len(chunk), encoder.dim), dtype=np.float32)
        for b in range(0, len(chunk), batch_size):
            sel = chunk[b : b + batch_size]
            vectors[b : b + len(sel)] = encoder([tokens[i] for i in sel])
            on_batch(len(sel), len(sel))
        writer.write(ids[chunk], [hashes[i] for i in chunk], vectors)
    return []


class _ShardBuffer:
    """Collects (position, vector) rows and writes a shard every ``rows`` of them."""

    def __init__(self, writer: FeatureWriter, ids: np.ndarray, hashes: list[str], rows: int):
        self.writer, self.ids, self.hashes, self.rows = writer, ids, hashes, rows
        self.pos: list[np.ndarray] = []
        self.vec: list[np.ndarray] = []
        self.count = 0

    def add(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        self.pos.append(positions)
        self.vec.append(vectors)
        self.count += len(positions)
        while self.count >= self.rows:
            self._flush(self.rows)

    def close(self) -> None:
        if self.count:
            self._flush(self.count)

    def _flush(self, n: int) -> None:
        pos, vec = np.concatenate(self.pos), np.concatenate(self.vec)
        self.writer.write(self.ids[pos[:n]], [self.hashes[i] for i in pos[:n]], vec[:n])
        self.pos, self.vec, self.count = [pos[n:]], [vec[n:]], len(pos) - n


def encode_images(
    encoder: ImageEncoder,
    todo: pa.Table,
    writer: FeatureWriter,
    runtime: Runtime,
    batch_size: int,
    num_workers: int,
    rows_per_shard: int,
    on_batch: OnBatch,
) -> list[Failure]:
    ids = todo.column("item_id").to_numpy()
    hashes = todo.column("content_hash").to_pylist()
    paths = todo.column("input").to_pylist()
    tensor_backend = runtime.image_backend == "tensor"
    dataset = PosterDataset(paths, hashes, None if tensor_backend else encoder.resize)
    loader = poster_loader(dataset, batch_size, num_workers, pin_memory=runtime.device == "cuda")
    buffer = _ShardBuffer(writer, ids, hashes, rows_per_shard)
    failures: list[Failure] = []

    def fail(pos: int, reason: str) -> None:
        failures.append(Failure(int(ids[pos]), hashes[pos], paths[pos], reason))

    for batch in loader:
        index = batch.index.numpy()
        for pos, reason in batch.failures:
            fail(pos, reason)
        pixels = batch.pixels
        if tensor_backend and pixels is not None:
            ok, pixels, bad = decode_on_device(pixels, encoder.device, encoder.resize)
            for j, reason in bad:
                fail(int(index[j]), reason)
            index = index[ok]
        if len(index):
            buffer.add(index, encoder(pixels))
        on_batch(len(batch.index) + len(batch.failures), len(index))
    buffer.close()
    return failures
