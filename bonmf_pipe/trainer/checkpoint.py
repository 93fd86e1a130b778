"""Checkpoints: model, optimiser, id maps and side-vector statistics in one safetensors file
(never pickle), with the run's settings and progress as JSON metadata; the best epoch's
weights in a second one (``best.safetensors``), written when an epoch improves, so no copy of
them stays in memory while training goes on. Saving after every epoch lets a killed run resume
exactly where it stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from bonmf_pipe.errors import StoreError
from bonmf_pipe.featurestore.io import atomic_path
from bonmf_pipe.featurestore.runs import BEST, CHECKPOINT
from bonmf_pipe.trainer.epoch import EarlyStop
from bonmf_pipe.trainer.models import Optimizer
from bonmf_pipe.trainer.setup import Context

# 2: models from the registry (optimiser groups owned by the model, "initial_lr" per group)
# 3: the best epoch's weights in their own file (2 held them as "best/" tensors; still read)
FORMAT = "bonmf-checkpoint-3"
READS = ("bonmf-checkpoint-2", FORMAT)


def save(folder: Path, ctx: Context, model: nn.Module, opt: Optimizer, epoch: int,
         early: EarlyStop, rows: list[dict], config: dict) -> None:
    """Everything needed to resume after ``epoch`` or to score with the model's weights."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt_tensors, groups = optimizer_tensors(opt)
    tensors.update(opt_tensors)
    for k in ("user_ids", "item_ids", "item_index"):
        tensors[f"maps/{k}"] = torch.from_numpy(getattr(ctx.maps, k))
    for m, f in ctx.sides.items():
        tensors[f"side/{m}/mean"] = torch.from_numpy(f.mean)
        tensors[f"side/{m}/std"] = torch.from_numpy(f.std)
    meta = {"epoch": epoch, "early": early.meta(), "param_groups": groups, "settings": config["settings"],
            "config": config, "epochs": rows}
    save_checkpoint(folder, tensors, meta)


def restore(folder: Path, model: nn.Module, opt: Optimizer, tensors: dict, meta: dict, writes: bool = True
            ) -> tuple[EarlyStop, list[dict], int]:
    """Model, optimiser and early-stopping state of a checkpoint; (early, epoch rows, next epoch).
    The best weights of a format-2 checkpoint move to their own file (when this process ``writes``)."""
    model.load_state_dict(model_weights(tensors))
    restore_optimizer(opt, tensors, meta["param_groups"])
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
    if best and writes:
        _save_weights(folder / BEST, best)
    return EarlyStop(**meta["early"]), list(meta["epochs"]), meta["epoch"] + 1


def save_best(folder: Path, model: nn.Module) -> None:
    """The weights of the epoch that just improved, written atomically."""
    _save_weights(folder / BEST, model.state_dict())


def load_best(folder: Path, model: nn.Module) -> None:
    """Put the best epoch's weights back into ``model``."""
    path = folder / BEST
    if not path.exists():
        raise StoreError(f"{path} is missing: the run's best weights are gone. Train the run again.")
    model.load_state_dict(load_file(str(path), device=str(next(model.parameters()).device)))


def _save_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in weights.items()}, str(tmp),
                  metadata={"format": FORMAT})


def model_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``model/`` tensors of a checkpoint as a state dict (the weights the run kept)."""
    return {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Tensors plus JSON metadata, in one safetensors file written atomically."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(folder / CHECKPOINT) as tmp:
        save_file(flat, str(tmp), metadata={"format": FORMAT, "bonmf": json.dumps(meta, default=str)})


def load_checkpoint(folder: Path, only: tuple[str, ...] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The checkpoint's tensors and metadata; ``only`` (name prefixes, e.g. ``("model/",)``)
    reads just those tensors (a scorer needs neither the optimiser state nor the maps)."""
    path = folder / CHECKPOINT
    if not path.exists():
        raise StoreError(f"{path} is missing: the run stopped before its first epoch ended. Train it again.")
    with safe_open(str(path), framework="pt") as fh:
        md = fh.metadata() or {}
        if md.get("format") not in READS:
            raise StoreError(
                f"{path}: checkpoint format {md.get('format')!r}, this version reads {' and '.join(map(repr, READS))}. "
                "Train the run again with this version."
            )
        if only is not None:
            return {k: fh.get_tensor(k) for k in fh.keys() if k.startswith(only)}, json.loads(md["bonmf"])
    return load_file(str(path)), json.loads(md["bonmf"])


def optimizer_tensors(opt: Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"optim/{idx}/{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    return tensors, sd["param_groups"]


def restore_optimizer(opt: Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": groups})
