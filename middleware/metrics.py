"""Every steergate Prometheus metric, defined once (names from shared/CONTRACT.md).

Conventions: `steergate_` prefix, base units (`_seconds`), `_total` on counters, bounded label
values only: model names come from the serving config, policy names from the policy file (a
request rejected before its policy is known counts under policy "none"), statuses are HTTP
codes, phases/actions/limits are fixed sets. Ray Serve adds its own `deployment`/`replica`
labels, so we don't. Tests build a fresh registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics", "LATENCY_BUCKETS_S", "NO_POLICY", "REJECTION_REASONS", "TOXICITY_BUCKETS"]

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOXICITY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
PERPLEXITY_BUCKETS = (2, 5, 10, 20, 50, 100, 200, 500, 1000)
ENDPOINTS = ("chat", "completions")
PHASES = ("prompt", "completion")
NO_POLICY = "none"
REJECTION_REASONS = ("server_overloaded", "model_unavailable", "request_timeout")


class GatewayMetrics:
    """Request- and safety-level metrics, recorded by the ingress."""

    def __init__(self, registry: CollectorRegistry, models: list[str], policies: Iterable[str] = ()) -> None:
        self.requests = Counter(
            "steergate_requests_total", "Requests answered, by HTTP status.",
            ["model", "endpoint", "status", "policy"], registry=registry,
        )
        self.duration = Histogram(
            "steergate_request_duration_seconds", "Time from request to last byte.",
            ["model", "endpoint", "status", "policy"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.ttft = Histogram(
            "steergate_time_to_first_token_seconds", "Time from request to the first generated text (streams).",
            ["model", "endpoint", "policy"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.generated_tokens = Counter(
            "steergate_generated_tokens_total", "Completion tokens generated.", ["model"], registry=registry,
        )
        self.prompt_tokens = Counter(
            "steergate_prompt_tokens_total", "Prompt tokens processed.", ["model"], registry=registry,
        )
        self.toxicity = Histogram(
            "steergate_toxicity_score", "SAE detector score of each response, max over the phase's tokens.",
            ["model", "policy", "phase"], buckets=TOXICITY_BUCKETS, registry=registry,
        )
        self.flagged = Counter(
            "steergate_flagged_total", "Prompts and completions at or above their policy's threshold, by the "
            "action taken (annotate, block, stop).", ["model", "policy", "phase", "action"], registry=registry,
        )
        self.steered_tokens = Counter(
            "steergate_steered_tokens_total", "Tokens whose residual stream the steering moved.",
            ["model", "policy"], registry=registry,
        )
        self.fluency_perplexity = Histogram(
            "steergate_fluency_perplexity", "Perplexity of completions under the unsteered model "
            "(recorded by evaluations that measure it; see README).", ["model", "policy"],
            buckets=PERPLEXITY_BUCKETS, registry=registry,
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
            self.generated_tokens.labels(model)
            self.prompt_tokens.labels(model)
            for reason in REJECTION_REASONS:
                self.rejected.labels(model, reason)
            for state in ("running", "waiting"):
                self.engine_requests.labels(model, state)
        self.add_policies(models, policies)

    def add_policies(self, models: list[str], policies: Iterable[str]) -> None:
        """Pre-initialise the series of the policies a (re)loaded file defines."""
        for policy in policies:
            for model in models:
                self.steered_tokens.labels(model, policy)
                for endpoint in ENDPOINTS:
                    self.requests.labels(model, endpoint, "200", policy)
                    self.ttft.labels(model, endpoint, policy)
                for phase in PHASES:
                    self.toxicity.labels(model, policy, phase)

    def observe(self, model: str, endpoint: str, status: int, duration_s: float, policy: str = NO_POLICY) -> None:
        self.requests.labels(model, endpoint, str(status), policy).inc()
        self.duration.labels(model, endpoint, str(status), policy).observe(duration_s)

    def observe_usage(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.generated_tokens.labels(model).inc(completion_tokens)

    def observe_safety(self, model: str, policy: str, safety: dict[str, Any], actions: dict[str, str]) -> None:
        """One response's `safety` annotation; actions: {phase: action taken when flagged}."""
        for phase in PHASES:
            section = safety.get(phase) or {}
            if section.get("toxicity") is not None:
                self.toxicity.labels(model, policy, phase).observe(section["toxicity"])
            if section.get("flagged"):
                self.flagged.labels(model, policy, phase, actions.get(phase, "annotate")).inc()
            self.steered_tokens.labels(model, policy).inc(section.get("steered_tokens", 0))
