"""Every steergate Prometheus metric, defined once (names from shared/CONTRACT.md).

Conventions: `steergate_` prefix, base units (`_seconds`), `_total` on counters, bounded label
values only (model names come from config, statuses are HTTP codes). Ray Serve adds its own
`deployment`/`replica` labels to its metrics, so we don't. Tests build a fresh registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["GatewayMetrics", "LATENCY_BUCKETS_S"]

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ENDPOINTS = ("chat", "completions")


class GatewayMetrics:
    """Request-level metrics, recorded by the ingress."""

    def __init__(self, registry: CollectorRegistry, models: list[str]) -> None:
        self.requests = Counter(
            "steergate_requests_total", "Requests answered, by HTTP status.",
            ["model", "endpoint", "status"], registry=registry,
        )
        self.duration = Histogram(
            "steergate_request_duration_seconds", "Time from request to last byte.",
            ["model", "endpoint", "status"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.ttft = Histogram(
            "steergate_time_to_first_token_seconds", "Time from request to the first generated text (streams).",
            ["model", "endpoint"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )
        self.generated_tokens = Counter(
            "steergate_generated_tokens_total", "Completion tokens generated.", ["model"], registry=registry,
        )
        self.prompt_tokens = Counter(
            "steergate_prompt_tokens_total", "Prompt tokens processed.", ["model"], registry=registry,
        )
        # Pre-initialise the series we know about so dashboards show zeros, not gaps.
        for model in models:
            self.generated_tokens.labels(model)
            self.prompt_tokens.labels(model)
            for endpoint in ENDPOINTS:
                self.requests.labels(model, endpoint, "200")
                self.ttft.labels(model, endpoint)

    def observe(self, model: str, endpoint: str, status: int, duration_s: float) -> None:
        self.requests.labels(model, endpoint, str(status)).inc()
        self.duration.labels(model, endpoint, str(status)).observe(duration_s)

    def observe_usage(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.generated_tokens.labels(model).inc(completion_tokens)
