"""Fold-in: recommendations for a user who arrived after training, from a few of their ratings.

The run's model stays as it was trained (item side, network, global bias all frozen); only a
new user's embedding and bias are solved, by L-BFGS. The default objective is the MAP estimate
under a Gaussian prior fitted to the run's trained users: mean squared error over the given
ratings plus ``noise_var / n`` times the squared distance of the embedding and bias from the
trained users' mean, per dimension in units of their variance. A few ratings then move the
user a little away from the typical user, many ratings far. (The training objective's own L2
toward zero, ``prior="l2"``, reproduces a trained user from their own ratings, but lets a
handful of ratings overfit: on ml-latest-small's cold-users split it was worse than no fold-in,
see benchmarks/cold_items.py --new-users.) The model is called through
``torch.func.functional_call`` with its user tables replaced by the one new row, so any
registered model whose user side is ``user`` (embedding) and ``user_bias`` works (bonmf, nmf,
svd). Items the run never trained on (cold items, items ingested after training) are scored
like any other through the unknown-ID path, from their content when the model has side inputs.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import torch
from torch.func import functional_call

from bonmf_pipe.errors import ConfigError, InputError
from bonmf_pipe.evaluation import streams
from bonmf_pipe.evaluation.evaluate import resolve_run_id
from bonmf_pipe.evaluation.metrics import topk_columns
from bonmf_pipe.evaluation.recommend import _with_titles, new_items_note
from bonmf_pipe.featurestore.runs import read_run_config
from bonmf_pipe.featurestore.sql import fetch_arrow
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.trainer import Scorer, load_scorer

USER_TABLES = ("user.weight", "user_bias.weight")


@dataclass(frozen=True)
class FoldInSettings:
    """How a new user is folded in."""

    prior: str = "population"
    """population: the MAP estimate under a Gaussian prior fitted to the run's trained users (the
    mean and variance of each embedding dimension and of the bias) with the rating noise taken
    as ``noise_var``, so a few ratings move the user a little from the typical user and many
    ratings far; l2: the training objective's own penalty toward zero (``l2``), which lets a
    handful of ratings overfit (measured worse than no fold-in on ml-latest-small)."""
    noise_var: float = 0.8
    """Rating noise variance of the population prior (about a good model's MSE on MovieLens)."""
    l2: float | None = None
    """prior=l2: penalty on the squared embedding and bias norms; None = the run's own ``l2``."""
    max_iter: int = 200
    """Most L-BFGS iterations (the problem has embedding_dim + 1 unknowns; it converges in tens)."""


@dataclass
class FoldedUser:
    """A new user's solved embedding and bias, and how well they fit the given ratings."""

    weights: dict[str, torch.Tensor]  # the user tables' one row each, by parameter name
    n_ratings: int
    fit_rmse: float
    seconds: float
    notes: list[str] = field(default_factory=list)


def read_ratings_file(path: Path) -> dict[int, float]:
    """``item_id,rating`` rows of a CSV file (a header line naming them is optional)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except OSError as exc:
        raise InputError(f"Cannot read the ratings file {path}: {exc.strerror or exc}. Give a CSV of item_id,rating.") from exc
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; give a CSV of item_id,rating rows.") from None
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]  # a header
    out: dict[int, float] = {}
    for line, row in enumerate(rows, start=2):
        if len(row) < 2 or not _is_number(row[0]) or not _is_number(row[1]):
            raise InputError(f"{path}: row {row!r} is not 'item_id,rating' (e.g. 1,4.5); fix or remove it.")
        out[int(float(row[0]))] = float(row[1])
    return out


def parse_rate(values: list[str]) -> dict[int, float]:
    """``["1=4.5", "260=5"]`` (``--rate ITEM=STARS``) -> {1: 4.5, 260: 5.0}."""
    out: dict[int, float] = {}
    for v in values:
        item, sep, stars = v.partition("=")
        if not sep or not _is_number(item) or not _is_number(stars):
            raise ConfigError(f"--rate {v!r}: write ITEM=STARS, e.g. --rate 1=4.5.")
        out[int(float(item))] = float(stars)
    return out


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def fold_in(scorer: Scorer, ratings: dict[int, float], settings: FoldInSettings | None = None) -> FoldedUser:
    """Solve one new user's embedding and bias from ``ratings`` (item id -> stars)."""
    s = settings or FoldInSettings()
    started = time.perf_counter()
    if not ratings:
        raise ConfigError("Fold-in needs at least one rating: give --ratings FILE or --rate ITEM=STARS.")
    model = scorer.model.eval()
    params = dict(model.named_parameters())
    if "user.weight" not in params:
        raise ConfigError(f"The run's model ({type(model).__name__}) has no user embedding to fold a new user into.")
    items = np.fromiter(ratings, dtype=np.int64)
    stars = np.array([ratings[i] for i in items.tolist()], dtype=np.float32)
    bad = stars[(stars < scorer.lo) | (stars > scorer.hi)]
    if bad.size:
        raise ConfigError(f"Ratings must lie in the run's rating range {scorer.lo:g}..{scorer.hi:g} (got {bad[0]:g}).")
    unknown = items[scorer.maps.item_pos(items) == len(scorer.maps.item_ids)]
    if unknown.size:
        raise InputError(
            f"{unknown.size} rated item id(s) are not in the run's catalogue (e.g. {unknown[:5].tolist()}); "
            "rate items of the store's items table."
        )
    if s.prior not in ("population", "l2"):
        raise ConfigError(f"Fold-in prior {s.prior!r}: use population or l2.")
    l2 = float(scorer.config.get("effective", {}).get("l2", 0.0) if s.l2 is None else s.l2)
    dev = scorer.device
    user_idx, item_idx, pos = _indices(scorer, items)
    target = torch.from_numpy(stars).to(dev)
    names = [n for n in USER_TABLES if n in params]
    # start from the unknown user's row (what the model says for a user it knows nothing of)
    weights = {n: params[n][:1].detach().clone().requires_grad_(True) for n in names}
    if s.prior == "population":  # trained users' rows (row 0 is the unknown user)
        trained = {n: params[n][1:].detach() for n in names}
        mean = {n: t.mean(0, keepdim=True) if len(t) else torch.zeros_like(weights[n]) for n, t in trained.items()}
        var = {n: t.var(0, keepdim=True).clamp_min(1e-6) if len(t) > 1 else torch.ones_like(weights[n]) for n, t in trained.items()}
        weight = s.noise_var / len(items)  # the prior's weight beside the mean squared error
        penalty = lambda: weight * sum(((weights[n] - mean[n]).pow(2) / var[n]).sum() for n in names)  # noqa: E731
    else:
        penalty = lambda: l2 * sum(w.pow(2).sum() for w in weights.values())  # noqa: E731
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        opt = torch.optim.LBFGS(list(weights.values()), lr=1.0, max_iter=s.max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            pred, _ = functional_call(model, weights, (user_idx, item_idx, pos))
            loss = (pred - target).pow(2).mean() + penalty()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            pred, _ = functional_call(model, weights, (user_idx, item_idx, pos))
            fit = float(torch.sqrt((pred.clamp(scorer.lo, scorer.hi) - target).pow(2).mean()))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    solved = {n: w.detach() for n, w in weights.items()}
    return FoldedUser(solved, len(items), fit, time.perf_counter() - started)


def _indices(scorer: Scorer, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(user index 0 for every row: the one replaced row, item embedding index, feature row)."""
    pos = scorer.maps.item_pos(items)
    item_idx = np.append(scorer.maps.item_index, 0)[pos]
    dev = scorer.device
    return (torch.zeros(len(items), dtype=torch.long, device=dev), torch.from_numpy(item_idx).to(dev),
            torch.from_numpy(pos).to(dev))


@torch.no_grad()
def score_folded(scorer: Scorer, user: FoldedUser, item_ids: np.ndarray | None = None,
                 batch_size: int = 1 << 16) -> np.ndarray:
    """The folded-in user's predicted rating of each of ``item_ids`` (default: the catalogue)."""
    items = scorer.item_ids if item_ids is None else np.asarray(item_ids, dtype=np.int64)
    out = np.empty(len(items), dtype=np.float32)
    for start in range(0, len(items), batch_size):
        u, i, p = _indices(scorer, items[start : start + batch_size])
        pred, _ = functional_call(scorer.model, user.weights, (u, i, p))
        out[start : start + len(u)] = pred.clamp(scorer.lo, scorer.hi).cpu().numpy()
    return out


def recommend_new_user(store: Store, run_id: str, user_id: int, ratings: dict[int, float], k: int = 10,
                       settings: FoldInSettings | None = None) -> pa.Table:
    """The top ``k`` items (rank, item_id, title, year, score) for a user folded in from
    ``ratings``, leaving out what they rated (and, for a user the run knows, what they rated
    in its training data). The schema metadata names the run, the user and the fold-in's fit."""
    if k < 1:
        raise ConfigError(f"-k must be at least 1 (got {k}).")
    run_id = resolve_run_id(store, run_id)
    scorer = load_scorer(store, run_id)
    user = fold_in(scorer, ratings, settings)
    scores = score_folded(scorer, user).astype(np.float64)
    seen = np.fromiter(ratings, dtype=np.int64)
    if np.isin(int(user_id), scorer.user_ids):
        files = streams.split_files(store, read_run_config(store, run_id)["split_id"])
        with streams.connection(store) as con:
            seen = np.union1d(seen, streams.rated_in_training(con, files, int(user_id)))
    scores[np.isin(scorer.item_ids, seen)] = -np.inf
    top = topk_columns(scores[None, :], k)[0]
    top = top[np.isfinite(scores[top])]
    table = _with_titles(store, scorer.item_ids[top], scores[top])
    note = (f"user {user_id} folded in from {user.n_ratings} rating(s) in {user.seconds:.2f} s "
            f"(fit RMSE {user.fit_rmse:.3f}); the run's item side is unchanged")
    if scorer.new_items:
        note += "; " + new_items_note(scorer.new_items, run_id)
    return table.replace_schema_metadata({"run_id": run_id, "user_id": str(int(user_id)), "note": note})


@dataclass
class FoldInEval:
    """New users scored two ways on the ratings they did not give: the unknown user the run
    learned (no fold-in), and folded in from their first ``given`` ratings."""

    given: int
    users: int  # test users the run has no embedding for, with more than ``given`` ratings
    rows: int  # their held-back ratings scored
    rmse_unknown: float
    rmse_folded: float
    seconds_per_user: float


def evaluate_fold_in(store: Store, run_id: str, given: int = 5, settings: FoldInSettings | None = None,
                     max_users: int | None = None) -> FoldInEval:
    """Fold in each test user the run never trained on (a ``cold-users`` split's held-out users)
    from their ``given`` earliest test ratings, and score the rest of their test ratings."""
    if given < 1:
        raise ConfigError(f"given must be at least 1 (got {given}).")
    run_id = resolve_run_id(store, run_id)
    scorer = load_scorer(store, run_id)
    files = streams.split_files(store, read_run_config(store, run_id)["split_id"])
    con = duckdb.connect(":memory:")
    try:
        con.register("known", pa.table({"user_id": pa.array(scorer.user_ids, pa.int64())}))
        test = fetch_arrow(con.sql(
            "SELECT user_id, item_id, rating FROM read_parquet($files) WHERE part = 'test' "
            "AND user_id NOT IN (SELECT user_id FROM known) ORDER BY user_id, timestamp, item_id",
            params={"files": [str(f) for f in files]},
        ))
    finally:
        con.close()
    users = test.column("user_id").to_numpy()
    items = test.column("item_id").to_numpy()
    stars = test.column("rating").to_numpy().astype(np.float64)
    bounds = np.flatnonzero(np.diff(users)) + 1
    starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(users)]])
    picked = [(a, b) for a, b in zip(starts, ends) if b - a > given][: max_users or None]
    err_unknown = err_folded = 0.0
    rows, seconds = 0, 0.0
    for a, b in picked:
        user = fold_in(scorer, {int(i): float(r) for i, r in zip(items[a : a + given], stars[a : a + given])}, settings)
        rest = slice(a + given, b)
        folded = score_folded(scorer, user, items[rest]).astype(np.float64)
        unknown = scorer.predict(users[rest], items[rest]).astype(np.float64)
        err_folded += float(((folded - stars[rest]) ** 2).sum())
        err_unknown += float(((unknown - stars[rest]) ** 2).sum())
        rows += int(b - a - given)
        seconds += user.seconds
    n = max(rows, 1)
    return FoldInEval(given, len(picked), rows, math.sqrt(err_unknown / n) if rows else math.nan,
                      math.sqrt(err_folded / n) if rows else math.nan, seconds / max(len(picked), 1))
