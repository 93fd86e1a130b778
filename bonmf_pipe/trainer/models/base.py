"""What every network of the registry shares, and needs torch for: the ``Sides`` it is built
with, the ``RatingModel`` protocol the trainer and the scorer use, and the optimiser type
(the torch-free part, names and defaults, is ``registry.py`` and ``catalog.py``)."""

from __future__ import annotations

from typing import Protocol

import torch

from bonmf_pipe.trainer.models.optim import FusedAdamW

# What ``configure_optimizers`` returns: the fused AdamW, or torch's where it has no kernel.
Optimizer = FusedAdamW | torch.optim.AdamW

# Side inputs of a model: modality -> (item matrix [n_items + 1, dim], has-vector flags).
Sides = dict[str, tuple[torch.Tensor, torch.Tensor]]


class RatingModel(Protocol):
    """What the trainer and the scorer need from a model (every registered model is an
    ``nn.Module`` with these methods)."""

    def forward(self, users: torch.Tensor, items: torch.Tensor, item_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and the per-row L2 penalty of what the rows looked up."""

    def configure_optimizers(self, lr: float, weight_decay: float) -> Optimizer:
        """The optimiser with the model's own parameter groups (``optim.adamw``)."""

    def user_parts(self, users: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def item_parts(self, items: torch.Tensor, item_pos: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def combine(self, up: dict[str, torch.Tensor], ip: dict[str, torch.Tensor], grid: bool) -> torch.Tensor: ...
