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
from bonmf_pipe.trainer.setup import Context


def epoch_batches(ctx: Context, part: str, epoch: int | None) -> Iterator[tuple[data.Batch, int]]:
    """This rank's share of each batch of ``part`` and the rows of the whole (global) batch;
    shuffled from the run's ("shuffle", epoch) seed when ``epoch`` is given.

    Every rank walks the same order and cuts the same global batches of ``batch_size`` rows;
    under torchrun rank r keeps the r-th of ``world_size`` row ranges of each (``Dist.share``).
    """
    s = ctx.settings
    if ctx.mode == "resident":
        arrays = ctx.resident[part]
        if epoch is not None:
            perm = torch.randperm(len(arrays[0]), generator=runtime.torch_generator(s.seed, "shuffle", epoch))
            arrays = tuple(a[perm.to(a.device)] for a in arrays)
        yield from _shares(ctx, arrays)
        return
    rng = runtime.numpy_rng(s.seed, "shuffle", epoch) if epoch is not None else None
    for table in data.stream_part(ctx.dataset, part, rng, ctx.buffer_rows()):
        yield from _shares(ctx, data.to_indices(ctx.maps, table))


def _shares(ctx: Context, arrays) -> Iterator[tuple[data.Batch, int]]:
    size, dist = ctx.settings.batch_size, ctx.dist
    if dist.size == 1:
        for b in data.tensor_batches(arrays, size, ctx.device):
            yield b, len(b.users)
        return
    tensors = [a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    n = len(tensors[0])
    for start in range(0, n, size):
        rows = min(size, n - start)
        lo, hi = dist.share(rows)  # may be empty (a last batch of fewer rows than processes)
        u, i, p, r = (t[start + lo : start + hi].to(ctx.device, non_blocking=True) for t in tensors)
        yield data.Batch(u, i, p, r), rows


def train_epoch(ctx: Context, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, report: Reporter, task: str) -> float:
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
    for step, (b, rows) in enumerate(epoch_batches(ctx, "train", epoch), start=1):
        users, items = b.users, b.items
        if s.unknown_prob > 0:
            lo, hi = dist.share(rows)
            drop = torch.rand((2, rows), generator=drops, device=ctx.device)[:, lo:hi] < s.unknown_prob
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
        value, batch_mse = torch.stack([loss.detach(), mse.detach()]).tolist()  # one device sync
        if not math.isfinite(value):
            if not dist.active:
                raise diverged(s, f"the training loss became {value} at epoch {epoch}, batch {step}")
            bad = bad or f"the training loss became {value} at epoch {epoch}, batch {step} (rank {dist.rank})"
        opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: gradients averaged over the ranks here
        opt.step()
        total += batch_mse * len(users)
        n += len(users)
        report.advance(task, rows)
    if dist.active:  # every rank reaches the same verdict (the weights are the same on all)
        total, n, n_bad = dist.sum([total, n, 1.0 if bad else 0.0])
        if n_bad:
            raise diverged(s, bad or f"the training loss became non-finite on {int(n_bad)} process(es) at epoch {epoch}")
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise diverged(s, f"the weights became non-finite during epoch {epoch}")
    return total / max(n, 1)


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
    for b, _rows in epoch_batches(ctx, part, None):
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
    """Best valid RMSE so far, its epoch and weights, and epochs since it improved."""

    best_rmse: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, rmse: float | None, model: nn.Module) -> None:
        if rmse is None:
            self.best_epoch = epoch
            return
        if self.best_rmse is None or rmse < self.best_rmse - 1e-7:
            self.best_rmse, self.best_epoch, self.bad_epochs = rmse, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1

    def should_stop(self, patience: int) -> bool:
        return patience > 0 and self.bad_epochs >= patience

    def meta(self) -> dict[str, Any]:
        return {"best_rmse": self.best_rmse, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}
