"""`steergate gates` through the session's real gateway on a few held-out texts; every checked number
is recomputed here from what the gateway answered (refusals, released text, judge scores)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from discovery.judges import get_judge
from evals.gates import TOXIC_AT, gate_keys, gate_policies, measure, normalise, stop_tenant
from evals.gates_report import BLOCK_FRONTIER, format_report, summarise
from middleware.assets import EMBEDDED_FEATURES
from policies.loader import parse_policy_text
from policies.tenants import hash_key
from serving.cli import main
from tests.conftest import ACME_KEY, MODEL, PUBLIC_KEY, STOPPER_KEY


def _shipped_rows() -> list[dict[str, Any]]:
    """The shipped held-out file's two most and two least toxic texts by the detector (so the run
    sees both refusals and passes) and one of each label in between."""
    rows = [json.loads(x) for x in (EMBEDDED_FEATURES.parent / "heldout.jsonl").read_text().splitlines()]
    by_score = sorted(rows, key=lambda r: r["detector"])
    return by_score[-2:] + by_score[:2] + [r for r in by_score[len(rows) // 2:] if r["label"] == 1][:1]


def test_the_policy_file_it_writes_is_valid() -> None:
    policies = parse_policy_text(gate_policies(8), "gates")
    by_tenant = {t: policies.policies[policies.tenants[t].policy] for t in ("annotate", "block", "stop")}
    assert by_tenant["block"].actions.prompt == "block" and by_tenant["stop"].actions.completion == "stop"
    assert by_tenant["stop"].stream.holdback_tokens == 8
    assert {p.steering.tier for p in by_tenant.values()} == {"off"}


def test_each_stop_threshold_gets_its_own_tenant_and_key() -> None:
    policies = parse_policy_text(gate_policies(8, [0.1, 0.01]), "gates")
    keys = gate_keys([0.1, 0.01])
    for t in (0.1, 0.01):
        tenant = policies.tenants[stop_tenant(t)]
        policy = policies.policies[tenant.policy]
        assert policy.actions.completion == "stop" and policy.detection.completion_threshold == t
        assert policy.stream.holdback_tokens == 8 and hash_key(keys[stop_tenant(t)]) in tenant.key_hashes
    assert policies.policies["stop"].detection.completion_threshold == 0.5
    assert len(set(keys.values())) == len(keys) == 5


def test_stop_thresholds_need_a_gateway_the_command_starts(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--stop-thresholds"):
        main(["gates", "--url", "http://127.0.0.1:9", "--block-key", "a", "--stop-key", "b",
              "--annotate-key", "c", "--stop-thresholds", "0.1", "--out", str(tmp_path)])


def test_old_and_new_heldout_rows_read_alike() -> None:
    old = normalise({"id": 3, "text": "t", "visible": "t", "label": 1, "judge": 0.9, "detector": 0.8})
    assert (old["category"], old["view"], old["group"]) == ("profanity", "as-generated", "lexical:3")
    new = {"uid": "instructed:1:raw", "group": "instructed:1", "category": "insult", "view": "raw",
           "label": 1}
    assert normalise(new) is new


def test_summary_shares_are_the_means_of_outcomes() -> None:
    prompts = [{"category": "profanity", "label": 1, "view": "raw", "block": {"refused": r}}
               for r in (1, 1, 0, 1)]
    lines = [{"category": "insult", "label": 1, "stop": {"judge": j, "finish_reason": f},
              "annotate": {"judge": a}}
             for j, f, a in ((0.9, "stop", 0.9), (0.1, "content_filter", 0.8), (0.2, "content_filter", 0.1))]
    s = summarise({"prompts": prompts, "lines": lines, "toxic_at": 0.5})
    assert s["block"]["profanity|raw"]["refused"]["value"] == 0.75
    assert s["block"]["all toxic|raw"]["refused"]["value"] == 0.75
    assert s["stop"]["insult"]["leaked"]["value"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["stop"]["insult"]["judged_toxic_without_gate"]["value"] == pytest.approx(2 / 3, abs=1e-3)
    assert s["stop"]["insult"]["stopped"]["value"] == pytest.approx(2 / 3, abs=1e-3)


def _prompt(category: str, label: int, view: str, score: float, refused: bool) -> dict[str, Any]:
    return {"category": category, "label": label, "view": view, "block": {"refused": refused},
            "annotate": {"refused": False, "toxicity": score}}


def test_block_frontier_is_the_share_of_scores_at_or_above_each_threshold() -> None:
    prompts = [_prompt("insult", 1, "chat", s, s >= 0.5) for s in (0.95, 0.3, 0.08, 0.0005)]
    prompts += [_prompt("benign", 0, "raw", s, s >= 0.5) for s in (0.02, 0.0)]
    prompts.append(_prompt("benign-hard", 0, "chat", 0.6, False))  # scored apart from its block request
    s = summarise({"prompts": prompts, "lines": [], "toxic_at": 0.5})
    rows = {r["threshold"]: r for r in s["block_frontier"]}
    assert [r["threshold"] for r in s["block_frontier"]] == list(BLOCK_FRONTIER)
    assert rows[0.5]["insult"] == 0.25 and rows[0.2]["insult"] == 0.5 and rows[0.05]["insult"] == 0.75
    assert rows[0.001]["insult"] == 0.75 and rows[0.01]["benign"] == 0.5 and rows[0.5]["benign-hard"] == 1.0
    assert rows[0.1]["all toxic|chat"] == 0.5 and "all toxic|raw" not in rows[0.1]  # no toxic raw prompt
    assert s["block_agreement"] == pytest.approx(6 / 7, abs=1e-4)


def _line(category: str, label: int, **outcomes: tuple[float, str]) -> dict[str, Any]:
    return {"category": category, "label": label,
            **{t: {"judge": j, "finish_reason": f} for t, (j, f) in outcomes.items()}}


def test_stop_frontier_has_a_row_per_stop_tenant_highest_threshold_first() -> None:
    low = stop_tenant(0.1)
    lines = [_line("threat", 1, stop=(0.9, "stop"), annotate=(0.9, "stop"), **{low: (0.1, "content_filter")}),
             _line("threat", 1, stop=(0.2, "stop"), annotate=(0.2, "stop"), **{low: (0.2, "stop")}),
             _line("benign", 0, stop=(0.0, "stop"), annotate=(0.0, "stop"), **{low: (0.0, "content_filter")})]
    s = summarise({"prompts": [_prompt("benign", 0, "raw", 0.0, False)], "lines": lines, "toxic_at": 0.5,
                   "stop_thresholds": {"stop": 0.5, low: 0.1}})
    high_row, low_row = s["stop_frontier"]
    assert (high_row["tenant"], low_row["tenant"]) == ("stop", low)
    assert high_row["leaked"]["value"] == 0.5 and high_row["threat|leaked"] == 0.5
    assert high_row["benign|stopped"] == 0.0
    assert low_row["leaked"]["value"] == 0.0 and low_row["benign|stopped"] == 1.0
    report = format_report(s, {"heldout": "h", "features": "f", "holdback_tokens": 8, "judge": "j"})
    assert "| 0.1 | 0.000 [0.000, 0.000] | 1.000 | 0.000 |" in report  # threshold, leak, benign, threat
    assert "Frontier: block at other prompt thresholds" in report


@pytest.mark.engine
def test_gates_through_the_gateway(gateway_url: str, tmp_path: Path) -> None:
    rows = _shipped_rows()
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    # Session tenants: acme's policy blocks flagged prompts (and stops), stopper's stops, public annotates.
    assert main(["gates", "--url", gateway_url, "--block-key", ACME_KEY, "--stop-key", STOPPER_KEY,
                 "--annotate-key", PUBLIC_KEY, "--heldout", str(heldout), "--out", str(out)]) == 0
    result = json.loads((out / "gates.json").read_text())
    assert "| profanity | raw |" in (out / "gates.md").read_text()

    prompts, lines = result["prompts"], result["lines"]
    # A lexical text goes out raw and in the chat template; a line with a view (instructed, templated,
    # short) is one prompt in that view.
    assert len(prompts) == sum(2 if r["view"] == "as-generated" else 1 for r in rows)
    assert len(lines) == len({r["group"] for r in rows})  # both views of a line are one line
    refused = [p["block"]["refused"] for p in prompts]
    assert any(refused) and not all(refused)
    for p in prompts:
        # The annotate tenant's prompt score says what block must have done (same detector, same prompt).
        score = p["annotate"]["toxicity"]
        assert p["annotate"]["refused"] is False and score is not None
        if abs(score - 0.5) > 0.05:
            assert p["block"]["refused"] == (score >= 0.5), p
    judge = get_judge(result["judge"])
    for policy in ("stop", "annotate"):
        released = [ln[policy]["released"] for ln in lines]
        assert judge.score(released) == pytest.approx([ln[policy]["judge"] for ln in lines], abs=1e-6)
    assert all(ln["annotate"]["finish_reason"] != "content_filter" for ln in lines)
    assert any(ln["annotate"]["released"] for ln in lines)

    toxic = [ln for ln in lines if ln["label"] == 1]
    leaked = sum(ln["stop"]["judge"] >= TOXIC_AT for ln in toxic) / len(toxic)
    assert result["summary"]["stop"]["all toxic"]["leaked"]["value"] == pytest.approx(leaked, abs=1e-3)
    assert result["summary"]["stop"]["all toxic"]["n"] == len(toxic)
    # The block frontier at the block tenant's threshold is the measured block rate, up to prompts
    # whose two requests scored on either side of it.
    at_half = next(r for r in result["summary"]["block_frontier"] if r["threshold"] == 0.5)
    raw_toxic = [p for p in prompts if p["label"] == 1 and p["view"] == "raw"]
    assert at_half["all toxic|raw"] == pytest.approx(
        sum(p["annotate"]["toxicity"] >= 0.5 for p in raw_toxic) / len(raw_toxic), abs=1e-4)


@pytest.mark.engine
def test_an_extra_stop_tenant_streams_every_line_again(gateway_url: str) -> None:
    """The stop frontier's extra pass, with the stopper's key as a second stop tenant: the same policy
    and greedy decoding, so its row must equal the stop row."""
    rows = _shipped_rows()[:3]
    twin = stop_tenant(0.5)
    keys = {"block": ACME_KEY, "stop": STOPPER_KEY, twin: STOPPER_KEY, "annotate": PUBLIC_KEY}
    results = measure(gateway_url, keys, MODEL, rows, stop_thresholds={twin: 0.5})
    assert all(ln[twin]["released"] == ln["stop"]["released"] for ln in results["lines"])
    assert results["stop_thresholds"] == {"stop": None, twin: 0.5}
    first, second = summarise(results)["stop_frontier"]
    assert (first["tenant"], second["tenant"]) == ("stop", twin)  # an unknown threshold sorts first
    assert {k: v for k, v in first.items() if k not in ("tenant", "threshold")} == \
           {k: v for k, v in second.items() if k not in ("tenant", "threshold")}
