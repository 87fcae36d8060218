"""middleware/steering.py and middleware/tiers.py: per-request steering in a mixed batch,
tier presets, position masks, plan caching, annotate, validation."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.testing import assert_close

import middleware.steering as steering_mod
from middleware.hooks import BatchLayout
from middleware.interventions import GateSpec, InterventionSpec, PlanBatch, SteeringPlan, apply_plan
from middleware.sae import SAE
from middleware.steering import (
    STEERED,
    SAESteeringMiddleware,
    default_tiers,
    steering_validator,
    tier_label,
    validate_steering,
)
from tests.middleware.builders import build_inputs, build_sae

D_IN, D_SAE = 16, 32
TOKENS_PER_REQUEST = 6
# Each request's span: positions 2..7 with a prompt of 5, so 3 prompt and 3 generated tokens
# (a chunk straddling the prompt end, as after a preemption recompute).
START, PROMPT_LEN = 2, 5


@pytest.fixture
def sae() -> SAE:
    return build_sae("standard", d_in=D_IN, d_sae=D_SAE, hook_name="blocks.1.hook_resid_post")


@pytest.fixture
def sae_path(sae: SAE, tmp_path: Path) -> str:
    sae.save(tmp_path / "sae")
    return str(tmp_path / "sae")


def _features(sae: SAE, h: torch.Tensor, n: int = 3) -> list[int]:
    """n features that are active on some but not all tokens of h."""
    active = sae.encode(h) > 0  # (T, d_sae)
    counts = active.sum(dim=0)
    found = [f for f in range(sae.cfg.d_sae) if 0 < int(counts[f]) < h.shape[0]]
    assert len(found) >= n, "test inputs need partly active features"
    return found[:n]


def _layout(request_args: list[dict[str, Any]], n_tokens: int = TOKENS_PER_REQUEST) -> BatchLayout:
    n = len(request_args)
    spans = [(i * n_tokens, (i + 1) * n_tokens) for i in range(n)]
    return BatchLayout.from_spans(
        [f"req{i}" for i in range(n)], spans, [START] * n, [PROMPT_LEN] * n, request_args
    )


def _plan_from_preset(preset: dict[str, Any], sae: SAE) -> SteeringPlan:
    specs = [InterventionSpec(**s) for s in preset["interventions"]]
    gate = GateSpec(**preset["gate"]) if preset["gate"] else None
    return SteeringPlan.compile(specs, sae, gate)


def _middleware(sae_path: str, tiers: dict[str, Any], **kw: Any) -> SAESteeringMiddleware:
    return SAESteeringMiddleware(layer=1, d_model=D_IN, sae_path=sae_path, tiers=tiers, **kw)


def test_mixed_batch_isolates_requests(sae: SAE, sae_path: str) -> None:
    custom = [
        {"feature": 3, "mode": "add", "strength": 1.5},
        {"feature": 7, "mode": "ablate", "strength": 0.0},
    ]
    args = [
        {"rid": "a", "steering": {"tier": "light"}},
        {"rid": "b"},  # no steering
        {"rid": "c", "steering": {"interventions": custom}},
        {"rid": "d", "steering": {"tier": "strong"}},
        {"rid": "e", "steering": {"tier": "no-such-tier"}},
        {"rid": "f", "steering": {"interventions": [{"feature": 10_000, "mode": "add", "strength": 1.0}]}},
        {"rid": "g", "steering": {"tier": "off"}},
    ]
    layout = _layout(args)
    h = build_inputs(layout.num_tokens, D_IN, seed=3)
    feats = _features(sae, h)
    tiers = default_tiers(feats, light_threshold=0.0)
    result = _middleware(sae_path, tiers)(h, layout)
    assert result.stream is not None

    expected_plans: list[SteeringPlan | None] = [
        _plan_from_preset(tiers["light"], sae),
        None,
        SteeringPlan.compile([InterventionSpec(**s) for s in custom], sae),
        _plan_from_preset(tiers["strong"], sae),
        None,
        None,
        None,
    ]
    for (s, e), plan in zip(layout.spans(), expected_plans, strict=True):
        if plan is None:
            assert torch.equal(result.stream[s:e], h[s:e]), "unsteered rows must be bit-identical"
            assert not result.side_outputs[STEERED][s:e].any()
            continue
        alone, changed = apply_plan(h[s:e], sae, plan, ~layout.is_prompt[s:e])
        assert_close(result.stream[s:e], alone, rtol=1e-6, atol=1e-6)
        assert torch.equal(result.side_outputs[STEERED][s:e], changed.float())
        assert changed.any(), "each steered request must actually move some token"


def test_no_steering_returns_no_stream(sae_path: str) -> None:
    layout = _layout([{"rid": "a"}, {"rid": "b", "steering": {"tier": "off"}}])
    result = _middleware(sae_path, default_tiers([1, 2]))(build_inputs(layout.num_tokens, D_IN), layout)
    assert result.stream is None
    assert torch.equal(result.side_outputs[STEERED], torch.zeros(layout.num_tokens))


def test_light_touches_only_tokens_where_features_fire(sae: SAE, sae_path: str) -> None:
    h = build_inputs(40, D_IN, seed=4)
    feats = _features(sae, h)
    top = sae.encode(h)[:, feats].max(dim=-1).values  # (T,)
    ordered = top.sort().values
    threshold = float(ordered[19] + ordered[20]) / 2  # between two tokens, not at one (rounding)
    layout = _layout([{"steering": {"tier": "light"}}], n_tokens=40)
    mw = _middleware(sae_path, default_tiers(feats, light_threshold=threshold), steer_positions="both")
    result = mw(h, layout)
    fires = top > threshold
    assert 0 < int(fires.sum()) < 40
    assert torch.equal(result.side_outputs[STEERED].bool(), fires)
    assert torch.equal(result.stream[~fires], h[~fires])
    # Where it fires, each feature's contribution is removed (random SAE: no re-encode check).
    acts = sae.encode(h)[:, feats]  # (T, n)
    assert_close(result.stream[fires], (h - acts @ sae.W_dec[feats])[fires])


def test_medium_clamps_where_features_fire(sae: SAE, sae_path: str) -> None:
    h = build_inputs(40, D_IN, seed=5)
    feats = _features(sae, h)
    acts = sae.encode(h)[:, feats]  # (T, n)
    tiers = default_tiers(feats, medium_threshold=0.0, medium_clamp=-2.0)
    result = _middleware(sae_path, tiers, steer_positions="both")(
        h, _layout([{"steering": {"tier": "medium"}}], 40)
    )
    fires = (acts > 0).any(dim=-1)
    assert 0 < int(fires.sum()) < 40
    assert torch.equal(result.side_outputs[STEERED].bool(), fires)
    expected = h + (-2.0 - acts) @ sae.W_dec[feats]
    assert_close(result.stream[fires], expected[fires])
    assert torch.equal(result.stream[~fires], h[~fires])


def test_strong_touches_every_allowed_token(sae: SAE, sae_path: str) -> None:
    layout = _layout([{"steering": {"tier": "strong"}}])
    h = build_inputs(layout.num_tokens, D_IN)
    feats = [1, 2, 3]
    result = _middleware(sae_path, default_tiers(feats, strong_add=-4.0))(h, layout)
    generated = ~layout.is_prompt
    assert torch.equal(result.side_outputs[STEERED].bool(), generated)
    assert_close(result.stream[generated], h[generated] - 4.0 * sae.W_dec[feats].sum(dim=0))
    assert torch.equal(result.stream[~generated], h[~generated])


@pytest.mark.parametrize("positions", ["prompt", "generated", "both"])
def test_steer_positions(sae_path: str, positions: str) -> None:
    layout = _layout(
        [
            {"steering": {"tier": "strong"}},
            {"steering": {"interventions": [{"feature": 0, "mode": "add", "strength": 1.0}]}},
        ]
    )
    result = _middleware(sae_path, default_tiers([1]), steer_positions=positions)(
        build_inputs(layout.num_tokens, D_IN), layout
    )
    want = {
        "prompt": layout.is_prompt,
        "generated": ~layout.is_prompt,
        "both": torch.ones_like(layout.is_prompt),
    }
    assert torch.equal(result.side_outputs[STEERED].bool(), want[positions])


def test_tier_overrides_steer_positions(sae_path: str) -> None:
    tiers = default_tiers([1])
    tiers["strong"]["steer_positions"] = "prompt"
    layout = _layout([{"steering": {"tier": "strong"}}, {"steering": {"tier": "light"}}])
    mw = _middleware(sae_path, tiers, steer_positions="generated")
    result = mw(build_inputs(layout.num_tokens, D_IN), layout)
    s, e = layout.spans()[0]
    assert torch.equal(result.side_outputs[STEERED][s:e].bool(), layout.is_prompt[s:e])


def test_request_overrides_steer_positions(sae_path: str) -> None:
    """A request may steer its prompt too (what scoring a text under a steered model needs)."""
    add = [{"feature": 0, "mode": "add", "strength": 1.0}]
    layout = _layout([{"steering": {"tier": "strong", "steer_positions": "both"}},
                      {"steering": {"interventions": add, "steer_positions": "prompt"}},
                      {"steering": {"tier": "strong"}}])
    result = _middleware(sae_path, default_tiers([1]))(build_inputs(layout.num_tokens, D_IN), layout)
    steered = result.side_outputs[STEERED].bool()
    (a, b), (c, d), (e, f) = layout.spans()
    assert steered[a:b].all()
    assert torch.equal(steered[c:d], layout.is_prompt[c:d])
    assert torch.equal(steered[e:f], ~layout.is_prompt[e:f])


def test_skip_token_ids_when_the_layout_has_them(sae_path: str) -> None:
    base = _layout([{"steering": {"tier": "strong"}}])
    h = build_inputs(base.num_tokens, D_IN)
    token_ids = torch.tensor([5, 7, 0, 7, 9, 1])  # generated tokens are the last three
    layout = dataclasses.replace(base, token_ids=token_ids)
    mw = _middleware(sae_path, default_tiers([1]), steer_positions="both", skip_token_ids=[0, 7])
    steered = mw(h, layout).side_outputs[STEERED].bool()
    assert torch.equal(steered, ~torch.isin(token_ids, torch.tensor([0, 7])))
    # A layout without token_ids: nothing to skip by.
    assert mw(h, base).side_outputs[STEERED].bool().all()


def test_repeated_steps_reuse_compiled_plans(
    sae: SAE, sae_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"compile": 0, "batch": 0}
    compile_, from_plans = SteeringPlan.compile.__func__, PlanBatch.from_plans.__func__

    def counting_compile(cls: type, *a: Any, **kw: Any) -> SteeringPlan:
        calls["compile"] += 1
        return compile_(cls, *a, **kw)

    def counting_batch(cls: type, *a: Any, **kw: Any) -> PlanBatch:
        calls["batch"] += 1
        return from_plans(cls, *a, **kw)

    monkeypatch.setattr(steering_mod.SteeringPlan, "compile", classmethod(counting_compile))
    monkeypatch.setattr(steering_mod.PlanBatch, "from_plans", classmethod(counting_batch))
    custom = {"interventions": [{"feature": 4, "mode": "add", "strength": 2.0}]}
    args = [{"steering": custom}, {}, {"steering": {"tier": "strong"}}]
    mw = _middleware(sae_path, default_tiers([1, 2]))
    calls.update(compile=0, batch=0)
    prefill = _layout(args)
    mw(build_inputs(prefill.num_tokens, D_IN), prefill)
    # A decode step of the same requests: one token each, different layout.
    decode = BatchLayout.from_spans(["r0", "r1", "r2"], [(0, 1), (1, 2), (2, 3)], [8, 8, 8], [5, 5, 5], args)
    h = build_inputs(3, D_IN, seed=9)
    out = mw(h, decode)
    assert calls == {"compile": 1, "batch": 1}
    fresh = _middleware(sae_path, default_tiers([1, 2]))(h, decode)
    assert fresh.stream is not None and out.stream is not None
    assert torch.equal(out.stream, fresh.stream)
    assert torch.equal(out.stream[1], h[1])


@pytest.mark.parametrize(
    "steering",
    [
        "light",
        {"tier": 3},
        {"interventions": "x"},
        {"interventions": [{"feature": 1, "mode": "add", "strength": float("nan")}]},
        {"interventions": [{"feature": 1, "mode": "boost", "strength": 1.0}]},
        {"interventions": [{"feature": -1, "mode": "add", "strength": 1.0}]},
        {"interventions": [{"feature": 1, "mode": "add", "strength": 1.0}] * 17},
        {"interventions": [{"feature": 1, "mode": "add", "strength": 1.0, "vector": [0.0] * D_IN}]},
        {"tier": "light", "interventions": []},
        {"interventions": [{"feature": [1], "mode": ["add"], "strength": 1.0}]},
        {"interventions": [None]},
    ],
)
def test_engine_never_raises_on_bad_specs(sae_path: str, steering: Any) -> None:
    layout = _layout([{"steering": steering}, {"steering": {"tier": "strong"}}])
    h = build_inputs(layout.num_tokens, D_IN)
    result = _middleware(sae_path, default_tiers([1]))(h, layout)
    s, e = layout.spans()[0]
    assert result.stream is not None
    assert torch.equal(result.stream[s:e], h[s:e])
    assert not result.side_outputs[STEERED][s:e].any()


@pytest.mark.parametrize(
    ("tiers", "kw", "match"),
    [
        (
            {"x": {"interventions": [{"feature": 99, "mode": "add", "strength": 1.0}]}},
            {},
            "tier 'x'.*out of range",
        ),
        ({"x": {"interventions": [], "gates": None}}, {}, "unknown key"),
        ({"x": {"interventions": [], "steer_positions": "all"}}, {}, "steer_positions"),
        ({}, {"steer_positions": "all"}, "steer_positions"),
        ({}, {"d_model": D_IN + 1}, "d_model"),
    ],
)
def test_bad_config_fails_at_construction(
    sae_path: str, tiers: dict[str, Any], kw: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {"layer": 1, "d_model": D_IN, "sae_path": sae_path, "tiers": tiers, **kw}
    with pytest.raises(ValueError, match=match):
        SAESteeringMiddleware(**args)


def test_annotate_counts_steered_tokens_per_phase() -> None:
    tokens = [
        {"position": 0, "is_prompt": True, STEERED: 1.0},
        {"position": 1, "is_prompt": True, STEERED: 0.0},
        {"position": 2, "is_prompt": False, STEERED: 1.0},
        {"position": 3, "is_prompt": False, STEERED: 1.0},
        {"position": 4, "is_prompt": False, "toxicity": 0.3},  # another middleware's record
    ]
    safety: dict[str, Any] = {"completion": {"toxicity": 0.1}}
    SAESteeringMiddleware.annotate({}, {"steering": {"tier": "medium"}}, tokens, safety)
    assert safety == {"tier": "medium", "prompt": {"steered_tokens": 1},
                      "completion": {"toxicity": 0.1, "steered_tokens": 2}}


@pytest.mark.parametrize(("steering", "tier"), [
    (None, "off"),
    ({"tier": "strong"}, "strong"),
    ({"interventions": [{"feature": 1, "mode": "add", "strength": 1.0}]}, "custom"),
])
def test_annotate_reports_the_requested_tier(steering: Any, tier: str) -> None:
    safety: dict[str, Any] = {}
    SAESteeringMiddleware.annotate({}, {"steering": steering} if steering else {}, [], safety)
    assert safety["tier"] == tier


def test_request_validator_rejects_what_the_engine_cannot_serve(sae_path: str) -> None:
    check = SAESteeringMiddleware.request_validator({"sae_path": sae_path, "tiers": default_tiers([0])})
    check({"steering": {"tier": "light"}})
    check({})
    with pytest.raises(ValueError):
        check({"steering": {"tier": "nope"}})
    with pytest.raises(ValueError):
        check({"steering": {"interventions": [{"feature": 10**6, "mode": "add", "strength": 1.0}]}})


def test_default_tiers_presets() -> None:
    tiers = default_tiers([4, 9])
    assert tiers["off"]["interventions"] == []
    assert {s["mode"] for s in tiers["light"]["interventions"]} == {"ablate"}
    assert tiers["light"]["gate"]["features"] == [4, 9]
    assert all(s["mode"] == "clamp" and s["strength"] < 0 for s in tiers["medium"]["interventions"])
    assert tiers["medium"]["gate"]["threshold"] < tiers["light"]["gate"]["threshold"]
    assert all(s["mode"] == "add" and s["strength"] < 0 for s in tiers["strong"]["interventions"])
    assert tiers["strong"]["gate"] is None
    with pytest.raises(ValueError):
        default_tiers([])


@pytest.mark.parametrize(
    ("steering", "match"),
    [
        ({"tier": "extreme"}, "unknown steering tier 'extreme'"),
        (
            {"interventions": [{"feature": D_SAE, "mode": "add", "strength": 1.0}]},
            r"feature 32 is out of range.*0\.\.31",
        ),
        (
            {"interventions": [{"feature": 1, "mode": "add", "strength": math.inf}]},
            "strength must be a finite number",
        ),
        (
            {"interventions": [{"feature": 1, "mode": "add", "strength": "big"}]},
            "strength must be a finite number",
        ),
        ({"interventions": [{"feature": 1, "mode": "zap", "strength": 1.0}]}, "mode must be one of"),
        ({"interventions": [{"feature": 1.5, "mode": "add", "strength": 1.0}]}, "feature must be an integer"),
        ({"interventions": [{"mode": "add", "strength": 1.0}]}, "needs a 'feature'"),
        ({"interventions": [{"feature": 1, "mode": "add", "strength": 1.0}] * 3}, "at most 2"),
        ({"interventions": [{"feature": 1, "mode": "add", "strength": 1.0, "vector": [1.0]}]}, "unknown key"),
        ({"tier": "light", "interventions": []}, "exactly one of"),
        ({"tier": "light", "steer_positions": "all"}, "steer_positions must be one of"),
        ({}, "exactly one of"),
        ("light", "must be an object"),
    ],
)
def test_validate_steering_errors(steering: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_steering(steering, D_SAE, default_tiers([1]), max_interventions=2)


def test_validate_steering_accepts_valid_specs(sae_path: str) -> None:
    tiers = default_tiers([1])
    for steering in (
        {"tier": "off"},
        {"tier": "strong"},
        {"tier": "strong", "steer_positions": "both"},
        {"interventions": []},
        {
            "interventions": [
                {"feature": 0, "mode": "clamp", "strength": -3},
                {"feature": 31, "mode": "ablate"},
            ]
        },
    ):
        validate_steering(steering, D_SAE, tiers, max_interventions=2)
    validate = steering_validator({"sae_path": sae_path, "tiers": tiers})
    validate({"tier": "light"})
    with pytest.raises(ValueError, match="out of range"):
        validate({"interventions": [{"feature": D_SAE, "mode": "add", "strength": 1.0}]})


def test_tier_label() -> None:
    assert tier_label(None) == "off"
    assert tier_label({"tier": "medium"}) == "medium"
    assert tier_label({"interventions": [{"feature": 1, "mode": "add", "strength": 1.0}]}) == "custom"
    assert tier_label({"interventions": []}) == "off"
