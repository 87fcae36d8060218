"""Request `steering` against the policy: what is allowed, and each 403 case."""

from __future__ import annotations

from typing import Any

import pytest

from policies.overrides import CUSTOM_TIER, OverrideForbidden, effective_steering, tier_of
from policies.schema import Policy


def build_policy(**steering: Any) -> Policy:
    return Policy.model_validate({"name": "p", "steering": steering})


def add(feature: int, strength: float) -> dict[str, Any]:
    return {"feature": feature, "mode": "add", "strength": strength}


def test_no_request_gets_the_policy_tier() -> None:
    assert effective_steering(build_policy(tier="medium"), None) == {"tier": "medium"}


def test_allowed_overrides() -> None:
    policy = build_policy(allowed_tiers=["off", "strong"], max_abs_strength=2.0, max_interventions=2)
    assert effective_steering(policy, {"tier": "strong"}) == {"tier": "strong"}
    assert effective_steering(policy, {"tier": "light"}) == {"tier": "light"}  # the policy's own tier
    steering = {"interventions": [add(1, -2.0), add(2, 1.5)]}
    assert effective_steering(policy, steering) == steering
    assert effective_steering(build_policy(), {"tier": "anything"}) == {"tier": "anything"}


def test_steer_positions_pass_where_overrides_are_allowed() -> None:
    assert effective_steering(build_policy(), {"tier": "light", "steer_positions": "both"}) == {
        "tier": "light", "steer_positions": "both"}
    with pytest.raises(OverrideForbidden) as e:
        effective_steering(build_policy(tier="light", allow_override=False),
                           {"tier": "light", "steer_positions": "both"})
    assert e.value.param == "steering.steer_positions"


def test_own_tier_is_not_an_override() -> None:
    assert effective_steering(build_policy(tier="medium", allow_override=False), {"tier": "medium"}) == {
        "tier": "medium"
    }


@pytest.mark.parametrize("rules, requested, param", [
    ({"allow_override": False}, {"tier": "off"}, "steering.tier"),
    ({"allowed_tiers": ["off"]}, {"tier": "strong"}, "steering.tier"),
    ({"allow_override": False}, {"interventions": []}, "steering.interventions"),
    ({"allow_interventions": False}, {"interventions": [add(0, 1.0)]}, "steering.interventions"),
    ({"max_interventions": 1}, {"interventions": [add(0, 1.0), add(1, 1.0)]}, "steering.interventions"),
    ({"max_abs_strength": 1.0}, {"interventions": [add(0, 1.0), add(1, -1.5)]},
     "steering.interventions.1.strength"),
])
def test_forbidden(rules: dict[str, Any], requested: dict[str, Any], param: str) -> None:
    with pytest.raises(OverrideForbidden) as info:
        effective_steering(build_policy(**rules), requested)
    assert info.value.status == 403
    assert info.value.param == param
    assert "'p'" in info.value.message


def test_tier_of() -> None:
    assert tier_of({"tier": "light"}) == "light"
    assert tier_of({"interventions": [add(0, 1.0)]}) == CUSTOM_TIER
