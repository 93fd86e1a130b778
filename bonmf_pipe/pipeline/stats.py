"""Statistics over seeds: mean and standard deviation, and paired t-intervals.

The Student t quantile is computed here (no SciPy dependency) from the exact closed form of
the t distribution's CDF for an integer number of degrees of freedom (Abramowitz & Stegun
26.7.3 and 26.7.4), inverted by bisection to full double precision. Ablations over a handful
of seeds only ever need integer degrees of freedom (seeds - 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def t_two_sided_mass(t: float, df: int) -> float:
    """A(t | df) = P(|T| <= t) for Student's t with integer ``df`` >= 1 (A&S 26.7.3/26.7.4)."""
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer (got {df})")
    t = abs(t)
    theta = math.atan(t / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2 == 1:  # odd: (2/pi) [theta + sin cos (1 + 2/3 cos^2 + 2.4/3.5 cos^4 + ...)]
        if df == 1:
            return 2.0 * theta / math.pi
        term, total = 1.0, 1.0
        for k in range(1, (df - 3) // 2 + 1):
            term *= (2 * k) / (2 * k + 1) * c * c
            total += term
        return 2.0 / math.pi * (theta + s * c * total)
    # even: sin (1 + 1/2 cos^2 + 1.3/2.4 cos^4 + ...)
    term, total = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= (2 * k - 1) / (2 * k) * c * c
        total += term
    return s * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with integer ``df`` (e.g. p=0.975 for a 95% interval)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1) (got {p})")
    if p == 0.5:
        return 0.0
    target = abs(2.0 * p - 1.0)  # P(|T| <= q)
    lo, hi = 0.0, 1.0
    while t_two_sided_mass(hi, df) < target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_two_sided_mass(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * max(1.0, hi):
            break
    q = 0.5 * (lo + hi)
    return q if p > 0.5 else -q


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for fewer than two values); NaNs are skipped."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return math.nan, math.nan
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


@dataclass(frozen=True)
class PairedDiff:
    """Mean of the per-seed differences a - b with its t-interval."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    level: float

    @property
    def significant(self) -> bool:
        """True when the interval excludes zero."""
        return self.n >= 2 and (self.high < 0.0 or self.low > 0.0)

    def as_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "std": self.std, "low": self.low, "high": self.high,
                "level": self.level, "significant": self.significant}


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedDiff:
    """The paired comparison of two models over the same seeds: mean(a - b) with a two-sided
    ``level`` Student-t interval (df = pairs - 1). Pairs with a NaN on either side are skipped."""
    if len(a) != len(b):
        raise ValueError("paired_difference needs one value per seed on both sides")
    diffs = [x - y for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    n = len(diffs)
    mean, std = mean_std(diffs)
    if n < 2:
        return PairedDiff(n, mean, std, math.nan, math.nan, level)
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return PairedDiff(n, mean, std, mean - half, mean + half, level)
