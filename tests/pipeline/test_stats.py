"""The t quantile and paired intervals of pipeline.stats, against SciPy where it is installed
and against textbook values where it is not."""

from __future__ import annotations

import math

import pytest

from bonmf_pipe.pipeline.stats import mean_std, paired_difference, t_quantile, t_two_sided_mass


@pytest.mark.parametrize(("df", "q"), [(1, 12.706204736), (2, 4.302652730), (4, 2.776445105), (9, 2.262157163),
                                       (29, 2.045229642)])
def test_t_quantile_matches_the_tables(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-8)
    assert t_quantile(0.025, df) == pytest.approx(-q, abs=1e-8)


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 41):
        for p in (0.6, 0.9, 0.95, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-10, abs=1e-10)
            assert t_two_sided_mass(1.7, df) == pytest.approx(stats.t.cdf(1.7, df) * 2 - 1, abs=1e-12)


def test_paired_difference_interval():
    a, b = [0.85, 0.86, 0.84, 0.87, 0.85], [0.87, 0.875, 0.86, 0.885, 0.86]
    d = paired_difference(a, b)
    diffs = [x - y for x, y in zip(a, b)]
    mean, std = mean_std(diffs)
    half = t_quantile(0.975, 4) * std / math.sqrt(5)
    assert (d.n, d.mean, d.low, d.high) == (5, pytest.approx(mean), pytest.approx(mean - half), pytest.approx(mean + half))
    assert d.significant and d.high < 0
    same = paired_difference([0.85, 0.86, 0.84], [0.86, 0.85, 0.84])
    assert not same.significant and same.low < 0 < same.high
    one = paired_difference([0.85], [0.86])
    assert one.n == 1 and math.isnan(one.low) and not one.significant


def test_mean_std_skips_missing_values():
    assert mean_std([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    m, s = mean_std([1.0])
    assert m == 1.0 and math.isnan(s)
