"""The built-in models, declared without importing torch: each one's config dataclass, the
settings it forces, its default (batch_size, lr) on the CPU and where its network lives.

``bonmf`` and ``nmf`` are the network of ``bonmf.py`` (``nmf`` without side information),
``svd`` the biased matrix factorisation of ``svd.py``; those modules, and torch, are imported
when a model is created.
"""

from __future__ import annotations

from dataclasses import dataclass

from bonmf_pipe.trainer.models.registry import declare_model


@dataclass(frozen=True)
class BoNMFConfig:
    """The network's shape (see ``TrainSettings`` for what each field means)."""

    embedding_dim: int
    hidden: tuple[int, ...]
    projection_dim: int
    biases: bool
    dot: bool
    mlp_item_embedding: bool
    dropout: float
    side_weight_decay: float
    side_lr_scale: float
    content_prior: bool
    side_dropout: float

    @classmethod
    def from_settings(cls, s) -> "BoNMFConfig":
        return cls(
            embedding_dim=s.embedding_dim, hidden=tuple(s.hidden), projection_dim=s.projection_dim, biases=s.biases,
            dot=s.dot, mlp_item_embedding=s.mlp_item_embedding, dropout=s.dropout,
            side_weight_decay=s.side_weight_decay, side_lr_scale=s.side_lr_scale, content_prior=s.content_prior,
            side_dropout=s.side_dropout,
        )


@dataclass(frozen=True)
class SVDConfig:
    embedding_dim: int
    """Size of the user and item factors."""

    @classmethod
    def from_settings(cls, s) -> "SVDConfig":
        return cls(embedding_dim=s.embedding_dim)


def _no_side_information(s) -> dict:
    return {"features": ()}


def _svd_overrides(s) -> dict:
    # what the runs view and config.json report: no side vectors, biases and a dot product
    return {"features": (), "biases": True, "dot": True}


# with side vectors the step is compute-bound: batch 1,024 at lr 1.5e-3 had the best mean valid RMSE
# of the larger batches (3 seeds, ml-latest-small; benchmarks/results/train-batch-lr-cpu2.json)
declare_model("bonmf", "bonmf_pipe.trainer.models.bonmf:BoNMF", config=BoNMFConfig, batch_lr=(1024, 1.5e-3),
              summary="IDs + text + poster vectors, MLP")
declare_model("nmf", "bonmf_pipe.trainer.models.bonmf:BoNMF", config=BoNMFConfig, overrides=_no_side_information,
              summary="the BoNMF network without side information (neural MF)")
# svd takes a 5x larger step than the MLP models at batch 2,048 (best mean valid RMSE over 3 seeds on
# ml-latest-small, below batch 512's; benchmarks/results/train-batch-lr-cpu2.json)
declare_model("svd", "bonmf_pipe.trainer.models.svd:BiasedMF", config=SVDConfig, overrides=_svd_overrides,
              batch_lr=(2048, 1e-2), summary="biased matrix factorisation (global + user + item bias + dot product)")
