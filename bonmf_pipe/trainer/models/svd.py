"""Biased matrix factorisation (``svd``, as in Surprise's SVD): global mean + user bias +
item bias + the dot product of user and item factors. No side information, no MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bonmf_pipe.trainer.models.registry import Sides, adamw, register_model


@dataclass(frozen=True)
class SVDConfig:
    embedding_dim: int
    """Size of the user and item factors."""

    @classmethod
    def from_settings(cls, s) -> "SVDConfig":
        return cls(embedding_dim=s.embedding_dim)


def _svd_overrides(s) -> dict:
    # what the runs view and config.json report: no side vectors, biases and a dot product
    return {"features": (), "biases": True, "dot": True}


# svd takes a 5x larger step than the MLP models at batch 2,048 (best mean valid RMSE over 3 seeds on
# ml-latest-small, below batch 512's; benchmarks/results/train-batch-lr-cpu2.json)
@register_model("svd", config=SVDConfig, overrides=_svd_overrides, batch_lr=(2048, 1e-2),
                summary="biased matrix factorisation (global + user + item bias + dot product)")
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

    def configure_optimizers(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
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
