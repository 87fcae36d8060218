"""GatewayMetrics: per-arm labels, pre-initialised series, and the sums of squares behind the report's
intervals."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from middleware.metrics import Cohort, GatewayMetrics

ARM = Cohort("ab", "strength", "medium")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_arms_are_pre_initialised_and_observed_with_their_labels() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, ["m"], [Cohort("ab"), ARM])
    arm = {"model": "m", "policy": "ab", "experiment": "strength", "arm": "medium"}
    assert value(registry, "steergate_fluency_perplexity_count", **arm) == 0
    assert value(registry, "steergate_steered_tokens_squares_total", **arm) == 0
    assert value(registry, "steergate_toxicity_score_count", phase="completion", **arm) == 0
    # A policy outside any experiment has no per-arm-only series.
    outside = {"model": "m", "policy": "ab", "experiment": "", "arm": ""}
    assert value(registry, "steergate_fluency_perplexity_count", **outside) is None

    scores = [(0.2, 3), (0.6, 0), (0.1, 5)]
    for toxicity, steered in scores:
        safety = {"prompt": {"toxicity": 0.0, "flagged": False, "steered_tokens": 1},
                  "completion": {"toxicity": toxicity, "flagged": toxicity >= 0.5, "steered_tokens": steered}}
        metrics.observe_safety("m", ARM, safety, {"completion": "annotate"})
    for ppl in (4.0, 6.0):
        metrics.observe_fluency("m", ARM, ppl)
    completion = {"phase": "completion", **arm}
    assert value(registry, "steergate_toxicity_score_count", **completion) == 3
    assert value(registry, "steergate_toxicity_score_sum", **completion) == pytest.approx(0.9)
    assert value(registry, "steergate_toxicity_score_squares_total", **completion) == pytest.approx(0.41)
    assert value(registry, "steergate_flagged_total", action="annotate", **completion) == 1
    # Steered tokens per response: both phases of a response together (4, 1, 6).
    assert value(registry, "steergate_steered_tokens_total", **arm) == 11
    assert value(registry, "steergate_steered_tokens_squares_total", **arm) == 16 + 1 + 36
    assert value(registry, "steergate_fluency_perplexity_sum", **arm) == 10
    assert value(registry, "steergate_fluency_perplexity_squares_total", **arm) == 52


def test_requests_and_ttft_carry_the_arm() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, ["m"])
    metrics.observe("m", "chat", 200, 0.5, ARM)
    metrics.observe_ttft("m", "chat", ARM, 0.1)
    metrics.observe_usage("m", ARM, 7, 3)
    metrics.observe("m", "chat", 401, 0.01)  # before a policy is known
    arm = {"model": "m", "policy": "ab", "experiment": "strength", "arm": "medium"}
    assert value(registry, "steergate_requests_total", endpoint="chat", status="200", **arm) == 1
    assert value(registry, "steergate_time_to_first_token_seconds_count", endpoint="chat", **arm) == 1
    assert value(registry, "steergate_generated_tokens_total", **arm) == 3
    unknown = {"model": "m", "policy": "none", "experiment": "", "arm": ""}
    assert value(registry, "steergate_requests_total", endpoint="chat", status="401", **unknown) == 1
