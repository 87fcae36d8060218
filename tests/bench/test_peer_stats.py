"""bench/peer_stats.py on made-up timings: percentiles, medians over rounds, ratios, goals, the table."""

from __future__ import annotations

import math

import pytest

from bench.common import percentile
from bench.peer_stats import (
    PEER,
    PhaseRun,
    RequestTiming,
    compare,
    format_stages,
    format_table,
    phase_stats,
    stage_medians,
    summarize,
)


def _run(target: str, c: int, rnd: int, seconds: float, ttft_ms: list[float], itl_ms: float = 10.0,
         tokens: int = 8) -> PhaseRun:
    return PhaseRun(target, c, rnd, seconds, [RequestTiming(tokens, t / 1000, itl_ms / 1000) for t in ttft_ms])


def test_percentile_is_the_value_at_rank_q_n() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 0.5) == 11.0
    assert percentile(values, 0.95) == 20.0
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0  # sorts first
    assert math.isnan(percentile([], 0.5))


def test_phase_stats_counts_tokens_over_wall_time_and_converts_to_ms() -> None:
    stats = phase_stats(_run(PEER, 1, 0, 2.0, [100.0, 300.0], itl_ms=20.0, tokens=10))
    assert stats["tok_s"] == pytest.approx(10.0)  # 20 tokens in 2 s
    assert stats["ttft_p50_ms"] == pytest.approx(300.0)  # rank int(0.5 * 2) = 1
    assert stats["itl_p95_ms"] == pytest.approx(20.0)


def test_single_token_requests_have_no_inter_token_latency() -> None:
    run = PhaseRun(PEER, 1, 0, 1.0, [RequestTiming(1, 0.1, None)])
    assert math.isnan(phase_stats(run)["itl_p50_ms"])


def test_summary_takes_the_median_over_rounds() -> None:
    runs = [_run(PEER, 16, r, s, [100.0]) for r, s in enumerate([1.0, 2.0, 4.0])]
    summary = summarize(runs)[(PEER, 16)]
    assert summary["rounds"] == 3
    assert summary["tok_s"] == pytest.approx(4.0)  # 8 tokens / 2 s, the middle round


def test_ratios_and_goals_are_against_the_peer_at_the_same_concurrency() -> None:
    runs = [_run(PEER, 16, 0, 1.0, [400.0]), _run("gateway-default", 16, 0, 1.0 / 0.96, [420.0]),
            _run("gateway-strong", 16, 0, 1.0 / 0.90, [500.0]), _run(PEER, 1, 0, 1.0, [50.0]),
            _run("gateway-default", 1, 0, 1.0, [90.0])]
    rows = compare(summarize(runs), [PEER, "gateway-default", "gateway-strong"])
    assert [(r["concurrency"], r["target"]) for r in rows] == [
        (1, PEER), (1, "gateway-default"), (16, PEER), (16, "gateway-default"), (16, "gateway-strong")]
    peer16, default16, strong16 = rows[2:]
    assert "x_tok_s" not in peer16 and "goal" not in peer16
    assert default16["x_tok_s"] == pytest.approx(0.96)
    assert default16["ttft_p50_delta_ms"] == pytest.approx(20.0)
    assert default16["x_ttft_p50_ms"] == pytest.approx(420 / 400)
    assert default16["goal_met"] is True  # >= 0.95x and +20 ms <= +25 ms
    assert strong16["goal_met"] is False  # 0.90x < 0.93x
    assert rows[1]["goal_met"] is False  # 1.0x but +40 ms TTFT


def test_a_target_without_a_peer_row_gets_no_ratios() -> None:
    rows = compare(summarize([_run("gateway-off", 4, 0, 1.0, [10.0])]), ["gateway-off"])
    assert len(rows) == 1 and "x_tok_s" not in rows[0]


def test_table_shows_values_ratios_delta_and_goal() -> None:
    runs = [_run(PEER, 16, 0, 1.0, [400.0]), _run("gateway-strong", 16, 0, 2.0, [450.0])]
    table = format_table(compare(summarize(runs), [PEER, "gateway-strong"]))
    lines = table.splitlines()
    assert lines[0].startswith("| streams | server | tokens/s |")
    assert len(lines) == 4
    assert "| 16 | vllm-server | 8.0 | 400 |" in lines[2]
    assert "4.0 (0.50x)" in lines[3]
    assert "450 (1.12x, +50 ms)" in lines[3]
    assert ">= 0.93x: **not met**" in lines[3]


def test_stage_medians_pool_requests_of_all_rounds() -> None:
    runs = [_run("gateway-default", 1, r, 1.0, [100.0]) for r in range(2)]
    runs[0].stages = [{"policy_validated": 0.001, "ingress_first_content": 0.100}]
    runs[1].stages = [{"policy_validated": 0.003, "ingress_first_content": 0.200},
                      {"policy_validated": 0.002, "ingress_first_content": 0.150}]
    medians = stage_medians(runs)[("gateway-default", 1)]
    assert medians == {"policy_validated": pytest.approx(2.0), "ingress_first_content": pytest.approx(150.0)}
    text = format_stages({("gateway-default", 1): medians}, ["policy_validated", "ingress_first_content"])
    assert "policy_validated" in text.splitlines()[1]
    assert "(+  148.0)" in text.splitlines()[2]
