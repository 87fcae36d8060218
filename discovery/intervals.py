"""95% intervals for the held-out report: a percentile bootstrap over groups.

Texts are not independent: both views of an instructed line (raw and in the chat template) are
two texts of one group. A Wilson interval would count them twice, so every interval here
resamples groups (with all their texts) with replacement: `n_boot` resamples, the 2.5th and
97.5th percentiles of the statistic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["Estimate", "group_bootstrap"]

Estimate = tuple[float, float, float]  # (value, low, high)


def group_bootstrap(statistic: Callable[[np.ndarray], float], groups: Sequence[str], n_boot: int = 1000,
                    seed: int = 0) -> Estimate:
    """(statistic(all), 2.5th, 97.5th percentile) with `statistic` taking text indices (k,).

    A resample where the statistic is undefined (it raises ValueError, e.g. an AUROC with one
    class missing) is skipped.
    """
    groups = np.asarray(groups)
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    value = float(statistic(np.arange(len(groups))))
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        picked = rng.integers(0, len(names), len(names))
        idx = np.concatenate([members[g] for g in picked])
        try:
            samples.append(float(statistic(idx)))
        except ValueError:
            continue
    if not samples:
        return value, float("nan"), float("nan")
    low, high = np.percentile(samples, [2.5, 97.5])
    return value, float(low), float(high)
