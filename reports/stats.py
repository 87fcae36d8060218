"""95% intervals and arm-vs-control tests from the totals the gateway exports (count, sum, sum of squares).

- Means (completion toxicity, fluency perplexity, steered tokens per response): Student-t interval
  on the exact sample mean and variance. The quantities are bounded or light-tailed per response and
  the central limit theorem covers the means at the sample sizes an experiment runs at; below ~30
  responses per arm read the interval as rough (the report prints n).
- Flagged rate: Wilson score interval, which stays inside [0, 1] and keeps its coverage when
  flags are rare (the usual case), where the normal interval does not.
- Arm vs control, means: Welch's t-test (and the Welch-Satterthwaite interval of the difference).
  Steering moves the spread of scores as well as their mean, so equal variances cannot be assumed;
  Welch needs only each arm's n, mean and variance, which the counters give exactly.
- Arm vs control, flagged rate: Fisher's exact test on the 2x2 table (flagged / not, arm / control):
  exact at any count, so it stays valid when an arm has a handful of flags.
- Several arms against one control: each p-value is also given Holm-adjusted over the arms, so
  "significant at 0.05" holds family-wide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

from reports.sources import Moments

__all__ = ["Difference", "Estimate", "fisher", "holm", "mean_interval", "welch", "wilson"]

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: float


@dataclass(frozen=True)
class Difference:
    """arm - control, its 95% interval (NaN where the test has none) and two-sided p-value."""

    value: float
    low: float
    high: float
    p: float


def mean_interval(m: Moments) -> Estimate:
    if m.n < 2:
        return Estimate(m.mean, math.nan, math.nan, m.n)
    half = stats.t.ppf(0.5 + LEVEL / 2, m.n - 1) * math.sqrt(m.variance / m.n)
    return Estimate(m.mean, m.mean - half, m.mean + half, m.n)


def wilson(k: float, n: float) -> Estimate:
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan, n)
    z = stats.norm.ppf(0.5 + LEVEL / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def welch(arm: Moments, control: Moments) -> Difference:
    diff = arm.mean - control.mean
    if arm.n < 2 or control.n < 2:
        return Difference(diff, math.nan, math.nan, math.nan)
    a, c = arm.variance / arm.n, control.variance / control.n
    se = math.sqrt(a + c)
    if se == 0:  # both arms constant: equal means are no evidence of a difference, unequal are certain
        return Difference(diff, diff, diff, 1.0 if diff == 0 else 0.0)
    df = (a + c) ** 2 / (a * a / (arm.n - 1) + c * c / (control.n - 1))
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * se
    p = 2 * stats.t.sf(abs(diff) / se, df)
    return Difference(diff, diff - half, diff + half, float(p))


def fisher(k_arm: float, n_arm: float, k_control: float, n_control: float) -> Difference:
    """Difference of flagged rates with Fisher's exact p-value (counts rounded: Prometheus windows
    extrapolate them to non-whole numbers)."""
    ka, na, kc, nc = (round(x) for x in (k_arm, n_arm, k_control, n_control))
    if na <= 0 or nc <= 0:
        return Difference(math.nan, math.nan, math.nan, math.nan)
    _, p = stats.fisher_exact([[ka, na - ka], [kc, nc - kc]])
    return Difference(ka / na - kc / nc, math.nan, math.nan, float(p))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count towards the family)."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(order)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
