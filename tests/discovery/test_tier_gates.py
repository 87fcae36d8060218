"""discovery/tier_gates.py: the shares each gate opens on, on a handful of made-up texts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from discovery.tier_gates import format_gates, gate_rows
from middleware.detection import FeatureSet

# Two features: 0 is toxic evidence (gate threshold 1), 1 benign evidence (never a feature gate).
FS = FeatureSet(model_name="m", sae_path="s", sae_id="x", features=[10, 11], weights=[2.0, -1.0], bias=-1.0,
                threshold=0.5, gate_thresholds=[1.0, 1.0], typical_activation=[1.0, 1.0])


def test_feature_and_detector_gates_count_tokens_and_texts() -> None:
    per_text = [np.array([[0.0, 0.0], [3.0, 0.0]]),  # selection, toxic: opens at its 2nd token
                np.array([[1.5, 2.0], [0.0, 0.0]]),  # selection, benign: opens the 1x feature gate only
                np.array([[3.0, 9.0]]),              # held-out benign-hard: feature fires, detector held back
                np.array([[0.5, 0.0]])]              # held-out toxic: too weak for every gate
    labels = np.array([1, 0, 0, 1])
    categories = np.array(["insult", "benign", "benign-hard", "insult"])
    held = np.array([False, False, True, True])
    rows = gate_rows(per_text, labels, categories, held, FS, top_k=5, multiples=[1.0, 2.0], levels=[0.0])
    one_x, two_x, detector = rows
    assert one_x.gate == "top 1 features, 1x"  # only the positive-weight feature gates
    assert (one_x.tokens_benign, one_x.tokens_toxic) == (0.5, 0.5)
    assert (two_x.tokens_benign, two_x.tokens_toxic) == (0.0, 0.5)
    assert (one_x.texts["benign-hard"], one_x.texts["toxic"]) == (1.0, 0.0)
    assert math.isnan(one_x.texts["benign"])  # no held-out benign text here
    # logit = -1 + 2 log1p(a0) - log1p(a1): 3.0 alone opens (1.77 > 0); 3.0 beside 9.0 does not (-0.53).
    assert detector.gate == "detector logit > 0"
    assert (detector.tokens_benign, detector.tokens_toxic) == (0.0, 0.5)
    assert detector.texts["benign-hard"] == 0.0
    table = format_gates(rows)
    assert table.count("\n") == 4 and "| detector logit > 0 | 0.0% | 50.0% | nan% | 0% | 0% |" in table


@pytest.mark.parametrize("top_k", [1, 3])
def test_top_k_never_reaches_benign_features(top_k: int) -> None:
    rows = gate_rows([np.array([[0.0, 5.0]])], np.array([0]), np.array(["benign"]), np.array([True]), FS,
                     top_k=top_k, multiples=[1.0], levels=[])
    assert rows[0].texts["benign"] == 0.0  # feature 1 fires at 5x its threshold but is benign evidence
