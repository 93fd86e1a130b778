"""``train``: split, load, then epochs of (shuffle, forward/backward, validate, checkpoint),
then restore the best epoch, predict the test rows and evaluate. Reads top to bottom."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore.io import atomic_path
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.progress import ProgressCallback, Reporter
from bonmf_pipe.trainer import data, runs
from bonmf_pipe.trainer.model import Recommender, build_model
from bonmf_pipe.trainer.settings import TrainSettings
from bonmf_pipe.trainer.splits import make_split, split_dataset


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu or auto.")
    return torch.device(name)


def settings_from_json(d: dict) -> TrainSettings:
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
    return TrainSettings(**kw)


@dataclass
class Context:
    """Everything loaded once for a run."""

    store: Store
    settings: TrainSettings  # effective
    device: torch.device
    split_id: str
    dataset: Any
    maps: data.IdMaps
    sides: dict[str, data.SideFeatures]
    n_train: int
    n_valid: int
    mean: float
    lo: float
    hi: float
    mode: str
    resident: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)

    def buffer_rows(self) -> int:
        s = self.settings
        budget = s.memory_budget_mb * 2**20 // data.BYTES_PER_ROW
        rows = s.shuffle_buffer or budget
        return max(s.batch_size, min(rows, budget))


# -- setup ------------------------------------------------------------------------------------


def _rating_stats(dataset) -> tuple[int, float, float, float]:
    import pyarrow.compute as pc

    n, total, lo, hi = 0, 0.0, np.inf, -np.inf
    for t in data.stream_part(dataset, "train", None, 1 << 16):
        r = t.column("rating")
        n += t.num_rows
        total += float(pc.sum(r).as_py())
        mm = pc.min_max(r).as_py()
        lo, hi = min(lo, mm["min"]), max(hi, mm["max"])
    if n == 0:
        raise ConfigError("The split has no training ratings: the ratings table is empty or the train share too small.")
    return n, total / n, float(lo), float(hi)


def _load_resident(ctx: Context, part: str) -> tuple[torch.Tensor, ...]:
    chunks = [data.to_indices(ctx.maps, t) for t in data.stream_part(ctx.dataset, part, None, 1 << 16)]
    if not chunks:
        return tuple(torch.zeros(0, dtype=d) for d in (torch.long, torch.long, torch.long, torch.float32))
    return tuple(torch.from_numpy(np.concatenate(c)).to(ctx.device) for c in zip(*chunks))


def prepare(store: Store, s: TrainSettings, progress: ProgressCallback | None, ckpt: dict | None) -> Context:
    device = pick_device(s.device)
    split_id = make_split(store, s.split, s.seed, progress, valid_fraction=s.valid_fraction)
    dataset = split_dataset(store, split_id)
    if ckpt is not None:
        maps = data.IdMaps(*(ckpt[f"maps/{k}"].numpy() for k in ("user_ids", "item_ids", "item_index")))
    else:
        maps = data.build_id_maps(store, split_id)
    sides = {}
    for modality in s.features:
        key = s.text_encoder if modality == "text" else s.image_encoder
        stats = (ckpt[f"side/{modality}/mean"].numpy(), ckpt[f"side/{modality}/std"].numpy()) if ckpt else None
        sides[modality] = data.load_side_features(store, modality, key, maps.item_ids, s.normalize, stats)
    n_train, mean, lo, hi = _rating_stats(dataset)
    n_valid = data.count_part(dataset, "valid")
    mode = "resident" if (n_train + n_valid) * data.BYTES_PER_ROW <= s.memory_budget_mb * 2**20 else "streaming"
    ctx = Context(store, s, device, split_id, dataset, maps, sides, n_train, n_valid, mean, lo, hi, mode)
    if mode == "resident":
        ctx.resident = {p: _load_resident(ctx, p) for p in ("train", "valid")}
    return ctx


def new_model(ctx: Context) -> Recommender:
    torch.manual_seed(ctx.settings.seed)
    sides = {
        m: (torch.from_numpy(f.matrix).to(ctx.device), torch.from_numpy(f.found).to(ctx.device))
        for m, f in ctx.sides.items()
    }
    model = build_model(ctx.settings, ctx.maps.n_users, ctx.maps.n_item_embeddings, sides, ctx.mean)
    return model.to(ctx.device)


def new_optimizer(model: Recommender, s: TrainSettings) -> torch.optim.Optimizer:
    """AdamW with three groups: ID embeddings and biases (regularised by ``l2`` in the loss), the
    side projections (``side_weight_decay``, ``side_lr_scale``), the rest (``weight_decay``)."""
    embeddings, side, dense = [], [], []
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        (embeddings if top in ("user", "item", "user_bias", "item_bias") else side if top == "sides" else dense).append(p)
    groups = [
        {"params": embeddings, "weight_decay": 0.0, "lr": s.lr},
        {"params": side, "weight_decay": s.side_weight_decay, "lr": s.lr * s.side_lr_scale},
        {"params": dense, "weight_decay": s.weight_decay, "lr": s.lr},
    ]
    return torch.optim.AdamW(groups, lr=s.lr)


# -- one epoch ------------------------------------------------------------------------------


def epoch_batches(ctx: Context, part: str, epoch: int | None):
    """Batches of ``part``; shuffled by (seed, epoch) when ``epoch`` is given."""
    s = ctx.settings
    if ctx.mode == "resident":
        arrays = ctx.resident[part]
        if epoch is not None:
            g = torch.Generator().manual_seed(s.seed * 1_000_003 + epoch)
            perm = torch.randperm(len(arrays[0]), generator=g).to(ctx.device)
            arrays = tuple(a[perm] for a in arrays)
        yield from data.tensor_batches(arrays, s.batch_size, ctx.device)
        return
    rng = np.random.default_rng([s.seed, epoch]) if epoch is not None else None
    for table in data.stream_part(ctx.dataset, part, rng, ctx.buffer_rows()):
        yield from data.tensor_batches(data.to_indices(ctx.maps, table), s.batch_size, ctx.device)


def train_epoch(ctx: Context, model: Recommender, opt: torch.optim.Optimizer, epoch: int, report: Reporter, task: str) -> float:
    s = ctx.settings
    model.train()
    torch.manual_seed(s.seed * 1_000_003 + epoch)  # dropout and unknown-ID drops replay on resume
    total, n = 0.0, 0
    for b in epoch_batches(ctx, "train", epoch):
        users, items = b.users, b.items
        if s.unknown_prob > 0:
            users = torch.where(torch.rand(len(users), device=users.device) < s.unknown_prob, 0, users)
            items = torch.where(torch.rand(len(items), device=items.device) < s.unknown_prob, 0, items)
        pred, penalty = model(users, items, b.item_pos)
        mse = (pred - b.ratings).pow(2).mean()
        loss = mse + s.l2 * penalty.mean() if s.l2 else mse
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(mse.detach()) * len(users)
        n += len(users)
        report.advance(task, len(users))
    return total / max(n, 1)


@torch.no_grad()
def predict_part(ctx: Context, model: Recommender, part: str):
    """(batch, clipped predictions) over every row of ``part``, in storage order."""
    model.eval()
    for b in epoch_batches(ctx, part, None):
        pred, _ = model(b.users, b.items, b.item_pos)
        yield b, pred.clamp(ctx.lo, ctx.hi)


def valid_rmse(ctx: Context, model: Recommender) -> float | None:
    if ctx.n_valid == 0:
        return None
    se, n = 0.0, 0
    for b, pred in predict_part(ctx, model, "valid"):
        se += float((pred - b.ratings).pow(2).sum())
        n += len(pred)
    return (se / n) ** 0.5


# -- test predictions -------------------------------------------------------------------------


def write_predictions(ctx: Context, model: Recommender, folder: Path, run_id: str) -> dict[str, float]:
    """Stream the test rows through the model into predictions.parquet; MSE, RMSE, MAE."""
    schema = pa.schema([("run_id", pa.string()), ("user_id", pa.int64()), ("item_id", pa.int64()),
                        ("rating", pa.float32()), ("prediction", pa.float32())])
    se = ae = 0.0
    n = 0
    model.eval()
    with atomic_path(folder / runs.PREDICTIONS) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for table in data.stream_part(ctx.dataset, "test", None, 1 << 16):
            users = table.column("user_id").to_numpy()
            items = table.column("item_id").to_numpy()
            u, i, p, r = (torch.from_numpy(a).to(ctx.device) for a in data.to_indices(ctx.maps, table))
            with torch.no_grad():
                pred = model(u, i, p)[0].clamp(ctx.lo, ctx.hi)
            err = pred - r
            se += float(err.pow(2).sum())
            ae += float(err.abs().sum())
            n += len(pred)
            writer.write_table(pa.table({
                "run_id": pa.array([run_id] * len(users), pa.string()), "user_id": users, "item_id": items,
                "rating": r.cpu().numpy(), "prediction": pred.cpu().numpy(),
            }, schema=schema))
    mse = se / n if n else float("nan")
    return {"mse": mse, "rmse": mse**0.5, "mae": ae / n if n else float("nan"), "rows": n}
