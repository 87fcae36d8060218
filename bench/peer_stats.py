"""The numbers of bench/peer.py, from raw timings: per-phase statistics, medians over rounds, ratios to
the peer (vLLM's own OpenAI server), the issue's targets, and the table printed and put in the README.

Pure python (no servers), so tests/bench/test_peer_stats.py checks it on made-up timings.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from bench.common import percentile

__all__ = ["PEER", "GOALS", "Goal", "RequestTiming", "PhaseRun", "phase_stats", "summarize", "compare",
           "format_table", "stage_medians", "format_stages"]

# The server every other row is compared with.
PEER = "vllm-server"


@dataclass(frozen=True)
class Goal:
    """A target of issue 13 for one gateway setting, against the peer in the same run."""

    min_tok_ratio: float
    max_ttft_p50_delta_ms: float | None = None

    def met(self, tok_ratio: float, ttft_p50_delta_ms: float) -> bool:
        return tok_ratio >= self.min_tok_ratio and (
            self.max_ttft_p50_delta_ms is None or ttft_p50_delta_ms <= self.max_ttft_p50_delta_ms)

    def text(self) -> str:
        ttft = f", TTFT p50 <= +{self.max_ttft_p50_delta_ms:.0f} ms" if self.max_ttft_p50_delta_ms is not None else ""
        return f">= {self.min_tok_ratio:.2f}x{ttft}"


GOALS = {
    "gateway-off": Goal(0.97),
    "gateway-default": Goal(0.95, 25.0),
    "gateway-strong": Goal(0.93),
}


@dataclass
class RequestTiming:
    """One streamed request, seen by the client."""

    tokens: int
    ttft_s: float  # until the first chunk with content
    # Mean gap between tokens after the first: (last content chunk - first) / (tokens - 1). Per token,
    # so servers that stream several tokens per chunk (stream_interval) compare fairly. None: 1 token.
    itl_s: float | None


@dataclass
class PhaseRun:
    """One target at one concurrency in one round: N requests, `seconds` of wall time for all of them."""

    target: str
    concurrency: int
    round: int
    seconds: float
    requests: list[RequestTiming]
    # Per request the gateway traced (STEERGATE_TRACE_TIMINGS): stage -> seconds since it reached the ingress.
    stages: list[dict[str, float]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.requests)


def phase_stats(run: PhaseRun) -> dict[str, float]:
    """tokens/s over the phase's wall time; TTFT and inter-token latency percentiles over its requests (ms)."""
    ttft = [r.ttft_s * 1000 for r in run.requests]
    itl = [r.itl_s * 1000 for r in run.requests if r.itl_s is not None]
    return {
        "tok_s": run.tokens / run.seconds if run.seconds > 0 else float("nan"),
        "ttft_p50_ms": percentile(ttft, 0.5), "ttft_p95_ms": percentile(ttft, 0.95),
        "itl_p50_ms": percentile(itl, 0.5), "itl_p95_ms": percentile(itl, 0.95),
    }


STATS = ("tok_s", "ttft_p50_ms", "ttft_p95_ms", "itl_p50_ms", "itl_p95_ms")


def summarize(runs: list[PhaseRun]) -> dict[tuple[str, int], dict[str, float]]:
    """(target, concurrency) -> the median over rounds of each statistic, and how many rounds."""
    grouped: dict[tuple[str, int], list[dict[str, float]]] = {}
    for run in runs:
        grouped.setdefault((run.target, run.concurrency), []).append(phase_stats(run))
    return {key: {s: statistics.median(r[s] for r in rounds) for s in STATS} | {"rounds": len(rounds)}
            for key, rounds in grouped.items()}


def compare(summary: dict[tuple[str, int], dict[str, float]], targets: list[str]) -> list[dict[str, object]]:
    """One row per concurrency and target, in that order: the medians, each one's ratio to the peer at the
    same concurrency (x_<stat>), TTFT p50's difference in ms, and whether the target's goal is met."""
    rows: list[dict[str, object]] = []
    for c in sorted({c for _, c in summary}):
        peer = summary.get((PEER, c))
        for target in targets:
            stats = summary.get((target, c))
            if stats is None:
                continue
            row: dict[str, object] = {"concurrency": c, "target": target, **stats}
            if peer is not None and target != PEER:
                for s in STATS:
                    row[f"x_{s}"] = stats[s] / peer[s] if peer[s] else float("nan")
                row["ttft_p50_delta_ms"] = stats["ttft_p50_ms"] - peer["ttft_p50_ms"]
                goal = GOALS.get(target)
                if goal is not None:
                    row["goal"] = goal.text()
                    row["goal_met"] = goal.met(row["x_tok_s"], row["ttft_p50_delta_ms"])  # type: ignore[arg-type]
            rows.append(row)
    return rows


def _cell(row: dict[str, object], stat: str, fmt: str) -> str:
    value = float(row[stat])  # type: ignore[arg-type]
    text = "n/a" if math.isnan(value) else format(value, fmt)
    ratio = row.get(f"x_{stat}")
    return text if ratio is None else f"{text} ({float(ratio):.2f}x)"  # type: ignore[arg-type]


def format_table(rows: list[dict[str, object]]) -> str:
    """A Markdown table (printed, and what the README shows): medians over rounds, ratios to the peer."""
    lines = ["| streams | server | tokens/s | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p95 ms | goal |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ttft = _cell(row, "ttft_p50_ms", ".0f")
        if "ttft_p50_delta_ms" in row:
            ttft = ttft[:-1] + f", {float(row['ttft_p50_delta_ms']):+.0f} ms)"  # type: ignore[arg-type]
        goal = ""
        if "goal" in row:
            goal = f"{row['goal']}: {'met' if row['goal_met'] else '**not met**'}"
        lines.append(f"| {row['concurrency']} | {row['target']} | {_cell(row, 'tok_s', '.1f')} | {ttft} | "
                     f"{_cell(row, 'ttft_p95_ms', '.0f')} | {_cell(row, 'itl_p50_ms', '.1f')} | "
                     f"{_cell(row, 'itl_p95_ms', '.1f')} | {goal} |")
    return "\n".join(lines)


def stage_medians(runs: list[PhaseRun]) -> dict[tuple[str, int], dict[str, float]]:
    """(target, concurrency) -> stage -> median ms since the request reached the gateway, over every
    request of every round that reported it."""
    pooled: dict[tuple[str, int], dict[str, list[float]]] = {}
    for run in runs:
        for traced in run.stages:
            for stage, t in traced.items():
                pooled.setdefault((run.target, run.concurrency), {}).setdefault(stage, []).append(t * 1000)
    return {key: {stage: statistics.median(ts) for stage, ts in stages.items()} for key, stages in pooled.items()}


def format_stages(medians: dict[tuple[str, int], dict[str, float]], order: list[str]) -> str:
    """Per target and concurrency: each stage's median time since arrival and the step from the stage before."""
    lines = []
    for (target, c), stages in sorted(medians.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lines.append(f"{target} at {c} streams (median ms since the request reached the ingress):")
        before = 0.0
        for stage in [s for s in order if s in stages] + sorted(set(stages) - set(order)):
            lines.append(f"  {stage:<24} {stages[stage]:8.1f}   (+{stages[stage] - before:7.1f})")
            before = stages[stage]
    return "\n".join(lines)
