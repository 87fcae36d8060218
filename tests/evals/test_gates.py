"""`steergate gates` through the session's real gateway on a few held-out texts; every checked number
is recomputed here from what the gateway answered (refusals, released text, judge scores)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from discovery.judges import get_judge
from evals.gates import TOXIC_AT, gate_policies, normalise, summarise
from middleware.assets import EMBEDDED_FEATURES
from policies.loader import parse_policy_text
from serving.cli import main
from tests.conftest import ACME_KEY, PUBLIC_KEY, STOPPER_KEY


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
