"""middleware/interventions.py: each steering formula, gating, masks, batching, validation.

Every test runs twice: apply_steering gathering the steerable tokens first (the CPU default) and
dense (every token computed and masked, no host sync: the default on GPUs), so both give the results
the tests demand; `test_dense_and_gathered_are_identical` compares the two bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from middleware import interventions
from middleware.interventions import (
    GateSpec,
    InterventionSpec,
    PlanBatch,
    SteeringPlan,
    apply_plan,
    apply_steering,
    token_rows_from_counts,
)
from middleware.sae import SAE
from tests.middleware.builders import build_inputs, build_sae


def _partly_active_feature(sae: SAE, h: torch.Tensor, skip: tuple[int, ...] = ()) -> int:
    """A feature active on some tokens of h and inactive on others."""
    active = sae.encode(h) > 0  # (T, d_sae)
    for f in range(sae.cfg.d_sae):
        if f not in skip and 0 < int(active[:, f].sum()) < h.shape[0]:
            return f
    raise AssertionError("no partly active feature in the test inputs")


def _plan(sae: SAE, *specs: InterventionSpec, gate: GateSpec | None = None) -> SteeringPlan:
    return SteeringPlan.compile(list(specs), sae, gate)


@pytest.fixture(autouse=True, params=["gathered", "dense"])
def steering_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(interventions, "GATHER_ON", ("cpu",) if request.param == "gathered" else ())
    return request.param


@pytest.fixture
def sae() -> SAE:
    return build_sae("standard")


@pytest.fixture
def h() -> torch.Tensor:
    return build_inputs(n_tokens=12)


def test_add(sae: SAE, h: torch.Tensor) -> None:
    out, changed = apply_plan(h, sae, _plan(sae, InterventionSpec(feature=5, mode="add", strength=2.5)))
    assert_close(out, h + 2.5 * sae.W_dec[5])
    assert changed.all()


def test_ablate_removes_the_feature_where_active(sae: SAE, h: torch.Tensor) -> None:
    f = _partly_active_feature(sae, h)
    act = sae.encode(h)[:, f]  # (T,)
    out, changed = apply_plan(h, sae, _plan(sae, InterventionSpec(feature=f, mode="ablate", strength=7.0)))
    assert_close(out, h - act[:, None] * sae.W_dec[f])
    assert torch.equal(changed, act > 0)
    assert torch.equal(out[act == 0], h[act == 0]), "inactive tokens stay bit-identical"


def test_clamp_sets_the_feature_contribution(sae: SAE, h: torch.Tensor) -> None:
    f = _partly_active_feature(sae, h)
    act = sae.encode(h)[:, f]
    out, changed = apply_plan(h, sae, _plan(sae, InterventionSpec(feature=f, mode="clamp", strength=3.0)))
    assert_close(out, h + (3.0 - act)[:, None] * sae.W_dec[f])
    assert changed.all()


def test_raw_vector(sae: SAE, h: torch.Tensor) -> None:
    v = torch.linspace(-1, 1, 16)
    out, changed = apply_plan(
        h, sae, _plan(sae, InterventionSpec(feature=None, strength=-0.5, vector=v.tolist()))
    )
    assert_close(out, h - 0.5 * v)
    assert changed.all()


def test_several_interventions_sum_deltas_from_the_original_h(sae: SAE, h: torch.Tensor) -> None:
    f = _partly_active_feature(sae, h)
    g = _partly_active_feature(sae, h, skip=(f,))
    acts = sae.encode(h)
    v = torch.ones(16)
    specs = [
        InterventionSpec(feature=f, mode="ablate"),
        InterventionSpec(feature=g, mode="clamp", strength=1.5),
        InterventionSpec(feature=f, mode="add", strength=0.25),
        InterventionSpec(feature=None, strength=0.1, vector=v.tolist()),
    ]
    out, _ = apply_plan(h, sae, _plan(sae, *specs))
    expected = (
        h
        - acts[:, f, None] * sae.W_dec[f]
        + (1.5 - acts[:, g, None]) * sae.W_dec[g]
        + 0.25 * sae.W_dec[f]
        + 0.1 * v
    )
    assert_close(out, expected)


def test_repeating_a_clamp_applies_it_twice(sae: SAE, h: torch.Tensor) -> None:
    act = sae.encode(h)[:, 4]
    spec = InterventionSpec(feature=4, mode="clamp", strength=2.0)
    out, _ = apply_plan(h, sae, _plan(sae, spec, spec))
    assert_close(out, h + 2 * (2.0 - act)[:, None] * sae.W_dec[4])


def test_gate_touches_only_tokens_where_a_gate_feature_fires(sae: SAE, h: torch.Tensor) -> None:
    f = _partly_active_feature(sae, h)
    acts = sae.encode(h)[:, f]
    weakest_two = acts[acts > 0].sort().values[:2]
    threshold = float(weakest_two.mean())  # the weakest firing token stays below the threshold
    fires = acts > threshold
    assert 0 < int(fires.sum()) < int((acts > 0).sum())
    g = _partly_active_feature(sae, h, skip=(f,))
    plan = _plan(
        sae, InterventionSpec(feature=9, strength=1.0), gate=GateSpec(features=[f, g], threshold=threshold)
    )
    fires = fires | (sae.encode(h)[:, g] > threshold)  # any gate feature opens the gate
    assert not fires.all()
    out, changed = apply_plan(h, sae, plan)
    assert torch.equal(changed, fires)
    assert_close(out[fires], h[fires] + sae.W_dec[9])
    assert torch.equal(out[~fires], h[~fires])


def test_token_mask_is_respected(sae: SAE, h: torch.Tensor) -> None:
    mask = torch.zeros(12, dtype=torch.bool)
    mask[[1, 4, 5]] = True
    out, changed = apply_plan(h, sae, _plan(sae, InterventionSpec(feature=2, strength=1.0)), token_mask=mask)
    assert torch.equal(changed, mask)
    assert torch.equal(out[~mask], h[~mask])
    assert_close(out[mask], h[mask] + sae.W_dec[2])


def test_zero_strength_add_and_empty_plan_change_nothing(sae: SAE, h: torch.Tensor) -> None:
    for plan in (_plan(sae, InterventionSpec(feature=2, strength=0.0)), _plan(sae), None):
        out, changed = apply_plan(h, sae, plan)
        assert not changed.any()
        assert torch.equal(out, h)


def test_topk_sae_uses_topk_activations_for_clamp(h: torch.Tensor) -> None:
    sae = build_sae("topk")
    f = _partly_active_feature(sae, h)
    act = sae.encode(h)[:, f]  # zero wherever f is not among the top k
    out, _ = apply_plan(h, sae, _plan(sae, InterventionSpec(feature=f, mode="clamp", strength=1.0)))
    assert_close(out, h + (1.0 - act)[:, None] * sae.W_dec[f])


def test_batch_of_different_plans_equals_each_plan_on_its_own_slice(sae: SAE) -> None:
    h = build_inputs(n_tokens=10)
    f = _partly_active_feature(sae, h)
    plans = [
        _plan(sae, InterventionSpec(feature=f, mode="ablate")),
        None,
        _plan(
            sae,
            InterventionSpec(feature=3, mode="clamp", strength=-1.0),
            gate=GateSpec(features=[f], threshold=0.0),
        ),
        _plan(sae, InterventionSpec(feature=None, strength=2.0, vector=[0.5] * 16)),
    ]
    spans = [(0, 3), (3, 5), (5, 8), (8, 9)]  # token 9 is padding
    rows = torch.full((10,), -1)
    for r, (s, e) in enumerate(spans):
        rows[s:e] = r
    mask = torch.ones(10, dtype=torch.bool)
    mask[1] = False
    out, changed = apply_steering(h, sae, PlanBatch.from_plans(plans, rows, sae), token_mask=mask)

    for plan, (s, e) in zip(plans, spans, strict=True):
        alone, alone_changed = apply_plan(h[s:e], sae, plan, token_mask=mask[s:e])
        assert_close(out[s:e], alone)
        assert torch.equal(changed[s:e], alone_changed)
    assert torch.equal(out[3:5], h[3:5]) and not changed[3:5].any()
    assert torch.equal(out[9], h[9]) and not changed[9]
    assert changed[8] and not changed[1]


def test_token_rows_from_counts() -> None:
    assert token_rows_from_counts([2, 0, 3]).tolist() == [0, 0, 2, 2, 2]


def test_low_precision_stream_keeps_its_dtype_and_untouched_tokens(sae: SAE, h: torch.Tensor) -> None:
    h16 = h.to(torch.bfloat16)
    f = _partly_active_feature(sae, h16.float())
    out, changed = apply_plan(h16, sae, _plan(sae, InterventionSpec(feature=f, mode="ablate")))
    assert out.dtype == torch.bfloat16
    assert torch.equal(out[~changed], h16[~changed])
    act = sae.encode(h16)[:, f]
    assert_close(out.float(), (h16.float() - act[:, None] * sae.W_dec[f]).to(torch.bfloat16).float())


def test_plan_batch_checks_shapes(sae: SAE, h: torch.Tensor) -> None:
    batch = PlanBatch.from_plans(
        [_plan(sae, InterventionSpec(feature=31, strength=1.0))], torch.zeros(5), sae
    )
    with pytest.raises(ValueError, match="covers 5 tokens"):
        apply_steering(h, sae, batch)
    small = build_sae("standard", d_sae=8)
    with pytest.raises(ValueError, match="d_sae=8"):
        PlanBatch.from_plans([_plan(sae, InterventionSpec(feature=31, strength=1.0))], torch.zeros(12), small)
    with pytest.raises(ValueError, match="request 1"):
        PlanBatch.from_plans([None], torch.ones(12), sae)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (InterventionSpec(feature=32, strength=1.0), "out of range"),
        (InterventionSpec(feature=-1, strength=1.0), "out of range"),
        (InterventionSpec(feature=True, strength=1.0), "integer"),  # type: ignore[arg-type]
        (InterventionSpec(feature=1, strength=math.nan), "finite"),
        (InterventionSpec(feature=1, mode="clamp", strength=math.inf), "finite"),
        (InterventionSpec(feature=1, mode="scale", strength=1.0), "mode"),  # type: ignore[arg-type]
        (InterventionSpec(feature=None, strength=1.0), "feature index or a vector"),
        (InterventionSpec(feature=1, strength=1.0, vector=[0.0] * 16), "not both"),
        (InterventionSpec(feature=None, mode="clamp", strength=1.0, vector=[0.0] * 16), "only be added"),
        (InterventionSpec(feature=None, strength=1.0, vector=[0.0] * 15), "length 15"),
        (InterventionSpec(feature=None, strength=1.0, vector=[0.0] * 15 + [math.nan]), "finite"),
    ],
)
def test_invalid_specs_raise(sae: SAE, spec: InterventionSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec.validate(sae)
    with pytest.raises(ValueError, match=message):
        SteeringPlan.compile([spec], sae)


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        (GateSpec(features=[]), "at least one"),
        (GateSpec(features=[40]), "out of range"),
        (GateSpec(features=[1], threshold=math.nan), "finite"),
    ],
)
def test_invalid_gates_raise(sae: SAE, gate: GateSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SteeringPlan.compile([InterventionSpec(feature=1, strength=1.0)], sae, gate)


@pytest.mark.parametrize("arch", ["standard", "topk"])
def test_dense_and_gathered_are_identical(arch: str) -> None:
    sae = build_sae(arch)
    h = build_inputs(n_tokens=64)
    f = _partly_active_feature(sae, h)
    plans = [_plan(sae, InterventionSpec(feature=f, mode="ablate"), gate=GateSpec(features=[f], threshold=0.0)),
             None, _plan(sae, InterventionSpec(feature=3, mode="clamp", strength=-1.0)),
             _plan(sae, InterventionSpec(feature=5, mode="add", strength=2.0))]
    rows = torch.arange(64) % 5 - 1  # -1: padding, 1: no plan
    mask = torch.rand(64, generator=torch.Generator().manual_seed(0)) > 0.3
    batch = PlanBatch.from_plans(plans, rows, sae)
    gathered = apply_steering(h, sae, batch, mask, dense=False)
    dense = apply_steering(h, sae, batch, mask, dense=True)
    assert torch.equal(gathered[0], dense[0]) and torch.equal(gathered[1], dense[1])
    assert gathered[1].any() and not gathered[1].all()


def test_gate_thresholds_per_feature(sae: SAE, h: torch.Tensor) -> None:
    f = _partly_active_feature(sae, h)
    g = _partly_active_feature(sae, h, skip=(f,))
    acts = sae.encode(h)
    # f's own cut lets none of its tokens through; g's cut lets every token where it is active.
    gate = GateSpec(features=[f, g], threshold=[float(acts[:, f].max()) + 1.0, 0.0])
    out, changed = apply_plan(h, sae, _plan(sae, InterventionSpec(feature=9, strength=1.0), gate=gate))
    fires = acts[:, g] > 0
    assert 0 < int(fires.sum()) < h.shape[0]
    assert torch.equal(changed, fires)
    assert_close(out[fires], h[fires] + sae.W_dec[9])


def test_a_linear_gate_opens_where_its_weighted_log_activations_cross_the_threshold(sae: SAE,
                                                                                    h: torch.Tensor) -> None:
    f = _partly_active_feature(sae, h)
    g = _partly_active_feature(sae, h, skip=(f,))
    acts = sae.encode(h)[:, [f, g]].clamp_min(0)  # (T, 2)
    score = torch.log1p(acts) @ torch.tensor([1.0, -0.5])  # (T,) g is evidence against
    threshold = float(score[score > 0].sort().values[:2].mean())  # the weakest positive token stays shut
    fires = score > threshold
    assert 0 < int(fires.sum()) < h.shape[0]
    gate = GateSpec(features=[f, g], threshold=threshold, weights=[1.0, -0.5])
    out, changed = apply_plan(h, sae, _plan(sae, InterventionSpec(feature=9, strength=1.0), gate=gate))
    assert torch.equal(changed, fires)
    assert_close(out[fires], h[fires] + sae.W_dec[9])
    assert torch.equal(out[~fires], h[~fires])
    # Batched beside a per-feature gate and an ungated plan, each row keeps its own rule.
    per_feature = _plan(sae, InterventionSpec(feature=9, strength=1.0),
                        gate=GateSpec(features=[f], threshold=0.0))
    plans = [_plan(sae, InterventionSpec(feature=9, strength=1.0), gate=gate), per_feature,
             _plan(sae, InterventionSpec(feature=9, strength=1.0))]
    rows = torch.arange(h.shape[0]) % 3
    _, batched = apply_steering(h, sae, PlanBatch.from_plans(plans, rows, sae))
    expected = torch.where(rows == 0, fires, torch.where(rows == 1, sae.encode(h)[:, f] > 0, True))
    assert torch.equal(batched, expected)


@pytest.mark.parametrize(("gate", "message"), [
    (GateSpec(features=[1, 2], threshold=[1.0, 2.0], weights=[1.0, 1.0]), "one threshold"),
    (GateSpec(features=[1, 2], weights=[1.0]), "weights must be a list of as many"),
    (GateSpec(features=[1, 1], weights=[1.0, 1.0]), "distinct"),
    (GateSpec(features=[1, 2], weights=[1.0, math.nan]), "finite"),
])
def test_invalid_linear_gates_raise(sae: SAE, gate: GateSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SteeringPlan.compile([InterventionSpec(feature=1, strength=1.0)], sae, gate)


@pytest.mark.parametrize(("threshold", "message"), [
    ([1.0], "2 features but 1 thresholds"),
    ([1.0, math.inf], "finite"),
    ("high", "number or a list"),
])
def test_invalid_per_feature_thresholds_raise(sae: SAE, threshold: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SteeringPlan.compile([InterventionSpec(feature=1, strength=1.0)], sae,
                             GateSpec(features=[1, 2], threshold=threshold))
