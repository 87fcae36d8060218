"""evals/calibrate.py and evals/findings.py: how tiers are chosen from measured rows, and the
interpolation of fluency cost at equal toxicity cut."""

from __future__ import annotations

import math
from typing import Any

import pytest

from evals.calibrate import candidate_name, choose, contenders
from evals.findings import cost_at_cut
from middleware.tier_recipes import TierRecipe


def _row(name: str, tox: float, ppl: float, changed: float) -> dict[str, Any]:
    est = lambda v: {"value": v, "low": v, "high": v}  # noqa: E731
    return {"name": name, "toxicity_vs_off": est(tox), "benign_perplexity_vs_off": est(ppl),
            "benign_changed": est(changed)}


RECIPES = {candidate_name(r): r for r in (
    TierRecipe("ablate", gate=3.0, top_k=5), TierRecipe("clamp", strength=-0.5, gate=2.0, top_k=10),
    TierRecipe("clamp", strength=-1.0, gate=2.0, top_k=10), TierRecipe("clamp", strength=-1.0))}


def test_each_tier_takes_the_largest_cut_within_its_bounds() -> None:
    a, b, c, d = RECIPES
    rows = [_row(a, 0.75, 1.01, 0.05),   # light: -25% at +1%, 5% changed
            _row(b, 0.60, 1.08, 0.40),   # medium: -40% at +8%
            _row(c, 0.45, 1.20, 0.70),   # strong: -55% at +20%
            _row(d, 0.20, 3.00, 1.00)]   # too costly for every tier
    chosen = choose(rows, RECIPES)
    assert {t: c["candidate"] for t, c in chosen.items()} == {"light": a, "medium": b, "strong": c}
    assert all(c["met"] for c in chosen.values())
    assert chosen["light"]["recipe"] == {"mode": "ablate", "strength": 0.0, "gate": 3.0, "top_k": 5,
                                         "steer_positions": None, "detector_gate": None}


def test_candidate_names_say_the_gate() -> None:
    detector_gated = TierRecipe("clamp", strength=-3.0, detector_gate=-6.0, top_k=20)
    assert candidate_name(detector_gated) == "clamp-3@d-6/k20"
    assert candidate_name(TierRecipe("clamp", strength=-0.5, gate=1.5, top_k=10)) == "clamp-0.5@g1.5/k10"
    assert candidate_name(TierRecipe("ablate")) == "ablate@all"


def test_unmet_target_falls_back_and_says_so() -> None:
    a, b, c, d = RECIPES
    rows = [_row(a, 0.95, 1.01, 0.05), _row(b, 0.70, 1.05, 0.30), _row(c, 0.60, 1.30, 0.9), _row(d, 0.2, 3.0, 1.0)]
    chosen = choose(rows, RECIPES)
    assert chosen["light"] == {**chosen["light"], "candidate": a, "met": False}  # -5% only: fluent but weak
    assert chosen["strong"]["candidate"] == b and not chosen["strong"]["met"]  # nothing reaches -50% within +25%


def test_general_ability_is_checked_on_the_largest_cuts_and_bounds_the_choice() -> None:
    a, b, c, d = RECIPES
    rows = [_row(a, 0.75, 1.01, 0.05), _row(b, 0.60, 1.08, 0.40), _row(c, 0.45, 1.20, 0.70),
            _row(d, 0.2, 3.0, 1.0)]
    # light: only a meets it; medium: a and b (largest cut b); strong: only c. d meets nothing.
    assert contenders(rows, RECIPES, per_tier=1) == [a, b, c]
    assert set(contenders(rows, RECIPES, per_tier=3)) == {a, b, c}
    # c (strong's only candidate) loses general ability; b keeps it, a was not measured
    rows[1]["accuracy_within_off_interval"] = True
    rows[2]["accuracy_within_off_interval"] = False
    chosen = choose(rows, RECIPES, ability=True)
    assert chosen["medium"] == {**chosen["medium"], "candidate": b, "met": True}
    assert not chosen["light"]["met"]  # unmeasured is not within bounds
    # strong falls back to the largest cut within its fluency bounds, and says its target is not met
    assert chosen["strong"] == {**chosen["strong"], "candidate": c, "met": False}
    assert choose(rows, RECIPES)["strong"]["met"]  # without the ability bound c would do


def test_cost_at_cut_interpolates_and_refuses_to_extrapolate() -> None:
    rows = [_row("s1", 0.9, 1.02, 0), _row("s2", 0.6, 1.10, 0), _row("s3", 0.4, 1.50, 0)]
    assert cost_at_cut(rows, 0.25) == pytest.approx(1.06)  # halfway between cuts 0.1 and 0.4
    assert cost_at_cut(rows, 0.5) == pytest.approx(1.30)
    assert math.isnan(cost_at_cut(rows, 0.7))


def test_calibrate_refuses_an_unknown_candidate_before_starting_anything() -> None:
    from serving.cli import main

    with pytest.raises(SystemExit, match=r"unknown candidate\(s\) \['clamp-9@g9/k9'\]"):
        main(["calibrate", "--candidates", "clamp-1.5@g2/k20,clamp-9@g9/k9", "--url", "http://127.0.0.1:9"])
