"""Intervals and tests from (count, sum, sum of squares) against the same statistics on raw data."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from reports.sources import Moments
from reports.stats import fisher, holm, mean_interval, welch, wilson


def moments(xs: list[float]) -> Moments:
    return Moments(len(xs), sum(xs), sum(x * x for x in xs))


def sample(seed: int, n: int, mean: float, sd: float) -> list[float]:
    rng = random.Random(seed)
    return [min(1.0, max(0.0, rng.gauss(mean, sd))) for _ in range(n)]


def test_mean_interval_is_the_t_interval_of_the_raw_data() -> None:
    xs = sample(1, 40, 0.3, 0.2)
    e = mean_interval(moments(xs))
    low, high = stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / len(xs), scale=stats.sem(xs))
    assert (e.value, e.low, e.high, e.n) == pytest.approx((sum(xs) / len(xs), low, high, 40))
    assert math.isnan(mean_interval(moments([0.5])).low)


def test_welch_matches_scipy_on_the_raw_data() -> None:
    a, b = sample(2, 50, 0.25, 0.15), sample(3, 35, 0.35, 0.3)
    d = welch(moments(a), moments(b))
    assert d.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (d.value, d.low, d.high) == pytest.approx((sum(a) / 50 - sum(b) / 35, ci.low, ci.high))


def test_wilson_matches_statsmodels() -> None:
    for k, n in ((0, 30), (3, 40), (40, 40), (17, 23)):
        e = wilson(k, n)
        assert (e.low, e.high) == pytest.approx(proportion_confint(k, n, alpha=0.05, method="wilson"))


def test_fisher_and_holm() -> None:
    d = fisher(2, 40, 9, 38)
    assert d.p == pytest.approx(stats.fisher_exact([[2, 38], [9, 29]])[1])
    assert d.value == pytest.approx(2 / 40 - 9 / 38)
    ps = [0.01, 0.04, 0.03, math.nan]
    assert holm(ps)[:3] == pytest.approx(list(multipletests(ps[:3], method="holm")[1]))
    assert math.isnan(holm(ps)[3])
