"""The detector's operating points on synthetic scores: the threshold and the short-text shift."""

from __future__ import annotations

import math

import numpy as np

from discovery.thresholds import FPR_BUDGET, FPR_TARGET, is_short, operating_point, short_shift


def test_operating_point_keeps_benign_flags_within_budget() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(400)
    cats = np.array(["benign"] * 200 + ["benign-hard"] * 200)
    t = operating_point(scores, cats)
    for c in ("benign", "benign-hard"):
        assert (scores[cats == c] >= t).mean() <= 0.03
    assert (scores >= t - 0.02).mean() > 0.03  # and not needlessly high


def test_short_shift_lowers_the_threshold_to_where_short_benign_texts_score() -> None:
    rng = np.random.default_rng(1)
    # Long benign texts reach higher scores (more tokens for the max) than short ones; four short
    # frames whose benign texts score alike.
    long_benign, short_benign = rng.uniform(0.0, 0.5, 300), rng.uniform(0.0, 0.1, 400)
    scores = np.concatenate([long_benign, short_benign, rng.uniform(0.05, 0.4, 100)])  # then short toxic
    cats = np.array(["benign"] * 700 + ["profanity"] * 100)
    short = np.array([False] * 300 + [True] * 500)
    frames = np.array(["long"] * 300 + [f"f{i % 4}" for i in range(500)])
    t = operating_point(scores[~short], cats[~short])
    choice = short_shift(scores, cats, short, frames, threshold=t)
    t_short = 1 / (1 + math.exp(-(math.log(t / (1 - t)) - choice.shift)))  # the threshold a short text meets
    assert choice.shift == choice.candidate > 0 and t_short < 0.1 and choice.cross_frame_fpr <= FPR_TARGET
    assert (scores[short & (cats == "benign")] >= t_short).mean() <= FPR_BUDGET
    toxic = scores[short & (cats == "profanity")]
    assert (toxic >= t_short).mean() > 0.8 > 0.5 > (toxic >= t).mean()


def test_no_shift_where_one_frame_scores_its_benign_texts_higher() -> None:
    # The other frames' threshold would flag most of f3's benign texts: the shift does not hold.
    rng = np.random.default_rng(2)
    scores = np.concatenate([rng.uniform(0.0, 0.01, 300), rng.uniform(0.2, 0.4, 100)])
    cats = np.array(["benign"] * 400)
    frames = np.array([f"f{i % 3}" for i in range(300)] + ["f3"] * 100)
    choice = short_shift(scores, cats, np.ones(400, dtype=bool), frames)
    assert choice.shift == 0.0 < choice.candidate and choice.cross_frame_fpr > FPR_TARGET


def test_no_shift_without_short_benign_texts_or_when_short_ones_score_higher() -> None:
    scores = np.array([0.1, 0.2, 0.9, 0.95])
    cats = np.array(["benign", "benign", "profanity", "benign"])
    frames = np.array(["a", "b", "c", "d"])
    assert short_shift(scores, cats, np.array([False, False, True, False]), frames).shift == 0.0
    only_d = np.array([False, False, False, True])
    assert short_shift(scores, cats, only_d, frames, threshold=0.3).candidate == 0.0


def test_short_means_one_to_six_words() -> None:
    assert is_short("You absolute clown!") and is_short("a b c d e f")
    assert not is_short("a b c d e f g") and not is_short("  ")
