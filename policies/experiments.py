"""Which arm of a policy's experiment a request gets, and what steering that means.

Assignment is a pure function of (experiment name, salt, arm names and weights, unit), so every
ingress replica, and every restart, gives a unit the same arm without sharing any state.

The rule is weighted rendezvous hashing, as in Ceph's straw2 bucket: each arm draws a uniform
u = H(experiment, salt, arm, unit) in (0, 1] and scores ln(u) / weight; the highest score wins.
-ln(u) / weight is exponential with rate `weight`, so an arm wins with probability
weight / sum(weights). The property that matters for a live experiment: an arm's score depends
only on its own weight, so changing one arm's weight moves units only to that arm (weight up) or
only away from it (weight down), never between the other arms; adding an arm takes units only for
the new arm, removing one moves only its own units. Scores are scale-free, so 50/50 -> 70/30 is
the control's weight alone going down: exactly the units that must move (B -> A) move, and no
unit of A is reshuffled. (Renaming an arm or changing the salt is a new draw for everyone.)

The unit is the OpenAI `user` field, a named header, or the tenant, always hashed together with
the tenant's name: the same `user` string under two tenants is two independent units, so nothing
one tenant sends tells it (or changes) another tenant's arms. A request without its unit is
assigned by its request id: served, never refused, but not sticky.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.overrides import OverrideForbidden, effective_steering
from policies.schema import OVERRIDE_ARM, Arm, Experiment, Policy

__all__ = ["Assignment", "assign", "choose_arm", "labels", "shares", "unit_key"]

_SEP = "\x00"  # cannot occur in names; keeps ("a", "bc") and ("ab", "c") apart


def unit_key(experiment: Experiment, tenant: str, body: Mapping[str, Any], headers: Mapping[str, str],
             request_id: str) -> tuple[str, bool]:
    """(the string hashed for this request's unit, whether it is sticky). `headers` is case-insensitive
    (Starlette's Headers) or has lowercase keys."""
    if experiment.unit == "tenant":
        return tenant, True
    if experiment.unit == "user":
        value = body.get("user")
    else:
        assert experiment.header is not None  # the loader requires it for unit: header
        value = headers.get(experiment.header)
    if isinstance(value, str) and value:
        return f"{tenant}{_SEP}{value}", True
    return f"{tenant}{_SEP}request{_SEP}{request_id}", False


def _uniform(experiment: Experiment, arm: str, key: str) -> float:
    """A uniform draw in (0, 1], the same in every process (sha256, not Python's salted hash())."""
    digest = hashlib.sha256(_SEP.join((experiment.name, experiment.salt, arm, key)).encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 1) / 2.0**64


def choose_arm(experiment: Experiment, key: str) -> Arm:
    """The arm of unit `key`: the control while paused, else weighted rendezvous (module docstring)."""
    if experiment.paused:
        arm = experiment.arm(experiment.control)
        assert arm is not None  # the loader checks that the control is an arm
        return arm
    return max(experiment.arms, key=lambda a: math.log(_uniform(experiment, a.name, key)) / a.weight)


@dataclass(frozen=True)
class Assignment:
    """A request's place in its policy's experiment."""

    experiment: Experiment
    arm: Arm
    sticky: bool  # False when the request lacked its unit and was assigned by request id

    def steering(self, policy: Policy, requested: Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
        """(the steering to apply, the arm to report it under). Raises OverrideForbidden (403).

        Without a request `steering` (or with exactly the arm's own), the arm's steering under the
        arm's name. Any other `steering` is an override: refused, or (on_override: record) decided by
        the policy's ordinary override rules and reported under arm "override", so it never counts
        towards the arm the unit was assigned.
        """
        own = self.arm.steering()
        if requested is None or dict(requested) == own:
            return own, self.arm.name
        if self.experiment.on_override == "refuse":
            raise OverrideForbidden(
                f"policy {policy.name!r} runs experiment {self.experiment.name!r}, which sets the steering "
                "of each request: send no `steering` field")
        return effective_steering(policy, requested), OVERRIDE_ARM


def assign(policy: Policy, tenant: str, body: Mapping[str, Any], headers: Mapping[str, str],
           request_id: str) -> Assignment | None:
    """The request's arm in `policy`'s experiment; None when the policy runs none."""
    experiment = policy.experiment
    if experiment is None:
        return None
    key, sticky = unit_key(experiment, tenant, body, headers, request_id)
    return Assignment(experiment, choose_arm(experiment, key), sticky)


def labels(policy: Policy) -> list[tuple[str, str]]:
    """Every (experiment, arm) label pair `policy` can report, for every model: ("", "") for requests
    outside an experiment (or refused before their arm was decided), each arm, and "override" where
    the experiment records overrides. Bounded: all of it comes from the policy file."""
    pairs = {("", ""): None}
    for experiment in (policy.experiment, *(s.experiment for s in policy.models.values())):
        if experiment is None:
            continue
        pairs |= {(experiment.name, a.name): None for a in experiment.arms}
        if experiment.on_override == "record":
            pairs[(experiment.name, OVERRIDE_ARM)] = None
    return list(pairs)


def shares(experiment: Experiment) -> dict[str, float]:
    """Each arm's expected share of units: its weight's share, or all to the control while paused."""
    if experiment.paused:
        return {a.name: float(a.name == experiment.control) for a in experiment.arms}
    total = sum(a.weight for a in experiment.arms)
    return {a.name: a.weight / total for a in experiment.arms}
