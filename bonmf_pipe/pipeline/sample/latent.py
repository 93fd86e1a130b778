"""The latent model behind ``bonmf-pipe sample``: factors, biases, popularity and rating blocks.

Pure numpy, no file formats. ``build_model`` draws everything whose size is the number of
items or users (factors, biases, popularity, activity); ``RatingBlocks`` then yields the
ratings user block by user block, so memory stays bounded by ``items x factors`` plus one
block, whatever the number of ratings. See ``bonmf_pipe.pipeline.sample.writer`` for the model
in words.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bonmf_pipe.errors import ConfigError

# Scales of the latent model (standard deviations), chosen so that ratings spread like
# MovieLens (std about 1 star) and the user-item interaction explains a good part of it.
FACTOR_STD = 0.45  # each coordinate of a user's or an item's factor vector
TASTE = 0.25  # population taste: the mean user factor is +-TASTE, alternating by factor
USER_BIAS_STD = 0.40
ITEM_BIAS_STD = 0.35
POPULARITY_QUALITY = 0.8  # how much an item's mean appeal raises its popularity (log scale)
HEAVY_FRACTION = 0.25  # users rating more than this share of the catalogue use Gumbel top-k

# Stream ids for numpy SeedSequence([seed, stream, ...]): one independent stream per use.
STREAM_ITEMS, STREAM_USERS, STREAM_BLOCKS, STREAM_POSTERS, STREAM_TEXT = range(5)


def rng_for(seed: int, stream: int, *keys: int) -> np.random.Generator:
    """An independent generator for ``(seed, stream, *keys)``."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *keys]))


@dataclass(frozen=True)
class Period:
    """The span of rating timestamps and movie years of one edition."""

    start: int  # first rating timestamp (seconds since the epoch)
    end: int  # last rating timestamp
    first_year: int  # oldest movie
    last_year: int  # newest movie


@dataclass
class LatentModel:
    """Everything the generator draws per item and per user (indices are 0-based)."""

    mean: float  # global mean rating before rounding
    taste: np.ndarray  # (factors,) the population's mean user factor
    item_z: np.ndarray  # (items, factors) standardised item factors: V = FACTOR_STD * item_z
    item_factors: np.ndarray  # (items, factors) float32
    item_bias: np.ndarray  # (items,)
    item_appeal: np.ndarray  # (items,) item_bias + taste . V: the item's expected rating offset
    item_log_pop: np.ndarray  # (items,) log popularity (Zipf rank plus appeal), unnormalised
    item_year: np.ndarray  # (items,) release year
    item_release: np.ndarray  # (items,) release timestamp (seconds)
    user_factors: np.ndarray  # (users, factors) float32
    user_bias: np.ndarray  # (users,)
    user_counts: np.ndarray  # (users,) int64, number of ratings of each user; sums to R
    user_start: np.ndarray  # (users,) first rating timestamp of each user
    user_span: np.ndarray  # (users,) seconds over which the user rates

    @property
    def items(self) -> int:
        return len(self.item_bias)

    @property
    def users(self) -> int:
        return len(self.user_bias)

    def expected_rating(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The noiseless score mean + b_u + b_i + U_u . V_i (before rounding and clipping)."""
        dot = np.einsum("ij,ij->i", self.user_factors[users], self.item_factors[items])
        return self.mean + self.user_bias[users] + self.item_bias[items] + dot


def check_sizes(users: int, items: int, ratings: int, factors: int) -> None:
    """Refuse sizes no sample can have, saying why."""
    if users < 1 or items < 1 or factors < 1:
        raise ConfigError(f"--users, --items and factors must be at least 1 (got {users}, {items}, {factors}).")
    if ratings < users:
        raise ConfigError(
            f"--ratings {ratings:,} is below --users {users:,}: every user rates at least one movie. "
            "Raise --ratings or lower --users."
        )
    if ratings > users * items:
        raise ConfigError(
            f"--ratings {ratings:,} is more than --users x --items = {users * items:,}: a user rates a "
            "movie at most once. Lower --ratings or raise --users/--items."
        )


def build_model(
    seed: int, users: int, items: int, ratings: int, factors: int, period: Period, mean: float,
    popularity_exponent: float = 1.0, activity_sigma: float = 1.0, min_user_ratings: int = 20,
) -> LatentModel:
    """Draw the item and user sides of the model (sizes were checked by ``check_sizes``)."""
    check_sizes(users, items, ratings, factors)
    taste = TASTE * np.where(np.arange(factors) % 2 == 0, 1.0, -1.0)
    ir = rng_for(seed, STREAM_ITEMS)
    item_z = ir.standard_normal((items, factors))
    item_factors = (FACTOR_STD * item_z).astype(np.float32)
    item_bias = ITEM_BIAS_STD * ir.standard_normal(items)
    appeal = item_bias + item_factors @ taste
    rank = ir.permutation(items) + 1
    log_pop = -popularity_exponent * np.log(rank) + POPULARITY_QUALITY * appeal
    year, release = _release_dates(ir, items, period)
    ur = rng_for(seed, STREAM_USERS)
    user_factors = (taste + FACTOR_STD * ur.standard_normal((users, factors))).astype(np.float32)
    user_bias = USER_BIAS_STD * ur.standard_normal(users)
    activity = ur.lognormal(0.0, activity_sigma, users)
    floor = min(min_user_ratings, ratings // users, items)
    counts = allocate_counts(activity, ratings, floor, items)
    start, span = _user_periods(ur, users, period)
    return LatentModel(
        mean=mean, taste=taste, item_z=item_z, item_factors=item_factors, item_bias=item_bias,
        item_appeal=appeal, item_log_pop=log_pop, item_year=year, item_release=release,
        user_factors=user_factors, user_bias=user_bias, user_counts=counts, user_start=start, user_span=span,
    )


def _release_dates(rng: np.random.Generator, items: int, period: Period) -> tuple[np.ndarray, np.ndarray]:
    """Years skewed towards the recent end (like MovieLens), and a release time within the year."""
    span = period.last_year - period.first_year + 1
    year = period.last_year - np.floor(span * rng.random(items) ** 2.5).astype(np.int64)
    year = np.clip(year, period.first_year, period.last_year)
    jan1 = (year - 1970) * 365.2425 * 86400
    release = (jan1 + rng.random(items) * 364 * 86400).astype(np.int64)
    return year, np.minimum(release, period.end - 61 * 86400)  # seen (up to 60 days later) by the end


def _user_periods(rng: np.random.Generator, users: int, period: Period) -> tuple[np.ndarray, np.ndarray]:
    """Each user starts at a random time; 40% rate within a day, the rest over months or years."""
    start = period.start + (rng.random(users) * (period.end - period.start) * 0.9).astype(np.int64)
    one_day = rng.random(users) < 0.4
    span = np.where(one_day, 3600 + rng.random(users) * 86400, rng.exponential(200 * 86400, users))
    return start, np.minimum(span, period.end - start).astype(np.int64)


def allocate_counts(weights: np.ndarray, total: int, floor: int, cap: int) -> np.ndarray:
    """Integer counts in ``[floor, cap]`` summing exactly to ``total``, proportional to ``weights``.

    Water-filling: share what is left over the users below the cap, in proportion to their
    weight; clip at the cap; repeat; the last few units go one each to the heaviest users.
    """
    n = len(weights)
    if not floor * n <= total <= cap * n:
        raise ConfigError(f"cannot give {n:,} users between {floor} and {cap} ratings each summing to {total:,}.")
    counts = np.full(n, floor, dtype=np.int64)
    order = np.argsort(-weights, kind="stable")
    left = total - floor * n
    while left > 0:
        room = cap - counts
        open_ = room > 0
        share = np.floor(left * np.where(open_, weights, 0.0) / weights[open_].sum()).astype(np.int64)
        add = np.minimum(share, room)
        if add.sum() == 0:  # fewer units left than open users: one each, heaviest first
            take = order[open_[order]][:left]
            add = np.zeros(n, dtype=np.int64)
            add[take] = 1
        counts += add
        left -= int(add.sum())
    return counts


@dataclass
class RatingBlock:
    """The ratings of consecutive users ``user_lo..user_hi-1`` (0-based), sorted by user, item."""

    user_lo: int
    user_hi: int
    users: np.ndarray  # int64 user index
    items: np.ndarray  # int64 item index
    score: np.ndarray  # float64: model score plus noise, before the edition's rounding
    timestamp: np.ndarray  # int64
    rng: np.random.Generator  # the block's generator, for edition-specific draws (tags, rounding)


class RatingBlocks:
    """Iterate the ratings block by block: about ``block_ratings`` ratings per block.

    Block boundaries depend only on the user counts and ``block_ratings``, and each block
    draws from its own generator, so the output is the same whatever the consumer does.
    """

    def __init__(self, model: LatentModel, seed: int, block_ratings: int, noise: float):
        self.model, self.seed, self.noise = model, seed, noise
        ends = np.cumsum(model.user_counts)
        cuts = np.searchsorted(ends, np.arange(block_ratings, ends[-1], block_ratings), side="left") + 1
        self.bounds = np.unique(np.concatenate([[0], cuts, [model.users]]))
        p = np.exp(model.item_log_pop - model.item_log_pop.max())
        self.log_p = np.log(p / p.sum())
        self.cdf = np.cumsum(p / p.sum())
        self.cdf[-1] = 1.0

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __iter__(self) -> Iterator[RatingBlock]:
        for b, (lo, hi) in enumerate(zip(self.bounds[:-1], self.bounds[1:], strict=True)):
            yield self.block(b, int(lo), int(hi))

    def block(self, index: int, lo: int, hi: int) -> RatingBlock:
        rng = rng_for(self.seed, STREAM_BLOCKS, index)
        m = self.model
        users, items = self._sample_items(rng, lo, hi)
        score = m.expected_rating(users, items) + self.noise * rng.standard_normal(len(users))
        when = m.user_start[users] + (m.user_span[users] * rng.random(len(users)) ** 3).astype(np.int64)
        seen = m.item_release[items] + (rng.random(len(users)) * 60 * 86400).astype(np.int64)
        end = m.user_start[users] + np.maximum(m.user_span[users], 0)
        ceiling = np.maximum(end, seen)  # a film released after the user's span: rated soon after release
        timestamp = np.minimum(np.maximum(when, seen), ceiling)
        return RatingBlock(lo, hi, users, items, score, timestamp, rng)

    def _sample_items(self, rng: np.random.Generator, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Distinct items per user, drawn in proportion to popularity without replacement."""
        counts = self.model.user_counts[lo:hi]
        heavy = counts > HEAVY_FRACTION * self.model.items
        users, items, short = self._successive(rng, np.flatnonzero(~heavy), counts[~heavy])
        parts_u, parts_i = [lo + users], [items]
        for k in np.concatenate([np.flatnonzero(heavy), short]).astype(np.int64):
            parts_u.append(np.full(counts[k], lo + k, dtype=np.int64))
            parts_i.append(self._gumbel_top_k(rng, int(counts[k])))
        users = np.concatenate(parts_u)
        items = np.concatenate(parts_i)
        order = np.lexsort((items, users))
        return users[order], items[order]

    def _gumbel_top_k(self, rng: np.random.Generator, k: int) -> np.ndarray:
        """``k`` distinct items, successive sampling by popularity, in O(items)."""
        keys = self.log_p + rng.gumbel(size=len(self.log_p))
        return np.argpartition(-keys, k - 1)[:k].astype(np.int64)

    def _successive(
        self, rng: np.random.Generator, who: np.ndarray, need: np.ndarray, max_rounds: int = 30
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw with replacement, keep each user's first ``need`` distinct items (= sampling
        without replacement in proportion to popularity); top up users still short. Returns
        users, items, and the users still short after ``max_rounds`` (for Gumbel top-k)."""
        n_items = self.model.items
        keys = np.empty(0, dtype=np.int64)  # local_user * n_items + item, first occurrence kept
        have = np.zeros(len(who), dtype=np.int64)
        drawn = np.zeros(len(who), dtype=np.int64)
        short = np.arange(len(who))
        gave_up = np.zeros(len(who), dtype=bool)
        for _ in range(max_rounds):
            ratio = np.where(have[short] > 0, drawn[short] / np.maximum(have[short], 1), 1.0)
            want = np.ceil((need[short] - have[short]) * ratio * 1.2).astype(np.int64) + 4
            costly = want > 8 * need[short] + 64  # rare items needed: Gumbel top-k is cheaper
            gave_up[short[costly]] = True
            short, want = short[~costly], want[~costly]
            if not len(short):
                break
            owner = np.repeat(short, want)
            picks = np.searchsorted(self.cdf, rng.random(len(owner)), side="right")
            keys = _first_occurrences(np.concatenate([keys, owner * n_items + np.minimum(picks, n_items - 1)]))
            drawn[short] += want
            have = np.bincount(keys // n_items, minlength=len(who))
            short = np.flatnonzero((have < need) & ~gave_up)
        short = np.flatnonzero(gave_up | (have < need))
        keys = keys[np.isin(keys // n_items, short, invert=True)]
        local = keys // n_items
        start = np.concatenate([[0], np.cumsum(np.bincount(local, minlength=len(who)))[:-1]])
        order = np.argsort(local, kind="stable")  # by user, keeping draw order within a user
        rank = np.arange(len(keys)) - start[local[order]]
        kept = order[rank < need[local[order]]]
        return who[local[kept]], keys[kept] % n_items, who[short]


def _first_occurrences(keys: np.ndarray) -> np.ndarray:
    """``keys`` without repeats, keeping the first occurrence of each, in original order."""
    _, first = np.unique(keys, return_index=True)
    return keys[np.sort(first)]
