"""95% intervals for the evaluation's numbers: a seeded bootstrap over prompts.

Every number of a setting is a statistic of per-prompt records (a prompt's samples stay together:
they share a prefix, so they are not independent), and every "vs off" number is a ratio of two
settings measured on the same prompts, so its bootstrap resamples prompts once for both (paired).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "bootstrap", "paired_bootstrap", "RESAMPLES"]

RESAMPLES = 2000
LEVEL = 0.95

# A statistic of n prompts: per-prompt arrays in, one number out.
Statistic = Callable[..., float]


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        return {"value": round(self.value, digits), "low": round(self.low, digits), "high": round(self.high, digits)}

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def format(self, fmt: str = "{:.3f}") -> str:
        return f"{fmt.format(self.value)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def _interval(samples: np.ndarray) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    alpha = (1 - LEVEL) / 2
    return float(np.quantile(samples, alpha)), float(np.quantile(samples, 1 - alpha))


def bootstrap(stat: Statistic, arrays: Sequence[Sequence[float]], seed: int = 0,
              resamples: int = RESAMPLES) -> Estimate:
    """stat(*arrays) with a percentile interval from resampling the n prompts (each array: (n,))."""
    cols = [np.asarray(a, dtype=float) for a in arrays]
    n = len(cols[0])
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan)
    value = stat(*cols)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))  # (B, n)
    samples = np.array([stat(*(c[i] for c in cols)) for i in idx])
    return Estimate(float(value), *_interval(samples))


def paired_bootstrap(stat: Statistic, setting: Sequence[Sequence[float]], reference: Sequence[Sequence[float]],
                     seed: int = 0, resamples: int = RESAMPLES) -> Estimate:
    """stat(setting arrays) / stat(reference arrays), the same n prompts resampled for both."""
    a = [np.asarray(x, dtype=float) for x in setting]
    b = [np.asarray(x, dtype=float) for x in reference]
    n = len(a[0])
    if n == 0 or any(len(x) != n for x in (*a, *b)):
        raise ValueError("paired_bootstrap needs per-prompt arrays of one length for both settings")

    def ratio(i: np.ndarray | slice) -> float:
        den = stat(*(x[i] for x in b))
        return stat(*(x[i] for x in a)) / den if den else math.nan

    rng = np.random.default_rng(seed)
    samples = np.array([ratio(i) for i in rng.integers(0, n, size=(resamples, n))])
    return Estimate(ratio(slice(None)), *_interval(samples))
