"""EvalSettings: how a run is evaluated (its own module, importing nothing heavy, so that the
CLI builds the ``evaluate`` options without loading the scorer and torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.evaluation.streams import MEMORY_LIMIT_MB


@dataclass(frozen=True)
class EvalSettings:
    """How a run is evaluated (serialised into ``evaluation.json``)."""

    ks: tuple[int, ...] = (5, 10, 20)
    """Cut-offs K of precision@K, recall@K and NDCG@K."""
    threshold: float = 4.0
    """A test item is relevant when its true rating is >= this."""
    cold_max_train_ratings: int = 5
    """Cold items: fewer than this many ratings in the train part."""
    full_catalogue: bool = True
    """Also rank the whole catalogue (every item the user has not rated in train/valid)."""
    max_users: int | None = 2000
    """Full-catalogue protocol: evaluate at most this many users (a seeded random sample); None =
    all of them (costly: users x catalogue model evaluations; ml-latest-small has 610 users)."""
    sample_seed: int = 0
    """Seed of the ``max_users`` sample."""
    score_budget: int = 1 << 20
    """Full-catalogue protocol: scores computed per batch (users x items); bounds memory."""
    chunk_rows: int = 64 * 1024
    """Rows (test predictions, or a user's known items) handled at once; chunks hold whole
    users, so a user with more rows than this comes alone. Bounds memory, not the metrics."""
    memory_limit_mb: int = MEMORY_LIMIT_MB
    """DuckDB memory limit for the sorted streams (it spills to ``<store>/tmp`` beyond it)."""

    def __post_init__(self) -> None:
        if not self.ks or any(not _is_int(k) or k < 1 for k in self.ks):
            raise ConfigError(f"ks must be positive whole cut-offs, e.g. -k 5 -k 10 -k 20 (got {self.ks}).")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not math.isfinite(self.threshold):
            raise ConfigError(f"threshold must be a finite rating, e.g. --threshold 4 (got {self.threshold!r}).")
        for name, value, least in (
            ("cold_max_train_ratings", self.cold_max_train_ratings, 1),
            ("score_budget", self.score_budget, 1),
            ("chunk_rows", self.chunk_rows, 1),
            ("memory_limit_mb", self.memory_limit_mb, 16),
            ("sample_seed", self.sample_seed, 0),
        ):
            if not _is_int(value) or value < least:
                raise ConfigError(f"{name} must be a whole number of at least {least} (got {value!r}).")
        if self.max_users is not None and (not _is_int(self.max_users) or self.max_users < 1):
            raise ConfigError(f"max_users must be at least 1, or None for every user (got {self.max_users!r}).")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
