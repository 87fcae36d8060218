"""Per-arm totals of an experiment, read from a gateway's `/metrics` or from a Prometheus server.

Both sources give the same thing: for each arm, the counts, sums and sums of squares the gateway
exports (middleware/metrics.py), summed over every series of that arm (models, policies that run
the experiment, ingress replicas, scrape targets). Means and variances then follow exactly:
mean = sum / count, variance from the sum of squares, no histogram buckets involved.

- `/metrics` (a URL whose path ends in /metrics): the totals since that ingress replica started.
  With several replicas behind one address, each scrape reaches one of them: use Prometheus.
- Prometheus (any other URL: its base, e.g. http://127.0.0.1:9090): instant queries over the HTTP
  API, summed over every target. Without a window the totals are the counters' current values, which
  restart from zero when a gateway restarts; `window="24h"` uses `increase(...[24h])`, which follows
  restarts but extrapolates to the window's edges, so its counts are not whole numbers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ArmTotals", "Moments", "SourceError", "read_totals"]

# Sample names the report reads (middleware/metrics.py defines them).
REQUESTS = "steergate_requests_total"
TOXICITY_COUNT, TOXICITY_SUM = "steergate_toxicity_score_count", "steergate_toxicity_score_sum"
TOXICITY_SQUARES = "steergate_toxicity_score_squares_total"
FLAGGED = "steergate_flagged_total"
STEERED, STEERED_SQUARES = "steergate_steered_tokens_total", "steergate_steered_tokens_squares_total"
PPL_COUNT, PPL_SUM = "steergate_fluency_perplexity_count", "steergate_fluency_perplexity_sum"
PPL_SQUARES = "steergate_fluency_perplexity_squares_total"
SHARE = "steergate_experiment_arm_share"
COUNTERS = (REQUESTS, TOXICITY_COUNT, TOXICITY_SUM, TOXICITY_SQUARES, FLAGGED, STEERED, STEERED_SQUARES,
            PPL_COUNT, PPL_SUM, PPL_SQUARES)


class SourceError(Exception):
    """The source cannot be read, or has no such experiment."""


@dataclass(frozen=True)
class Moments:
    """n observations of a quantity: their count, sum and sum of squares."""

    n: float
    total: float
    squares: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """Unbiased sample variance (NaN below two observations); clipped at 0 against rounding."""
        if self.n < 2:
            return math.nan
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))


@dataclass
class ArmTotals:
    """Everything the gateway exported about one arm."""

    arm: str
    requests: float = 0.0  # answered requests counted under the arm, any status
    toxicity: Moments = field(default_factory=lambda: Moments(0, 0, 0))  # completion scores, per response
    flagged: float = 0.0  # completions at or above their policy's threshold
    steered: Moments = field(default_factory=lambda: Moments(0, 0, 0))  # steered tokens per response
    perplexity: Moments = field(default_factory=lambda: Moments(0, 0, 0))  # sampled completions' perplexity
    control: bool = False
    share: float | None = None  # share of units the policy file gives the arm (None: not exported)


Sample = tuple[str, Mapping[str, str], float]  # sample name, labels, value


def _matches(labels: Mapping[str, str], experiment: str, policy: str | None) -> bool:
    return labels.get("experiment") == experiment and (policy is None or labels.get("policy") == policy)


def totals_from_samples(samples: Iterable[Sample], experiment: str,
                        policy: str | None = None) -> list[ArmTotals]:
    """Sum the samples of `experiment` per arm (and per phase where the metric has one)."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    shares: dict[str, tuple[bool, float]] = {}
    for name, labels, value in samples:
        if not _matches(labels, experiment, policy) or not labels.get("arm"):
            continue
        arm, phase = labels["arm"], labels.get("phase")
        if name == SHARE:
            control = labels.get("control") == "true"
            before = shares.get(arm, (False, 0.0))
            shares[arm] = (before[0] or control, max(before[1], value))
        elif name in COUNTERS:
            key = f"{name}:{phase}" if phase else name
            sums[arm][key] += value
    out = []
    for arm in sorted(set(sums) | set(shares)):
        s = sums[arm]
        control, share = shares.get(arm, (False, None))
        completion, prompt = ":completion", ":prompt"
        out.append(ArmTotals(
            arm=arm,
            requests=s[REQUESTS],
            toxicity=Moments(s[TOXICITY_COUNT + completion], s[TOXICITY_SUM + completion],
                             s[TOXICITY_SQUARES + completion]),
            flagged=s[FLAGGED + completion],
            # Every annotated response (a blocked prompt's too) has a prompt score: the denominator.
            steered=Moments(s[TOXICITY_COUNT + prompt], s[STEERED], s[STEERED_SQUARES]),
            perplexity=Moments(s[PPL_COUNT], s[PPL_SUM], s[PPL_SQUARES]),
            control=control,
            share=share,
        ))
    return out


def _metrics_samples(url: str, timeout_s: float) -> list[Sample]:
    response = httpx.get(url, timeout=timeout_s)
    response.raise_for_status()
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(response.text)
            for s in family.samples]


def _prometheus_samples(url: str, experiment: str, window: str | None, timeout_s: float) -> list[Sample]:
    out: list[Sample] = []
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s) as client:
        for name in (*COUNTERS, SHARE):
            selector = f'{name}{{experiment="{experiment}"}}'
            query = selector if window is None or name == SHARE else f"increase({selector}[{window}])"
            response = client.get("/api/v1/query", params={"query": query})
            response.raise_for_status()
            body = response.json()
            if body.get("status") != "success":
                raise SourceError(f"Prometheus refused {query!r}: {body.get('error')}")
            out += [(name, r["metric"], float(r["value"][1])) for r in body["data"]["result"]]
    return out


def experiments_in(samples: Iterable[Sample]) -> list[str]:
    return sorted({labels["experiment"] for _, labels, _ in samples if labels.get("experiment")})


def is_metrics_url(url: str) -> bool:
    return urlparse(url).path.rstrip("/").endswith("/metrics")


def read_totals(source: str, experiment: str | None, *, policy: str | None = None, window: str | None = None,
                timeout_s: float = 30.0) -> tuple[str, list[ArmTotals]]:
    """(experiment, its arms' totals) from `source`: a gateway's /metrics URL or a Prometheus base URL.
    Without `experiment`, the only one the source has; raises SourceError when that is not one."""
    metrics = is_metrics_url(source)
    if metrics and window is not None:
        raise SourceError("a window needs Prometheus: /metrics only has totals since the gateway started")
    try:
        if metrics:
            samples = _metrics_samples(source, timeout_s)
            found = experiments_in(samples)
        else:
            found = [experiment] if experiment is not None else _prometheus_experiments(source, timeout_s)
        if experiment is None:
            if len(found) != 1:
                listed = ", ".join(found) or "none"
                message = f"name the experiment with --experiment (experiments in {source}: {listed})"
                raise SourceError(message)
            experiment = found[0]
        if not metrics:
            samples = _prometheus_samples(source, experiment, window, timeout_s)
    except httpx.HTTPError as e:
        raise SourceError(f"cannot read {source}: {e}") from e
    arms = totals_from_samples(samples, experiment, policy)
    if not arms:
        raise SourceError(f"no arms of experiment {experiment!r} in {source}")
    return experiment, arms


def _prometheus_experiments(url: str, timeout_s: float) -> list[str]:
    response = httpx.get(f"{url.rstrip('/')}/api/v1/label/experiment/values", timeout=timeout_s,
                         params={"match[]": SHARE})
    response.raise_for_status()
    return sorted(v for v in response.json().get("data", []) if v)
