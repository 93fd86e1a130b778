"""One epoch: batches in the run's seeded order, forward/backward/step, validation, and
the early-stopping bookkeeping decided after it. A non-finite loss stops the run."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bonmf_pipe import runtime
from bonmf_pipe.errors import ConfigError
from bonmf_pipe.progress import Reporter
from bonmf_pipe.trainer import data
from bonmf_pipe.trainer.setup import Context


def epoch_batches(ctx: Context, part: str, epoch: int | None) -> Iterator[data.Batch]:
    """Batches of ``part``; shuffled from the run's ("shuffle", epoch) seed when ``epoch`` is given."""
    s = ctx.settings
    if ctx.mode == "resident":
        arrays = ctx.resident[part]
        if epoch is not None:
            perm = torch.randperm(len(arrays[0]), generator=runtime.torch_generator(s.seed, "shuffle", epoch))
            arrays = tuple(a[perm.to(a.device)] for a in arrays)
        yield from data.tensor_batches(arrays, s.batch_size, ctx.device)
        return
    rng = runtime.numpy_rng(s.seed, "shuffle", epoch) if epoch is not None else None
    for table in data.stream_part(ctx.dataset, part, rng, ctx.buffer_rows()):
        yield from data.tensor_batches(data.to_indices(ctx.maps, table), s.batch_size, ctx.device)


def train_epoch(ctx: Context, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, report: Reporter, task: str) -> float:
    """One pass over the training rows; the mean MSE of its batches."""
    s = ctx.settings
    model.train()
    runtime.seed_torch(s.seed, "dropout", epoch)  # dropout and unknown-ID drops replay on resume
    total, n = 0.0, 0
    for step, b in enumerate(epoch_batches(ctx, "train", epoch), start=1):
        users, items = b.users, b.items
        if s.unknown_prob > 0:
            users = torch.where(torch.rand(len(users), device=users.device) < s.unknown_prob, 0, users)
            items = torch.where(torch.rand(len(items), device=items.device) < s.unknown_prob, 0, items)
        pred, penalty = model(users, items, b.item_pos)
        mse = (pred - b.ratings).pow(2).mean()
        loss = mse + s.l2 * penalty.mean() if s.l2 else mse
        value, batch_mse = torch.stack([loss.detach(), mse.detach()]).tolist()  # one device sync
        if not math.isfinite(value):
            raise diverged(s, f"the training loss became {value} at epoch {epoch}, batch {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += batch_mse * len(users)
        n += len(users)
        report.advance(task, len(users))
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise diverged(s, f"the weights became non-finite during epoch {epoch}")
    return total / max(n, 1)


def diverged(s, what: str) -> ConfigError:
    return ConfigError(
        f"Training diverged: {what} (--lr {s.lr:g}, l2 {s.l2:g}, batch size {s.batch_size}). "
        f"Lower --lr (e.g. {s.lr / 10:g}) or check the ratings; the run is marked failed."
    )


@torch.no_grad()
def predict_part(ctx: Context, model: nn.Module, part: str) -> Iterator[tuple[data.Batch, torch.Tensor]]:
    """(batch, clipped predictions) over every row of ``part``, in storage order."""
    model.eval()
    for b in epoch_batches(ctx, part, None):
        pred, _ = model(b.users, b.items, b.item_pos)
        yield b, pred.clamp(ctx.lo, ctx.hi)


def valid_rmse(ctx: Context, model: nn.Module) -> float | None:
    """RMSE on the validation slice; None without one."""
    if ctx.n_valid == 0:
        return None
    se, n = 0.0, 0
    for b, pred in predict_part(ctx, model, "valid"):
        se += float((pred - b.ratings).pow(2).sum())
        n += len(pred)
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
