"""Everything a run loads once before its first epoch: device, split, id maps, side
vectors, rating statistics, and (when they fit the memory budget) the ratings themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from torch import nn

from bonmf_pipe import runtime
from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.progress import ProgressCallback
from bonmf_pipe.trainer import data
from bonmf_pipe.trainer.distributed import Dist
from bonmf_pipe.trainer.models import Optimizer, build_model
from bonmf_pipe.trainer.models.optim import FusedAdamW
from bonmf_pipe.trainer.settings import TrainSettings
from bonmf_pipe.trainer.splits import duckdb_memory_mb, make_split, split_dataset


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
    mode: str  # "resident" (ratings held as tensors) or "streaming" (read from the shards)
    resident: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    dist: Dist = field(default_factory=Dist)  # this process's rank under torchrun (rank 0 of 1 without)

    def buffer_rows(self) -> int:
        s = self.settings
        budget = s.memory_budget_mb * 2**20 // (data.BYTES_PER_ROW * data.BUFFERS_ALIVE)
        rows = s.shuffle_buffer or budget
        return max(s.batch_size, min(rows, budget))


def prepare(store: Store, s: TrainSettings, progress: ProgressCallback | None, ckpt: dict | None,
            dist: Dist | None = None) -> Context:
    """Load what run ``s`` (effective settings) needs; ``ckpt`` (a checkpoint's tensors) reuses
    the id maps and side-vector statistics of the run being resumed. Under torchrun (``dist``)
    rank 0 makes the split first; every rank then loads the same maps, vectors and ratings."""
    device = runtime.resolve_device(s.device)
    dist = dist or Dist()
    with dist.main_first():  # one process writes a new split; the others find it made
        split_id = make_split(store, s.split, s.seed, progress, valid_fraction=s.valid_fraction,
                              memory_limit_mb=duckdb_memory_mb(s.memory_budget_mb))
    dataset = split_dataset(store, split_id)
    if ckpt is not None:
        maps = data.IdMaps(*(ckpt[f"maps/{k}"].numpy() for k in ("user_ids", "item_ids", "item_index")))
    else:
        maps = data.build_id_maps(store, split_id, duckdb_memory_mb(s.memory_budget_mb))
    sides = {}
    for modality in s.features:
        key = {"text": s.text_encoder, "image": s.image_encoder}.get(modality)  # imported sets: the newest
        stats = (ckpt[f"side/{modality}/mean"].numpy(), ckpt[f"side/{modality}/std"].numpy()) if ckpt else None
        sides[modality] = data.load_side_features(store, modality, key, maps.item_ids, s.normalize, stats)
    n_train, mean, lo, hi = _rating_stats(dataset)
    n_valid = data.count_part(dataset, "valid")
    mode = "resident" if (n_train + n_valid) * data.BYTES_PER_ROW <= s.memory_budget_mb * 2**20 else "streaming"
    ctx = Context(store, s, device, split_id, dataset, maps, sides, n_train, n_valid, mean, lo, hi, mode, dist=dist)
    if mode == "resident":
        ctx.resident = {p: _load_resident(ctx, p) for p in ("train", "valid")}
    return ctx


def new_model(ctx: Context) -> nn.Module:
    """The registered model ``settings.model``, initialised from the run's "init" seed."""
    s = ctx.settings
    runtime.seed_torch(s.seed, "init")
    sides = {
        m: (torch.from_numpy(f.matrix).to(ctx.device), torch.from_numpy(f.found).to(ctx.device))
        for m, f in ctx.sides.items()
    }
    return build_model(s, ctx.maps.n_users, ctx.maps.n_item_embeddings, sides, ctx.mean).to(ctx.device)


def new_optimizer(model: nn.Module, s: TrainSettings) -> Optimizer:
    """The model's own optimiser (its parameter groups); each group remembers its base
    learning rate so the schedule can scale it."""
    opt = model.configure_optimizers(lr=s.lr, weight_decay=s.weight_decay)
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
    params = list(model.parameters())
    if isinstance(opt, FusedAdamW) and runtime.world().size == 1 and all(p.device.type == "cpu" for p in params):
        _row_sparse_gradients(model, opt)
    return opt


def _row_sparse_gradients(model: nn.Module, opt: FusedAdamW) -> None:
    """On the CPU, in one process: the ID embeddings' backward sends only the rows a batch looked
    up (``sparse=True``), added into gradients the optimiser allocates once (``keep_grads``).
    A dense embedding backward allocates and zero-fills a table-sized gradient every step (for
    svd at ML-25M shape 45 MB a step): forward + backward 7.5 -> 4.2 ms a batch of 8,192, an
    epoch 455k -> 555k ratings/s, and ~50 MB less freed-but-resident malloc heap. The sums are
    the same bits (tests/trainer/test_train.py).
    Not under torchrun (DDP all-reduces dense gradients as autograd makes them) nor on a GPU,
    whose caching allocator reuses the block and where a dense backward is one fast kernel."""
    for m in model.modules():
        if isinstance(m, nn.Embedding) and m.weight.requires_grad:
            m.sparse = True
    opt.keep_grads()


def _rating_stats(dataset) -> tuple[int, float, float, float]:
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
