"""What every network of the registry shares, and needs torch for: the ``Sides`` it is built
with, the ``RatingModel`` protocol the trainer and the scorer use, and the fused AdamW
(the torch-free part, names and defaults, is ``registry.py`` and ``catalog.py``)."""

from __future__ import annotations

from typing import Any, Protocol

import torch

# Side inputs of a model: modality -> (item matrix [n_items + 1, dim], has-vector flags).
Sides = dict[str, tuple[torch.Tensor, torch.Tensor]]


class RatingModel(Protocol):
    """What the trainer and the scorer need from a model (every registered model is an
    ``nn.Module`` with these methods)."""

    def forward(self, users: torch.Tensor, items: torch.Tensor, item_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and the per-row L2 penalty of what the rows looked up."""

    def configure_optimizers(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """The optimiser with the model's own parameter groups."""

    def user_parts(self, users: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def item_parts(self, items: torch.Tensor, item_pos: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def combine(self, up: dict[str, torch.Tensor], ip: dict[str, torch.Tensor], grid: bool) -> torch.Tensor: ...


def adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.AdamW:
    """AdamW over ``groups``, fused (one kernel per step for every parameter: on the CPU about
    half the step time of the per-tensor loop at these sizes, same update rule) when every
    parameter lives on a device with a fused kernel."""
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)
