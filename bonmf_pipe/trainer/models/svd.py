"""Biased matrix factorisation (``svd``, as in Surprise's SVD): global mean + user bias +
item bias + the dot product of user and item factors. No side information, no MLP.
Declared as ``svd`` in catalog.py, with its config."""

from __future__ import annotations

import torch
from torch import nn

from bonmf_pipe.trainer.models.base import Optimizer, Sides
from bonmf_pipe.trainer.models.catalog import SVDConfig
from bonmf_pipe.trainer.models.optim import adamw


class BiasedMF(nn.Module):
    def __init__(self, config: SVDConfig, *, n_users: int, n_items: int, sides: Sides, mean: float):
        super().__init__()
        d = config.embedding_dim
        self.config = config
        self.user = nn.Embedding(n_users, d)
        self.item = nn.Embedding(n_items, d)
        nn.init.normal_(self.user.weight, std=0.01)
        nn.init.normal_(self.item.weight, std=0.01)
        self.global_bias = nn.Parameter(torch.tensor(float(mean)))
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor, item_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and the per-row squared norm of the factors and biases looked up."""
        u, e = self.user(users), self.item(items)
        bu, bi = self.user_bias(users).squeeze(1), self.item_bias(items).squeeze(1)
        pred = self.global_bias + bu + bi + (u * e).sum(1)
        return pred, u.pow(2).sum(1) + e.pow(2).sum(1) + bu.pow(2) + bi.pow(2)

    def configure_optimizers(self, lr: float, weight_decay: float) -> Optimizer:
        """AdamW: factors and biases (regularised by the L2 term of the loss), the global bias."""
        embeddings = [p for m in (self.user, self.item, self.user_bias, self.item_bias) for p in m.parameters()]
        groups = [
            {"params": embeddings, "weight_decay": 0.0, "lr": lr},
            {"params": [self.global_bias], "weight_decay": weight_decay, "lr": lr},
        ]
        return adamw(groups, lr)

    @torch.no_grad()
    def item_parts(self, items: torch.Tensor, item_pos: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"factor": self.item(items), "bias": self.item_bias(items).squeeze(1)}

    @torch.no_grad()
    def user_parts(self, users: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"factor": self.user(users), "bias": self.global_bias + self.user_bias(users).squeeze(1)}

    @torch.no_grad()
    def combine(self, up: dict[str, torch.Tensor], ip: dict[str, torch.Tensor], grid: bool) -> torch.Tensor:
        if grid:
            up = {k: v.unsqueeze(1) for k, v in up.items()}
            ip = {k: v.unsqueeze(0) for k, v in ip.items()}
        return up["bias"] + ip["bias"] + (up["factor"] * ip["factor"]).sum(-1)
