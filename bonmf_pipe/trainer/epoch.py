"""One epoch: batches in the run's seeded order (each rank's share of them under torchrun),
forward/backward/step, validation, and the early-stopping bookkeeping decided after it. A
non-finite loss stops the run."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from bonmf_pipe import runtime
from bonmf_pipe.errors import ConfigError
from bonmf_pipe.progress import Reporter
from bonmf_pipe.trainer import data
from bonmf_pipe.trainer.models import Optimizer
from bonmf_pipe.trainer.setup import Context


def epoch_batches(ctx: Context, part: str, epoch: int | None) -> Iterator[tuple[data.Batch, int, int]]:
    """This rank's share of each batch of ``part``, the rows of the whole (global) batch, and
    where this rank's rows start in it; shuffled from the run's ("shuffle", epoch) seed when
    ``epoch`` is given.

    Resident mode: every rank walks the same order and cuts the same global batches of
    ``batch_size`` rows; under torchrun rank r keeps the r-th of ``world_size`` row ranges of
    each (``Dist.share``). Streaming mode under torchrun: each rank reads its own row groups
    (``_own_part``).
    """
    s = ctx.settings
    if ctx.mode == "resident":
        arrays = ctx.resident[part]  # already on the device
        if epoch is None:
            yield from _shares(ctx, arrays)
            return
        # the epoch's order: drawn on the host from the run's seed (the same bits on any device),
        # sent to the device once; each batch gathers its rows there (index_select: 3x faster than
        # a[perm] on the CPU, and no whole permuted copy before the first step)
        perm = torch.randperm(len(arrays[0]), generator=runtime.torch_generator(s.seed, "shuffle", epoch))
        perm = perm.to(arrays[0].device)
        if ctx.dist.size > 1:
            yield from _shares(ctx, tuple(a.index_select(0, perm) for a in arrays))
            return
        for start in range(0, len(perm), s.batch_size):
            rows = perm[start : start + s.batch_size]
            yield data.Batch(*(a.index_select(0, rows) for a in arrays)), len(rows), 0
        return
    rng = runtime.numpy_rng(s.seed, "shuffle", epoch) if epoch is not None else None
    if ctx.dist.size > 1:
        yield from _own_part(ctx, part, rng, in_step=epoch is not None)
        return
    tables = data.stream_part(ctx.dataset, part, rng, ctx.buffer_rows())
    for arrays in data.read_ahead(data.index_buffers(ctx.maps, tables, pin=ctx.device.type == "cuda")):
        yield from _shares(ctx, arrays)
        del arrays
        runtime.trim_heap()  # the buffer just used is freed: its pages go back (25M ratings: -70 MB peak)


def _shares(ctx: Context, arrays) -> Iterator[tuple[data.Batch, int, int]]:
    size, dist = ctx.settings.batch_size, ctx.dist
    if dist.size == 1:
        for b in data.tensor_batches(arrays, size, ctx.device):
            yield b, len(b.users), 0
        return
    tensors = [a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    n = len(tensors[0])
    for start in range(0, n, size):
        rows = min(size, n - start)
        lo, hi = dist.share(rows)  # may be empty (a last batch of fewer rows than processes)
        u, i, p, r = (t[start + lo : start + hi].to(ctx.device, non_blocking=True) for t in tensors)
        yield data.Batch(u, i, p, r), rows, lo


def _own_part(ctx: Context, part: str, rng: np.random.Generator | None, in_step: bool
              ) -> Iterator[tuple[data.Batch, int, int]]:
    """Streaming under torchrun: this rank's row groups only (every ``world_size``-th of the
    seeded order), shuffled in this rank's buffer with its own stream, cut into local batches
    of this rank's share of ``batch_size`` (carried across buffers, so every local batch but
    the last is full).

    ``in_step``: the ranks must take the same number of steps (every step is a DDP all-reduce).
    Each rank counts the rows of its row groups (statistics, or the ``part`` column of mixed
    groups) and one all-reduce tells every rank every count: the epoch has the steps of the
    rank with the most, a rank whose rows have run out steps with empty batches, and each step
    knows its global rows and where this rank's rows start among them (for the loss scale and
    the unknown-ID drops). Without ``in_step`` (scoring) a rank just goes through its rows.
    """
    dist = ctx.dist
    local = dist.sizes(ctx.settings.batch_size)
    if min(local) == 0:
        raise ConfigError(f"batch size {ctx.settings.batch_size} is smaller than the {dist.size} processes: "
                          f"use --batch-size {dist.size} or more.")
    frags = data.own_fragments(ctx.dataset, part, rng, dist.rank, dist.size)
    shuffle = rng.spawn(dist.size)[dist.rank] if rng is not None else None  # the same on no two ranks
    counts, steps = None, 0
    if in_step:
        mine = [0.0] * dist.size
        mine[dist.rank] = float(data.count_fragments(frags, part))
        counts = [int(c) for c in dist.sum(mine)]
        steps = max(-(-n // b) for n, b in zip(counts, local))
    size, step, seen = local[dist.rank], 0, 0
    carry: list[np.ndarray] | None = None
    tables = data.stream_fragments(frags, part, shuffle, ctx.buffer_rows())
    for arrays in data.read_ahead(data.index_buffers(ctx.maps, tables, pin=False)):
        if carry is not None:
            arrays = tuple(np.concatenate([c, a]) for c, a in zip(carry, arrays))
        whole = len(arrays[0]) // size * size
        for start in range(0, whole, size):
            yield _step_batch(ctx, [a[start : start + size] for a in arrays], step, counts, local)
            step += 1
        seen += whole
        carry = [a[whole:] for a in arrays]
    if carry is not None and len(carry[0]):
        yield _step_batch(ctx, carry, step, counts, local)
        step += 1
        seen += len(carry[0])
    if counts is None:
        return
    if seen != counts[dist.rank] or step > steps:  # the count and the read disagree: a bug, not bad data
        raise RuntimeError(f"rank {dist.rank} read {seen} {part} rows in {step} steps; its row groups count "
                           f"{counts[dist.rank]} ({steps} steps)")
    empty = [np.zeros(0, np.int64)] * 3 + [np.zeros(0, np.float32)]
    for step in range(step, steps):  # this rank's rows are done; the others still step
        yield _step_batch(ctx, empty, step, counts, local)


def _step_batch(ctx: Context, arrays, step: int, counts: list[int] | None, local: list[int]
                ) -> tuple[data.Batch, int, int]:
    """One local batch on the device, the global rows of its step and this rank's first row in them."""
    u, i, p, r = (torch.from_numpy(np.ascontiguousarray(a)).to(ctx.device, non_blocking=True) for a in arrays)
    if counts is None:
        return data.Batch(u, i, p, r), len(u), 0
    rows = [min(b, max(0, n - step * b)) for n, b in zip(counts, local)]
    return data.Batch(u, i, p, r), sum(rows), sum(rows[: ctx.dist.rank])


def train_epoch(ctx: Context, model: nn.Module, opt: Optimizer, epoch: int, report: Reporter, task: str) -> float:
    """One pass over the training rows; the mean MSE of its batches (over every rank's rows).

    ``model`` may be the DDP-wrapped model: each rank's loss is then its rows' sum scaled by
    ``world_size / rows of the global batch``, so the averaged gradient is the global batch's.
    """
    s, dist = ctx.settings, ctx.dist
    model.train()
    # dropout and unknown-ID drops replay on resume. The drops are drawn for the whole global
    # batch (every rank draws the same, keeps its share: the same rows as one process), dropout
    # inside the model from a stream of each rank's own.
    runtime.seed_torch(s.seed, "dropout", epoch, *(("rank", dist.rank) if dist.size > 1 else ()))
    drops = _generator(ctx.device, s.seed, "unknown", epoch)
    total, n, bad = 0.0, 0, None
    # each step's (loss, MSE, rows) wait on the device and are read back every SYNC_STEPS steps
    # (every step on the CPU, where reading is free): a GPU never waits for the host mid-epoch
    pending: list[tuple[int, torch.Tensor, int]] = []
    every = 1 if ctx.device.type == "cpu" else SYNC_STEPS

    def flush() -> None:
        nonlocal total, n, bad
        if not pending:
            return
        values = torch.stack([v for _, v, _ in pending]).tolist()  # one device sync
        for (step, _, rows), (value, batch_mse) in zip(pending, values):
            if not math.isfinite(value):
                if not dist.active:
                    raise diverged(s, f"the training loss became {value} at epoch {epoch}, batch {step}")
                bad = bad or f"the training loss became {value} at epoch {epoch}, batch {step} (rank {dist.rank})"
            total += batch_mse * rows
            n += rows
        pending.clear()

    for step, (b, rows, lo) in enumerate(epoch_batches(ctx, "train", epoch), start=1):
        users, items = b.users, b.items
        if s.unknown_prob > 0:
            drop = torch.rand((2, rows), generator=drops, device=ctx.device)[:, lo : lo + len(users)] < s.unknown_prob
            users, items = torch.where(drop[0], 0, users), torch.where(drop[1], 0, items)
        pred, penalty = model(users, items, b.item_pos)
        if dist.size == 1:
            mse = (pred - b.ratings).pow(2).mean()
            loss = mse + s.l2 * penalty.mean() if s.l2 else mse
        else:  # sums over this rank's share, scaled so DDP's mean over ranks is the global batch's mean
            scale = dist.size / rows
            se = (pred - b.ratings).pow(2).sum()
            loss = (se + s.l2 * penalty.sum()) * scale if s.l2 else se * scale
            mse = se / max(len(users), 1)
        pending.append((step, torch.stack([loss.detach(), mse.detach()]), len(users)))
        if len(pending) >= every:
            flush()  # a non-finite loss stops the run before its step (at once on the CPU)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: gradients averaged over the ranks here
        opt.step()
        report.advance(task, rows)
    flush()
    if dist.active:  # every rank reaches the same verdict (the weights are the same on all)
        total, n, n_bad = dist.sum([total, n, 1.0 if bad else 0.0])
        if n_bad:
            raise diverged(s, bad or f"the training loss became non-finite on {int(n_bad)} process(es) at epoch {epoch}")
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise diverged(s, f"the weights became non-finite during epoch {epoch}")
    return total / max(n, 1)


# Steps between reading the losses back from a GPU (each read waits for the device).
SYNC_STEPS = 64


def _generator(device: torch.device, root: int, *keys: str | int) -> torch.Generator:
    """A generator on ``device`` seeded with ``runtime.derive(root, *keys)``."""
    return torch.Generator(device=device).manual_seed(runtime.derive(root, *keys))


def diverged(s, what: str) -> ConfigError:
    return ConfigError(
        f"Training diverged: {what} (--lr {s.lr:g}, l2 {s.l2:g}, batch size {s.batch_size}). "
        f"Lower --lr (e.g. {s.lr / 10:g}) or check the ratings; the run is marked failed."
    )


@torch.no_grad()
def predict_part(ctx: Context, model: nn.Module, part: str) -> Iterator[tuple[data.Batch, torch.Tensor]]:
    """(batch, clipped predictions) over this rank's share of ``part`` (every row for one
    process), in storage order."""
    model.eval()
    for b, _rows, _lo in epoch_batches(ctx, part, None):
        pred, _ = model(b.users, b.items, b.item_pos)
        yield b, pred.clamp(ctx.lo, ctx.hi)


def valid_rmse(ctx: Context, model: nn.Module) -> float | None:
    """RMSE on the validation slice; None without one. Under torchrun each rank scores its
    share and the sums are all-reduced, so every rank sees the same RMSE (and takes the same
    early-stopping decision)."""
    if ctx.n_valid == 0:
        return None
    se, n = 0.0, 0
    for b, pred in predict_part(ctx, model, "valid"):
        se += float((pred - b.ratings).pow(2).sum())
        n += len(pred)
    se, n = ctx.dist.sum([se, n])
    rmse = (se / n) ** 0.5
    if not math.isfinite(rmse):
        raise diverged(ctx.settings, f"the validation RMSE is {rmse}")
    return rmse


@dataclasses.dataclass
class EarlyStop:
    """Best valid RMSE so far, its epoch, and epochs since it improved (the best epoch's weights
    are a file of the run, ``checkpoint.save_best``, not a copy held in memory)."""

    best_rmse: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, rmse: float | None) -> bool:
        """Record ``epoch``'s validation RMSE; True when it is the best so far (its weights are
        the ones to keep)."""
        if rmse is None:
            self.best_epoch = epoch
            return False
        if self.best_rmse is None or rmse < self.best_rmse - 1e-7:
            self.best_rmse, self.best_epoch, self.bad_epochs = rmse, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def should_stop(self, patience: int) -> bool:
        return patience > 0 and self.bad_epochs >= patience

    def meta(self) -> dict[str, Any]:
        return {"best_rmse": self.best_rmse, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}
