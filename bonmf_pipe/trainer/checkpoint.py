"""Checkpoints: model, optimiser, best-epoch weights, id maps and side-vector statistics in
one safetensors file (never pickle), with the run's settings and progress as JSON metadata.
Saving after every epoch lets a killed run resume exactly where it stopped."""

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
from bonmf_pipe.featurestore.runs import CHECKPOINT
from bonmf_pipe.trainer.epoch import EarlyStop
from bonmf_pipe.trainer.setup import Context

# 2: models from the registry (optimiser groups owned by the model, "initial_lr" per group)
FORMAT = "bonmf-checkpoint-2"


def save(folder: Path, ctx: Context, model: nn.Module, opt: torch.optim.Optimizer, epoch: int,
         early: EarlyStop, rows: list[dict], config: dict) -> None:
    """Everything needed to resume after ``epoch`` or to score with the model's weights."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if early.best_state is not None:
        tensors.update({f"best/{k}": v for k, v in early.best_state.items()})
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


def restore(ctx: Context, model: nn.Module, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> tuple[EarlyStop, list[dict], int]:
    """Model, optimiser and early-stopping state of a checkpoint; (early, epoch rows, next epoch)."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    restore_optimizer(opt, tensors, meta["param_groups"])
    early = EarlyStop(**meta["early"])
    best = {k[5:]: v.to(ctx.device) for k, v in tensors.items() if k.startswith("best/")}
    early.best_state = best or None
    return early, list(meta["epochs"]), meta["epoch"] + 1


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
    reads just those tensors (a scorer needs neither the optimiser state nor the best copy:
    three quarters of the file)."""
    path = folder / CHECKPOINT
    if not path.exists():
        raise StoreError(f"{path} is missing: the run stopped before its first epoch ended. Train it again.")
    with safe_open(str(path), framework="pt") as fh:
        md = fh.metadata() or {}
        if md.get("format") != FORMAT:
            raise StoreError(
                f"{path}: checkpoint format {md.get('format')!r}, this version reads {FORMAT!r}. "
                "Train the run again with this version."
            )
        if only is not None:
            return {k: fh.get_tensor(k) for k in fh.keys() if k.startswith(only)}, json.loads(md["bonmf"])
    return load_file(str(path)), json.loads(md["bonmf"])


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"optim/{idx}/{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    return tensors, sd["param_groups"]


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": groups})
