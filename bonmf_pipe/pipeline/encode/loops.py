"""The two encoding loops: batches in, shards out.

Texts are sorted by character length (then item id) and cut into shards of
``rows_per_shard`` in that order; each shard is tokenized (in a background thread, one
shard ahead) and cut into batches by token length; a shard's rows are written sorted by
item id.
Posters go through the DataLoader in item-id order; every ``rows_per_shard`` vectors make a
shard. Both are deterministic: the same missing rows give the same batches and vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from bonmf_pipe.pipeline.encode.image import ImageEncoder
from bonmf_pipe.pipeline.encode.posters import PosterDataset, poster_loader
from bonmf_pipe.pipeline.encode.settings import Runtime
from bonmf_pipe.pipeline.encode.shards import FeatureWriter
from bonmf_pipe.pipeline.encode.text import TextEncoder, length_order
from bonmf_pipe.pipeline.encode.transfer import HostResult

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
    """Texts in shards of ``rows_per_shard`` by character length; each shard's texts tokenized
    in one batch call in a background thread while the previous shard encodes, then cut into
    batches by token length. Batch ``k + 1`` is queued on the device before batch ``k`` is read."""
    if todo.num_rows == 0:
        return []
    ids = todo.column("item_id").to_numpy()
    hashes = todo.column("content_hash").to_pylist()
    texts = todo.column("input").to_pylist()
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), int(ids[i])))
    chunks = [order[s : s + rows_per_shard] for s in range(0, len(order), rows_per_shard)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bonmf-tokenize") as pool, _WriteBehind(writer) as out:
        upcoming = pool.submit(encoder.tokenize, [texts[i] for i in chunks[0]])
        for k, chunk in enumerate(chunks):
            tokens = upcoming.result()
            if k + 1 < len(chunks):
                upcoming = pool.submit(encoder.tokenize, [texts[i] for i in chunks[k + 1]])
            local = length_order(tokens, ids[chunk].tolist())
            vectors = np.empty((len(chunk), encoder.dim), dtype=np.float32)
            pending: tuple[int, int, HostResult] | None = None
            for b in range(0, len(local), batch_size):
                sel = local[b : b + batch_size]
                result = encoder.submit([tokens[i] for i in sel])
                if pending is not None:
                    _fill(vectors, pending, on_batch)
                pending = (b, len(sel), result)
            if pending is not None:
                _fill(vectors, pending, on_batch)
            rows = [chunk[i] for i in local]
            out.write(ids[rows], [hashes[i] for i in rows], vectors)
    return []


class _WriteBehind:
    """Writes shards in a background thread, one at a time and in order, while encoding goes on.

    A write's error surfaces at the next ``write`` or at ``close``; ``close`` waits for the last.
    """

    def __init__(self, writer: FeatureWriter):
        self.writer = writer
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bonmf-shard-write")
        self.last: Future | None = None

    def write(self, ids: np.ndarray, hashes: list[str], vectors: np.ndarray) -> None:
        self._wait()
        self.last = self.pool.submit(self.writer.write, ids, hashes, vectors)

    def _wait(self) -> None:
        if self.last is not None:
            last, self.last = self.last, None
            last.result()

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self.pool.shutdown(wait=True)

    def __enter__(self) -> _WriteBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fill(vectors: np.ndarray, pending: tuple[int, int, HostResult], on_batch: OnBatch) -> None:
    at, n, result = pending
    vectors[at : at + n] = result.numpy()
    on_batch(n, n)


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
    """Posters decoded at native size in the loader workers; resized and encoded on the device.

    Batch ``k + 1`` is queued on the device before batch ``k``'s vectors are waited for.
    """
    ids = todo.column("item_id").to_numpy()
    hashes = todo.column("content_hash").to_pylist()
    paths = todo.column("input").to_pylist()
    loader = poster_loader(PosterDataset(paths, hashes), batch_size, num_workers, pin_memory=runtime.device == "cuda")
    with _WriteBehind(writer) as out:
        return _image_batches(encoder, loader, _ShardBuffer(out, ids, hashes, rows_per_shard), ids, hashes, paths, on_batch)


def _image_batches(encoder, loader, buffer, ids, hashes, paths, on_batch: OnBatch) -> list[Failure]:
    failures: list[Failure] = []
    pending: tuple[np.ndarray, HostResult, int] | None = None

    def finish(p: tuple[np.ndarray, HostResult, int]) -> None:
        index, result, done = p
        buffer.add(index, result.numpy())
        on_batch(done, len(index))

    for batch in loader:
        index = batch.index.numpy()
        for pos, reason in batch.failures:
            failures.append(Failure(int(ids[pos]), hashes[pos], paths[pos], reason))
        done = len(index) + len(batch.failures)
        result = encoder.submit(batch.pixels, batch.sizes) if len(index) else None
        if pending is not None:
            finish(pending)
            pending = None
        if result is None:
            on_batch(done, 0)
        else:
            pending = (index, result, done)
    if pending is not None:
        finish(pending)
    buffer.close()
    return failures
