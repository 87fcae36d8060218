"""What steering a request gets: the policy's tier, or the request's `steering` where the policy allows it.

The request field has already been validated for shape by the ingress (serving/protocol.py's
`SteeringRequest`, dumped with `exclude_none=True`); this module only decides whether the tenant's
policy permits it. A refusal is HTTP 403, not 400: the request is well-formed, just not allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.schema import Policy

__all__ = ["OverrideForbidden", "CUSTOM_TIER", "effective_steering", "tier_of"]

# What `tier_of` reports for explicit interventions: one bounded label value for metrics and `safety.tier`.
CUSTOM_TIER = "custom"


class OverrideForbidden(Exception):
    """The request's `steering` is not allowed by its policy: answer HTTP 403."""

    status = 403
    code = "steering_not_allowed"

    def __init__(self, message: str, param: str = "steering") -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _check_tier(policy: Policy, tier: str) -> dict[str, Any]:
    rules = policy.steering
    if tier == rules.tier:
        return {"tier": tier}  # asking for what the policy gives anyway is not an override
    if not rules.allow_override:
        raise OverrideForbidden(
            f"policy {policy.name!r} does not allow changing the steering tier (it applies {rules.tier!r})",
            param="steering.tier",
        )
    if rules.allowed_tiers is not None and tier not in rules.allowed_tiers:
        allowed = ", ".join(repr(t) for t in dict.fromkeys([rules.tier, *rules.allowed_tiers]))
        raise OverrideForbidden(
            f"steering tier {tier!r} is not allowed by policy {policy.name!r} (allowed: {allowed})",
            param="steering.tier",
        )
    return {"tier": tier}


def _check_interventions(policy: Policy, interventions: list[Mapping[str, Any]]) -> dict[str, Any]:
    rules = policy.steering
    if not rules.allow_override:
        raise OverrideForbidden(f"policy {policy.name!r} does not allow changing steering",
                                param="steering.interventions")
    if not rules.allow_interventions:
        raise OverrideForbidden(f"policy {policy.name!r} does not allow explicit steering interventions",
                                param="steering.interventions")
    if len(interventions) > rules.max_interventions:
        raise OverrideForbidden(
            f"policy {policy.name!r} allows at most {rules.max_interventions} interventions, "
            f"got {len(interventions)}",
            param="steering.interventions",
        )
    if rules.max_abs_strength is not None:
        for i, item in enumerate(interventions):
            strength = float(item.get("strength", 0.0))
            if abs(strength) > rules.max_abs_strength:
                raise OverrideForbidden(
                    f"intervention strength {strength} exceeds policy {policy.name!r}'s bound "
                    f"|strength| <= {rules.max_abs_strength}",
                    param=f"steering.interventions.{i}.strength",
                )
    return {"interventions": [dict(item) for item in interventions]}


def effective_steering(policy: Policy, requested: Mapping[str, Any] | None) -> dict[str, Any]:
    """The steering to apply: `{"tier": name}` or `{"interventions": [...]}`. Raises OverrideForbidden (403).

    `requested` is the request's `steering` field as a plain dict, or None when it sent none.
    """
    if requested is None:
        return {"tier": policy.steering.tier}
    interventions = requested.get("interventions")
    tier = requested.get("tier")
    if interventions is not None:
        effective = _check_interventions(policy, list(interventions))
    elif isinstance(tier, str):
        effective = _check_tier(policy, tier)
    else:
        # The ingress validates shape first; reaching here is a caller bug, not a client mistake.
        raise ValueError("steering needs exactly one of 'tier' or 'interventions'")
    positions = requested.get("steer_positions")
    if positions is not None:
        # Steering other tokens than the policy's tier does (e.g. the prompt) is an override too.
        if not policy.steering.allow_override:
            raise OverrideForbidden(f"policy {policy.name!r} does not allow changing steering",
                                    param="steering.steer_positions")
        effective["steer_positions"] = positions
    return effective


def tier_of(steering: Mapping[str, Any]) -> str:
    """The tier name of an effective steering, or CUSTOM_TIER for explicit interventions."""
    tier = steering.get("tier")
    return tier if isinstance(tier, str) else CUSTOM_TIER
