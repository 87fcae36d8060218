"""Every steergate Prometheus metric, defined once (names from shared/CONTRACT.md).

Conventions: `steergate_` prefix, base units (`_seconds`), `_total` on counters, bounded label
values only: model names come from the serving config, policy, experiment and arm names from the
policy file (a request rejected before its policy is known counts under policy "none"; outside an
experiment, experiment and arm are ""), statuses are HTTP codes, phases/actions/limits are fixed
sets. A removed arm's series stay exported until a restart but stop growing. Ray Serve adds its own
`deployment`/`replica` labels, so we don't. Tests build a fresh registry.

Per-arm means with intervals (`steergate report`) need each quantity's variance, which histogram
buckets only approximate; so the quantities compared across arms also export the sum of their
squares (`*_squares_total`): with the histogram's exact `_sum` and `_count` that is an exact
variance, and it aggregates across replicas and `increase()` windows like any counter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "Cohort", "GatewayMetrics", "LATENCY_BUCKETS_S", "NO_COHORT", "NO_POLICY", "PERPLEXITY_BUCKETS",
    "REJECTION_REASONS", "TOXICITY_BUCKETS",
]

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOXICITY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
PERPLEXITY_BUCKETS = (1.25, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100, 200, 500, 1000)
ENDPOINTS = ("chat", "completions")
PHASES = ("prompt", "completion")
FLUENCY_DROP_REASONS = ("queue_full", "error")
NO_POLICY = "none"
REJECTION_REASONS = ("server_overloaded", "model_unavailable", "request_timeout")
# Label names every per-cohort metric ends with.
COHORT = ("policy", "experiment", "arm")


@dataclass(frozen=True)
class Cohort:
    """Whom a request counts towards: its policy, and its experiment and arm ("" outside one)."""

    policy: str = NO_POLICY
    experiment: str = ""
    arm: str = ""

    @property
    def labels(self) -> tuple[str, str, str]:
        return self.policy, self.experiment, self.arm


NO_COHORT = Cohort()


class GatewayMetrics:
    """Request- and safety-level metrics, recorded by the ingress."""

    def __init__(self, registry: CollectorRegistry, models: list[str],
                 cohorts: Iterable[Cohort] = ()) -> None:
        self.requests = Counter(
            "steergate_requests_total", "Requests answered, by HTTP status.",
            ["model", "endpoint", "status", *COHORT], registry=registry,
        )
        self.duration = Histogram(
            "steergate_request_duration_seconds", "Time from request to last byte.",
            ["model", "endpoint", "status", *COHORT], buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.ttft = Histogram(
            "steergate_time_to_first_token_seconds",
            "Time from request to the first generated text (streams).",
            ["model", "endpoint", *COHORT], buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.generated_tokens = Counter(
            "steergate_generated_tokens_total", "Completion tokens generated.",
            ["model", *COHORT], registry=registry,
        )
        self.prompt_tokens = Counter(
            "steergate_prompt_tokens_total", "Prompt tokens processed.",
            ["model", *COHORT], registry=registry,
        )
        self.toxicity = Histogram(
            "steergate_toxicity_score", "SAE detector score of each response, max over the phase's tokens.",
            ["model", "phase", *COHORT], buckets=TOXICITY_BUCKETS, registry=registry,
        )
        self.toxicity_squares = Counter(
            "steergate_toxicity_score_squares_total", "Sum of squared toxicity scores (variance, with the "
            "histogram's _sum and _count).", ["model", "phase", *COHORT], registry=registry,
        )
        self.flagged = Counter(
            "steergate_flagged_total", "Prompts and completions at or above their policy's threshold, by the "
            "action taken (annotate, block, stop).", ["model", "phase", "action", *COHORT], registry=registry,
        )
        self.steered_tokens = Counter(
            "steergate_steered_tokens_total", "Tokens whose residual stream the steering moved.",
            ["model", *COHORT], registry=registry,
        )
        self.steered_tokens_squares = Counter(
            "steergate_steered_tokens_squares_total", "Sum over responses of the square of each response's "
            "steered tokens (variance per response).", ["model", *COHORT], registry=registry,
        )
        self.fluency_perplexity = Histogram(
            "steergate_fluency_perplexity", "Perplexity of a sampled completion under the unsteered model "
            "(policy fluency.sample_rate; scored off the request path).", ["model", *COHORT],
            buckets=PERPLEXITY_BUCKETS, registry=registry,
        )
        self.fluency_perplexity_squares = Counter(
            "steergate_fluency_perplexity_squares_total",
            "Sum of squared fluency perplexities (variance, with the histogram's _sum and _count).",
            ["model", *COHORT], registry=registry,
        )
        self.fluency_dropped = Counter(
            "steergate_fluency_dropped_total",
            "Sampled completions not scored: queue_full (the scoring queue was full: load), error (the "
            "scoring call failed).", ["model", "reason"], registry=registry,
        )
        self.fluency_queue = Gauge(
            "steergate_fluency_queue_depth", "Sampled completions waiting to be scored.", registry=registry,
        )
        self.arm_share = Gauge(
            "steergate_experiment_arm_share",
            "Share of an experiment's units assigned to the arm (weights from the policy file; while "
            "paused 1 for the control, 0 for the rest). control=\"true\" marks the arm the others are "
            "compared against.",
            ["policy", "experiment", "arm", "control"], registry=registry,
        )
        self.rate_limited = Counter(
            "steergate_rate_limited_total", "Requests refused with 429, by the limit hit.",
            ["policy", "limit"], registry=registry,
        )
        self.policy_reloads = Counter(
            "steergate_policy_reloads_total", "Policy file reloads, by result (success, failure).",
            ["result"], registry=registry,
        )
        self.in_flight = Gauge(
            "steergate_requests_in_flight", "Generation requests this ingress replica holds (waiting for the "
            "engine or generating); bounded by admission.max_in_flight.", registry=registry,
        )
        # The gateway's queue, seen from the ingress: Ray's handle queue and the engine's waiting list
        # together. Kept here because a probe of the model server waits in that same queue under load.
        self.queued = Gauge(
            "steergate_requests_queued", "Generation requests this ingress replica admitted that have no "
            "first chunk yet (queued in front of or inside the engine; a non-streamed request until its "
            "body).", registry=registry,
        )
        self.rejected = Counter(
            "steergate_rejected_total", "Requests refused or ended by backpressure or failure, by reason "
            "(server_overloaded, model_unavailable, request_timeout).", ["model", "reason"], registry=registry,
        )
        self.engine_requests = Gauge(
            "steergate_engine_requests", "Requests in the model's engine by state (running, waiting), as its "
            "server reported at the last scrape.", ["model", "state"], registry=registry,
        )
        # Pre-initialise the series we know about so dashboards show zeros, not gaps.
        for result in ("success", "failure"):
            self.policy_reloads.labels(result)
        for model in models:
            for reason in FLUENCY_DROP_REASONS:
                self.fluency_dropped.labels(model, reason)
            for reason in REJECTION_REASONS:
                self.rejected.labels(model, reason)
            for state in ("running", "waiting"):
                self.engine_requests.labels(model, state)
        self.add_cohorts(models, cohorts)

    def add_cohorts(self, models: list[str], cohorts: Iterable[Cohort]) -> None:
        """Pre-initialise the series of the policies and arms a (re)loaded file defines."""
        for cohort in cohorts:
            c = cohort.labels
            for model in models:
                self.steered_tokens.labels(model, *c)
                self.generated_tokens.labels(model, *c)
                self.prompt_tokens.labels(model, *c)
                for endpoint in ENDPOINTS:
                    self.requests.labels(model, endpoint, "200", *c)
                    self.ttft.labels(model, endpoint, *c)
                for phase in PHASES:
                    self.toxicity.labels(model, phase, *c)
                    self.toxicity_squares.labels(model, phase, *c)
                if cohort.experiment:
                    self.steered_tokens_squares.labels(model, *c)
                    self.fluency_perplexity.labels(model, *c)
                    self.fluency_perplexity_squares.labels(model, *c)

    def set_arms(self, arms: Iterable[tuple[Cohort, bool, float]]) -> None:
        """The current file's arms as (cohort, is control, share); arms no longer in the file disappear."""
        self.arm_share.clear()
        for cohort, control, share in arms:
            self.arm_share.labels(*cohort.labels, "true" if control else "false").set(share)

    def observe(self, model: str, endpoint: str, status: int, duration_s: float,
                cohort: Cohort = NO_COHORT) -> None:
        self.requests.labels(model, endpoint, str(status), *cohort.labels).inc()
        self.duration.labels(model, endpoint, str(status), *cohort.labels).observe(duration_s)

    def observe_ttft(self, model: str, endpoint: str, cohort: Cohort, seconds: float) -> None:
        self.ttft.labels(model, endpoint, *cohort.labels).observe(seconds)

    def observe_usage(self, model: str, cohort: Cohort, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens.labels(model, *cohort.labels).inc(prompt_tokens)
        self.generated_tokens.labels(model, *cohort.labels).inc(completion_tokens)

    def observe_safety(self, model: str, cohort: Cohort, safety: dict[str, Any],
                       actions: dict[str, str]) -> None:
        """One response's `safety` annotation; actions: {phase: action taken when flagged}."""
        c = cohort.labels
        steered = 0
        for phase in PHASES:
            section = safety.get(phase) or {}
            toxicity = section.get("toxicity")
            if toxicity is not None:
                self.toxicity.labels(model, phase, *c).observe(toxicity)
                self.toxicity_squares.labels(model, phase, *c).inc(toxicity * toxicity)
            if section.get("flagged"):
                self.flagged.labels(model, phase, actions.get(phase, "annotate"), *c).inc()
            steered += section.get("steered_tokens", 0)
        self.steered_tokens.labels(model, *c).inc(steered)
        self.steered_tokens_squares.labels(model, *c).inc(steered * steered)

    def observe_fluency(self, model: str, cohort: Cohort, perplexity: float) -> None:
        self.fluency_perplexity.labels(model, *cohort.labels).observe(perplexity)
        self.fluency_perplexity_squares.labels(model, *cohort.labels).inc(perplexity * perplexity)
