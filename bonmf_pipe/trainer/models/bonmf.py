"""BoNMF: user and item ID embeddings fused with the item's text and poster vectors.

Declared (with its config) in catalog.py as ``bonmf`` (IDs + side vectors) and ``nmf`` (the
same network without side information). ``paper=True`` in the settings gives the paper's
network: raw vectors concatenated with the ID embeddings into an MLP 128 -> 64 -> 1,
nothing else. The default is the hybrid of DESIGN.md: prediction = [global + b_u + b_i] +
[u . (e_i + projected side vectors)] + [MLP(u, projected side vectors)]. Index 0 of every ID
embedding is "unknown".

Content as a prior (``content_prior``, the default): the item factor is what the item's side
vectors predict plus an ID offset e_i, and the L2 term shrinks only the offset. An item with
few ratings then falls back on its content; one with many moves away from it as far as its
ratings justify (the regression-based latent factor idea of Agarwal & Chen, KDD 2009). With
the L2 on the whole factor instead, content was shrunk hardest exactly for the items whose
ratings should override it, and adding posters to text made ml-latest-small worse
(benchmarks/model_search.py measures both).
"""

from __future__ import annotations

import torch
from torch import nn

from bonmf_pipe.trainer.models.base import Optimizer, Sides
from bonmf_pipe.trainer.models.catalog import BoNMFConfig
from bonmf_pipe.trainer.models.optim import adamw


class SideInput(nn.Module):
    """One modality: the item's frozen vector (a buffer on the device), a learned vector for
    items that have none, and an optional linear projection."""

    def __init__(self, matrix: torch.Tensor, found: torch.Tensor, out_dim: int):
        super().__init__()
        self.register_buffer("matrix", matrix, persistent=False)
        self.register_buffer("found", found, persistent=False)
        self.missing = nn.Parameter(torch.zeros(matrix.shape[1]))
        self.proj = nn.Linear(matrix.shape[1], out_dim, bias=False) if out_dim else None
        if self.proj is not None:
            nn.init.normal_(self.proj.weight, std=0.01)

    @property
    def out_dim(self) -> int:
        return self.proj.out_features if self.proj is not None else self.matrix.shape[1]

    def forward(self, item_pos: torch.Tensor, hide: torch.Tensor | None = None) -> torch.Tensor:
        """The rows' vectors (projected); rows flagged in ``hide`` are treated as having none."""
        # rows without a vector are zero, so adding the (projected) missing vector there is
        # the same as replacing them, and cheaper once projected
        x = self.matrix[item_pos]
        absent = ~self.found[item_pos]
        if hide is not None:
            x = x.masked_fill(hide.unsqueeze(1), 0.0)
            absent = absent | hide
        absent = absent.unsqueeze(1).to(self.matrix.dtype)
        if self.proj is None:
            return x + absent * self.missing
        return self.proj(x) + absent * self.proj(self.missing)


class BoNMF(nn.Module):
    """prediction = [global + b_u + b_i] + [u . (e_i + sum projections)] + [MLP(u, e_i, sides)]."""

    def __init__(self, config: BoNMFConfig, *, n_users: int, n_items: int, sides: Sides, mean: float):
        super().__init__()
        c = config
        d = c.embedding_dim
        self.config = c
        self.user = nn.Embedding(n_users, d)
        self.item = nn.Embedding(n_items, d)
        std = 0.01 if c.dot else 0.1
        nn.init.normal_(self.user.weight, std=std)
        nn.init.normal_(self.item.weight, std=std)
        self.use_bias, self.use_dot = c.biases, c.dot
        self.mlp_ids = c.mlp_item_embedding or not sides  # without side vectors the MLP needs the item id
        self.global_bias = nn.Parameter(torch.tensor(float(mean))) if c.biases else None
        self.user_bias = nn.Embedding(n_users, 1) if c.biases else None
        self.item_bias = nn.Embedding(n_items, 1) if c.biases else None
        for b in (self.user_bias, self.item_bias):
            if b is not None:
                nn.init.zeros_(b.weight)
        proj = d if (c.dot and c.projection_dim) else c.projection_dim
        self.sides = nn.ModuleDict({m: SideInput(mat, found, proj) for m, (mat, found) in sides.items()})
        layers: list[nn.Module] = []
        width = (2 if self.mlp_ids else 1) * d + sum(side.out_dim for side in self.sides.values())
        for h in c.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if c.dropout:
                layers.append(nn.Dropout(c.dropout))
            width = h
        last = nn.Linear(width, 1)
        layers.append(last)
        self.mlp = nn.Sequential(*layers)
        if c.dot or c.biases:
            nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, 0.0 if c.biases else float(mean))

    def forward(self, users: torch.Tensor, items: torch.Tensor, item_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and the per-row squared norm of the user and item factors and biases looked
        up (the L2 penalty: of the item factor, only its ID offset with ``content_prior``, else
        the whole factor including its projected side vectors)."""
        u, e = self.user(users), self.item(items)
        pred = torch.zeros(len(users), device=u.device)
        side = [self.sides[m](item_pos, self._hidden(item_pos)) for m in self.sides]
        factor = e
        if self.use_dot:  # the item factor: ID embedding plus the projected side vectors
            for v in side:
                factor = factor + v
            pred = pred + (u * factor).sum(1)
        shrunk = e if self.config.content_prior else factor  # content_prior: shrink toward the content
        penalty = u.pow(2).sum(1) + shrunk.pow(2).sum(1)
        if self.use_bias:
            bu, bi = self.user_bias(users).squeeze(1), self.item_bias(items).squeeze(1)
            pred = pred + self.global_bias + bu + bi
            penalty = penalty + bu.pow(2) + bi.pow(2)
        item_in = [e, *side] if self.mlp_ids else side
        pred = pred + self.mlp(torch.cat([u, *item_in], dim=1)).squeeze(1)
        return pred, penalty

    def _hidden(self, item_pos: torch.Tensor) -> torch.Tensor | None:
        """Modality dropout: in training, each row hides each modality with probability
        ``side_dropout`` (drawn per modality), so neither the ID path nor the other modality
        leans on one modality alone."""
        p = self.config.side_dropout
        if not (self.training and p > 0):
            return None
        return torch.rand(len(item_pos), device=item_pos.device) < p

    def configure_optimizers(self, lr: float, weight_decay: float) -> Optimizer:
        """AdamW with three groups: ID embeddings and biases (regularised by the L2 term of the
        loss instead), the side inputs (``side_weight_decay``, ``side_lr_scale``), the rest."""
        ids = [self.user, self.item, self.user_bias, self.item_bias]
        embeddings = [p for m in ids if m is not None for p in m.parameters()]
        side = list(self.sides.parameters())
        taken = {id(p) for p in embeddings + side}
        dense = [p for p in self.parameters() if id(p) not in taken]
        groups = [
            {"params": embeddings, "weight_decay": 0.0, "lr": lr},
            {"params": side, "weight_decay": self.config.side_weight_decay, "lr": lr * self.config.side_lr_scale},
            {"params": dense, "weight_decay": weight_decay, "lr": lr},
        ]
        return adamw(groups, lr)

    # -- scoring in parts: item-side and user-side terms computed once, then combined ------

    @torch.no_grad()
    def item_parts(self, items: torch.Tensor, item_pos: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything that depends only on the item: factor, bias, its share of the first layer."""
        e = self.item(items)
        side = [self.sides[m](item_pos) for m in self.sides]
        parts = {"factor": e + sum(side) if self.use_dot and side else e}
        parts["bias"] = self.item_bias(items).squeeze(1) if self.use_bias else torch.zeros(len(items), device=e.device)
        first = self.mlp[0]
        d = e.shape[1]
        item_in = [e, *side] if self.mlp_ids else side
        parts["first"] = torch.cat(item_in, dim=1) @ first.weight[:, d:].T
        return parts

    @torch.no_grad()
    def user_parts(self, users: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything that depends only on the user (the global bias included)."""
        u = self.user(users)
        bias = torch.zeros(len(users), device=u.device)
        if self.use_bias:
            bias = bias + self.global_bias + self.user_bias(users).squeeze(1)
        first = self.mlp[0]
        return {"factor": u, "bias": bias, "first": u @ first.weight[:, : u.shape[1]].T + first.bias}

    @torch.no_grad()
    def combine(self, up: dict[str, torch.Tensor], ip: dict[str, torch.Tensor], grid: bool) -> torch.Tensor:
        """Predictions from user and item parts: pairwise rows (``grid=False``, equal lengths)
        or every user x every item (``grid=True``, ``[n_users, n_items]``)."""
        if grid:
            up = {k: v.unsqueeze(1) for k, v in up.items()}
            ip = {k: v.unsqueeze(0) for k, v in ip.items()}
        pred = up["bias"] + ip["bias"]
        if self.use_dot:
            pred = pred + (up["factor"] * ip["factor"]).sum(-1)
        return pred + self.mlp[1:](up["first"] + ip["first"]).squeeze(-1)
