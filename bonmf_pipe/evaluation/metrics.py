"""Rating and top-K ranking metrics: pure, vectorised numpy functions.

Rating metrics, over the n (rating, prediction) pairs of a set of test rows::

    MSE  = 1/n * sum (r - p)^2        RMSE = sqrt(MSE)        MAE = 1/n * sum |r - p|

Ranking metrics, per user u, over the user's *candidates* C_u (the items that compete for
the list) with binary relevance rel(i) in {0, 1} (relevant: true rating >= the threshold):

- The list: C_u sorted by score, highest first. **Ties** are broken by item order: the
  candidate that comes first in the input (``item_ids`` ascending in both protocols of
  ``evaluate``) ranks higher, so every metric is deterministic.
- ``L_u = min(K, |C_u|)`` items are shown; ``hits_u@K`` = relevant items among them;
  ``R_u`` = relevant candidates of u.
- ``Precision@K = hits_u@K / L_u``: the denominator is the length of the list actually
  shown, ``min(K, |C_u|)``, not K. A user with 3 candidates, all relevant, has P@10 = 1.
  (This is the only reading under which a rated-items precision such as the paper's 0.8865
  means anything; in the full-catalogue protocol |C_u| >= K, so it is hits / K.)
- ``Recall@K = hits_u@K / R_u``.
- ``NDCG@K = DCG_u@K / IDCG_u@K`` with binary gain and a log2 discount:
  ``DCG = sum_{j=1..L_u} rel(j-th item) / log2(j + 1)`` and
  ``IDCG = sum_{j=1..min(K, R_u)} 1 / log2(j + 1)`` (the ideal list puts the user's relevant
  candidates first).
- **Users with no relevant candidate (R_u = 0) are excluded from all three averages**:
  recall and NDCG are undefined for them and their precision says nothing about the model.
  The reported averages are plain means over the remaining users (each user counts once),
  and ``n`` is the number of users averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANKING_METRICS = ("precision", "recall", "ndcg")


# -- rating metrics ----------------------------------------------------------------------
def mse(ratings: np.ndarray, predictions: np.ndarray) -> float:
    """Mean squared error; NaN for no rows."""
    r, p = _pair(ratings, predictions)
    return float(np.mean((r - p) ** 2)) if r.size else float("nan")


def rmse(ratings: np.ndarray, predictions: np.ndarray) -> float:
    """Root mean squared error; NaN for no rows."""
    return float(np.sqrt(mse(ratings, predictions)))


def mae(ratings: np.ndarray, predictions: np.ndarray) -> float:
    """Mean absolute error; NaN for no rows."""
    r, p = _pair(ratings, predictions)
    return float(np.mean(np.abs(r - p))) if r.size else float("nan")


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ratings and predictions differ in shape: {a.shape} vs {b.shape}")
    return a, b


@dataclass
class ErrorSums:
    """Running sums for MSE/RMSE/MAE over a stream of batches (memory independent of n)."""

    n: int = 0
    sq: float = 0.0
    abs: float = 0.0

    def add(self, ratings: np.ndarray, predictions: np.ndarray) -> None:
        r, p = _pair(ratings, predictions)
        d = r - p
        self.n += int(d.size)
        self.sq += float(np.dot(d, d))
        self.abs += float(np.abs(d).sum())

    def values(self) -> dict[str, float]:
        if self.n == 0:
            return {"mse": float("nan"), "rmse": float("nan"), "mae": float("nan")}
        m = self.sq / self.n
        return {"mse": m, "rmse": float(np.sqrt(m)), "mae": self.abs / self.n}


# -- top-K hit matrices ------------------------------------------------------------------
def topk_hits_grouped(
    users: np.ndarray, scores: np.ndarray, relevant: np.ndarray, kmax: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user top-``kmax`` hits from flat rows ``(user, score, relevant)``.

    Rows of one user are that user's candidates; within a user, ties go to the row that
    comes first. Returns ``hits`` ``[n_users, kmax]`` (False past the end of a short list),
    ``n_candidates`` and ``n_relevant`` per user, users in ascending order of ``users``.
    """
    users = np.asarray(users)
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if users.size == 0:
        return np.zeros((0, kmax), bool), np.zeros(0, np.int64), np.zeros(0, np.int64)
    # lexsort: last key is primary -> user, then score descending, then input position.
    order = np.lexsort((np.arange(users.size), -scores, users))
    u = users[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    counts = np.diff(np.r_[starts, u.size])
    rank = np.arange(u.size) - np.repeat(starts, counts)
    keep = rank < kmax
    hits = np.zeros((starts.size, kmax), dtype=bool)
    row = np.repeat(np.arange(starts.size), counts)
    hits[row[keep], rank[keep]] = relevant[order][keep]
    n_relevant = np.add.reduceat(relevant[order].astype(np.int64), starts)
    return hits, counts.astype(np.int64), n_relevant


def topk_columns(scores: np.ndarray, kmax: int) -> np.ndarray:
    """Column indices of each row's ``kmax`` highest scores, best first, ties to the lower
    column; ``-inf`` marks excluded entries (they sort last). ``[n_rows, min(kmax, n_cols)]``."""
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    n_rows, n_cols = scores.shape
    k = min(kmax, n_cols)
    if k == 0 or n_rows == 0:
        return np.zeros((n_rows, k), dtype=np.int64)
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # the k-th largest per row
    above = scores > kth
    tied = scores == kth
    need = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= need))
    rows, cols = np.nonzero(chosen)  # row-major: columns ascending within a row
    cols = cols.reshape(n_rows, k)
    picked = np.take_along_axis(scores, cols, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")  # stable: ties keep the lower column
    return np.take_along_axis(cols, order, axis=1)


# -- ranking metrics from hits -----------------------------------------------------------
def discounts(kmax: int) -> np.ndarray:
    """``1 / log2(j + 1)`` for ranks j = 1..kmax."""
    return 1.0 / np.log2(np.arange(2, kmax + 2))


def ranking_metrics_per_user(
    hits: np.ndarray, n_candidates: np.ndarray, n_relevant: np.ndarray, k: int
) -> dict[str, np.ndarray]:
    """Precision@k, recall@k and NDCG@k of every user (NaN where R_u = 0 or no candidate)."""
    hits = np.asarray(hits, dtype=bool)[:, :k]
    n_candidates = np.asarray(n_candidates, dtype=np.int64)
    n_relevant = np.asarray(n_relevant, dtype=np.int64)
    valid = (n_relevant > 0) & (n_candidates > 0)
    shown = np.minimum(k, n_candidates)
    n_hits = hits.sum(axis=1)
    disc = discounts(k)
    dcg = (hits * disc[: hits.shape[1]]).sum(axis=1)
    ideal_cum = np.r_[0.0, np.cumsum(disc)]
    idcg = ideal_cum[np.minimum(k, n_relevant)]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "precision": n_hits / shown,
            "recall": n_hits / n_relevant,
            "ndcg": dcg / idcg,
        }
    return {name: np.where(valid, v, np.nan) for name, v in out.items()}


@dataclass
class RankingSums:
    """Running per-metric sums over users for K in ``ks`` (streamed over user batches)."""

    ks: tuple[int, ...]
    users: int = 0

    def __post_init__(self) -> None:
        self.sums = {(m, k): 0.0 for m in RANKING_METRICS for k in self.ks}

    def add(self, hits: np.ndarray, n_candidates: np.ndarray, n_relevant: np.ndarray) -> None:
        valid = (np.asarray(n_relevant) > 0) & (np.asarray(n_candidates) > 0)
        self.users += int(valid.sum())
        for k in self.ks:
            per_user = ranking_metrics_per_user(hits, n_candidates, n_relevant, k)
            for m in RANKING_METRICS:
                self.sums[(m, k)] += float(np.nansum(per_user[m]))

    def values(self) -> dict[tuple[str, int], float]:
        """Mean over the users with a relevant candidate; NaN when there is none."""
        return {key: (s / self.users if self.users else float("nan")) for key, s in self.sums.items()}


def ranking_metrics(
    users: np.ndarray, scores: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...] = (5, 10, 20)
) -> dict[tuple[str, int], float]:
    """Averaged precision/recall/NDCG@k for flat rows ``(user, score, relevant)``."""
    acc = RankingSums(tuple(ks))
    hits, n_cand, n_rel = topk_hits_grouped(users, scores, relevant, max(ks))
    acc.add(hits, n_cand, n_rel)
    return acc.values()
