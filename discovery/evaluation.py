"""Held-out numbers per category, for the detector and the independent judges side by side.

Every scorer is read the same way: AUROC of each toxic category against all benign texts
(benign and benign-hard together), recall of each toxic category at the scorer's threshold,
false-positive rate on benign and on benign-hard, and AUROC on three unions (non-lexical:
insult, threat, identity/dehumanising; lexical: profanity; all). Each number comes with a 95%
interval from a group bootstrap (discovery/intervals.py). Also used by
tests/discovery/test_shipped.py to recompute the report from the committed held-out file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from discovery.features import auroc
from discovery.intervals import group_bootstrap
from discovery.labelled import CATEGORIES, LEXICAL, NON_LEXICAL, TOXIC_CATEGORIES

__all__ = ["FRONTIER_THRESHOLDS", "UNIONS", "frontier", "non_lexical_by_set", "scorer_metrics",
           "subset_recall"]

UNIONS: dict[str, tuple[str, ...]] = {"non-lexical": NON_LEXICAL, "lexical": LEXICAL, "all": TOXIC_CATEGORIES}


def _rounded(estimate: tuple[float, float, float]) -> list[float]:
    return [round(v, 4) for v in estimate]


def scorer_metrics(scores: np.ndarray, texts: Sequence[dict[str, Any]], threshold: float, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """One scorer's held-out numbers, each [value, low, high]."""
    scores = np.asarray(scores, dtype=float)
    category = np.array([t["category"] for t in texts])
    labels = np.array([t["label"] for t in texts])
    groups = [t["group"] for t in texts]
    benign = labels == 0

    def auc_of(positive: np.ndarray) -> Any:
        keep = positive | benign
        idx_all = np.flatnonzero(keep)
        return group_bootstrap(lambda i: auroc(scores[idx_all[i]], positive[idx_all[i]]),
                               [groups[j] for j in idx_all], n_boot, seed)

    def rate_of(members: np.ndarray) -> Any:
        idx_all = np.flatnonzero(members)

        def rate(i: np.ndarray) -> float:
            if len(i) == 0:
                raise ValueError("empty resample")
            return float((scores[idx_all[i]] >= threshold).mean())

        return group_bootstrap(rate, [groups[j] for j in idx_all], n_boot, seed)

    out: dict[str, Any] = {"threshold": threshold, "categories": {}, "unions": {}}
    for c in CATEGORIES:
        members = category == c
        if not members.any():
            continue
        row: dict[str, Any] = {"texts": int(members.sum())}
        if c in TOXIC_CATEGORIES:
            if benign.any():  # an AUROC needs benign texts (a subset may have none)
                row["auroc"] = _rounded(auc_of(members))
            row["recall"] = _rounded(rate_of(members))
        else:
            row["false_positive_rate"] = _rounded(rate_of(members))
        out["categories"][c] = row
    for name, cats in UNIONS.items():
        positive = np.isin(category, cats)
        if positive.any() and benign.any():
            out["unions"][name] = {"texts": int(positive.sum()), "auroc": _rounded(auc_of(positive))}
    return out


def non_lexical_by_set(scores: np.ndarray, texts: Sequence[dict[str, Any]], threshold: float,
                       n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per labelled set holding non-lexical toxic texts (the instructed sets, whose labels are
    noisy, and the templated lines, whose labels are right by construction): the scorer's
    numbers on that set alone (its toxic lines against its own benign lines), so the two are
    never read as one."""
    sets = np.array([t.get("set", "") for t in texts])
    category = np.array([t["category"] for t in texts])
    out: dict[str, Any] = {}
    for name in sorted(set(sets[np.isin(category, NON_LEXICAL)])):
        mask = sets == name
        m = scorer_metrics(np.asarray(scores)[mask], [t for t, k in zip(texts, mask, strict=True) if k],
                           threshold, n_boot, seed)
        if "non-lexical" in m["unions"]:
            out[name] = {"auroc": m["unions"]["non-lexical"], "categories": m["categories"]}
    return out


def subset_recall(scores: np.ndarray, threshold: float, mask: np.ndarray) -> dict[str, float | int]:
    """Texts in `mask` and the share of them at or above `threshold`."""
    n = int(np.asarray(mask).sum())
    return {"texts": n, "flagged": round(float((np.asarray(scores)[mask] >= threshold).mean()), 4) if n else 0.0}


# Thresholds a policy may set (detection.prompt_threshold / completion_threshold): the frontier
# says what each buys in recall and costs in false positives on a held-out split.
FRONTIER_THRESHOLDS = (0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05)


def frontier(scores: np.ndarray, categories: np.ndarray,
             thresholds: Sequence[float] = FRONTIER_THRESHOLDS) -> list[dict[str, Any]]:
    """Per threshold: the share of each category's texts at or above it (recall on the toxic
    categories, false-positive rate on the benign ones)."""
    categories = np.asarray(categories)
    return [{"threshold": t, "flagged": {c: subset_recall(scores, t, categories == c)["flagged"]
                                         for c in CATEGORIES if (categories == c).any()}}
            for t in thresholds]
