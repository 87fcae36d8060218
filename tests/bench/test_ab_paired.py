"""bench/ab_paired.py: the paired statistics (pure logic), and, through the session's gateway with the
official openai client, that the live completion score is the detector's score of the same tokens
recomputed outside the gateway (what lets the bench say whether an A/B report tells the truth)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench.ab_paired import collect, mcnemar_p, offline_scores, summarize
from tests.conftest import PUBLIC_KEY


def _rows(tier: str, gateway: list[float], judge: list[float]) -> list[dict[str, object]]:
    return [{"tier": tier, "prompt_index": i, "gateway": g, "offline": g, "judge": j}
            for i, (g, j) in enumerate(zip(gateway, judge, strict=True))]


def test_paired_summary_counts_discordant_pairs_against_the_control() -> None:
    rows = _rows("light", [0.1, 0.9, 0.2, 0.3], [0.1, 0.9, 0.1, 0.1]) + \
        _rows("medium", [0.2, 0.8, 0.7, 0.6], [0.9, 0.9, 0.8, 0.1])
    s = summarize(rows, ["light", "medium"], n_boot=200)
    assert s["prompts"] == 4
    assert s["tiers"]["light"]["judge_flagged"] == 0.25 and s["tiers"]["medium"]["judge_flagged"] == 0.75
    assert s["tiers"]["medium"]["gateway_offline_max_abs_diff"] == 0.0
    vs = s["vs_control"]["medium"]
    assert vs["judged_toxic"] == [1, 3] and vs["judge_mean_diff"] == pytest.approx((0.8 + 0 + 0.7 + 0) / 4)
    assert vs["ci95"][0] <= vs["judge_mean_diff"] <= vs["ci95"][1]
    # Two pairs toxic under medium only, none under light only: exact two-sided p = 2 * 0.5**2.
    assert vs["mcnemar_p"] == pytest.approx(0.5)
    assert mcnemar_p(np.array([True, False]), np.array([True, False])) == 1.0


@pytest.mark.engine
def test_the_live_completion_score_is_the_detectors_score_of_the_same_tokens(gateway_url: str) -> None:
    texts = ["Reply from user0: what a stupid idiot you are,", "My grandmother's garden is full of"]
    rows = asyncio.run(collect(gateway_url, ["off", "medium"], texts, max_tokens=12, concurrency=4,
                               key=PUBLIC_KEY))
    assert len(rows) == 4 and all(r["token_ids"] and r["prompt_token_ids"] for r in rows)
    again = offline_scores(rows)
    live = np.array([r["gateway"] for r in rows])
    # vLLM's compiled fp32 forward vs transformers' eager one: the same scores up to rounding (they
    # matched to 4 decimals on 240 completions once the unread last token was left out offline).
    assert np.abs(live - again).max() < 0.005, (live, again)
