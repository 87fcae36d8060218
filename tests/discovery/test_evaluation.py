"""Held-out metrics and their group-bootstrap intervals on synthetic scores."""

from __future__ import annotations

import numpy as np
import pytest

from discovery.evaluation import frontier, scorer_metrics
from discovery.intervals import group_bootstrap


def _texts(categories: list[str]) -> list[dict]:
    toxic = {"profanity", "insult", "threat", "identity/dehumanising"}
    return [{"category": c, "label": int(c in toxic), "group": f"g{i // 2}"} for i, c in enumerate(categories)]


def test_group_bootstrap_brackets_the_value_and_resamples_groups() -> None:
    values = np.arange(40, dtype=float)
    est = group_bootstrap(lambda i: float(values[i].mean()), [f"g{i // 4}" for i in range(40)], n_boot=300)
    assert est[1] < est[0] < est[2]
    # one group: every resample is that group, the interval collapses
    assert group_bootstrap(lambda i: float(values[i].mean()), ["g"] * 40, n_boot=50)[1:] == (19.5, 19.5)


def test_scorer_metrics_per_category_and_union() -> None:
    cats = ["insult"] * 20 + ["profanity"] * 20 + ["benign"] * 20 + ["benign-hard"] * 20
    scores = np.array([0.9] * 20 + [0.2] * 20 + [0.1] * 20 + [0.6] * 10 + [0.05] * 10)
    m = scorer_metrics(scores, _texts(cats), 0.5, n_boot=100)
    assert m["categories"]["insult"]["recall"][0] == 1.0 and m["categories"]["profanity"]["recall"][0] == 0.0
    assert m["categories"]["benign"]["false_positive_rate"][0] == 0.0
    assert m["categories"]["benign-hard"]["false_positive_rate"][0] == pytest.approx(0.5)
    assert m["unions"]["non-lexical"]["auroc"][0] == 1.0
    assert m["unions"]["lexical"]["auroc"][0] == pytest.approx(30 / 40)  # 0.2 beats 0.1 and 0.05, not 0.6


def test_frontier_is_the_share_flagged_per_category_at_each_threshold() -> None:
    cats = np.array(["profanity"] * 4 + ["benign"] * 4)
    scores = np.array([0.95, 0.6, 0.25, 0.01, 0.4, 0.08, 0.0, 0.0])
    rows = frontier(scores, cats, thresholds=(0.9, 0.5, 0.2, 0.05))
    assert [r["flagged"]["profanity"] for r in rows] == [0.25, 0.5, 0.75, 0.75]
    assert [r["flagged"]["benign"] for r in rows] == [0.0, 0.0, 0.25, 0.5]
    assert set(rows[0]["flagged"]) == {"profanity", "benign"}  # only categories present
