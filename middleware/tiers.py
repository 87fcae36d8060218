"""Steering tiers and the per-request `steering` field: presets as config, parsing, validation.

"Breaking Bad Tokens: Detoxification of LLMs Using Sparse Autoencoders" steers the toxic SAE
features of a model at three levels of aggressiveness. Here a tier is config, not code: a
preset of interventions (middleware/interventions.py), an optional token-level gate, and an
optional override of which positions are steered. `default_tiers` builds the paper-style
presets over a feature list; its numbers are starting points for calibration by an eval.

A request's `steering` (what the server puts under SamplingParams.extra_args["steergate"]) is
either {"tier": name} or {"interventions": [{"feature", "mode", "strength"}, ...]}, optionally with
"steer_positions" to choose which of its tokens are steered (e.g. "both" to score a text's
log-likelihood under a steered model: the scored tokens are prompt tokens).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from middleware.interventions import MODES, GateSpec, InterventionSpec
from middleware.steering_names import OFF_TIER, TIER_NAMES, TierName

__all__ = [
    "CUSTOM_TIER",
    "OFF_TIER",
    "TIER_NAMES",
    "TierName",
    "STEER_POSITIONS",
    "PresetSpec",
    "SteerPositions",
    "default_tiers",
    "parse_interventions",
    "parse_preset",
    "tier_label",
    "validate_steering",
]

SteerPositions = Literal["prompt", "generated", "both"]
STEER_POSITIONS: tuple[str, ...] = get_args(SteerPositions)
# safety["tier"] of a request that sent explicit interventions instead of a tier.
CUSTOM_TIER = "custom"

_PRESET_KEYS = frozenset({"interventions", "gate", "steer_positions"})
_GATE_KEYS = frozenset({"features", "threshold", "weights"})
# Presets (operator config) may add raw vectors; clients may only name SAE features.
_PRESET_INTERVENTION_KEYS = frozenset({"feature", "mode", "strength", "vector"})
_REQUEST_INTERVENTION_KEYS = frozenset({"feature", "mode", "strength"})


def default_tiers(
    features: Sequence[int],
    *,
    light_threshold: float = 1.0,
    medium_threshold: float = 0.5,
    medium_clamp: float = -2.0,
    strong_add: float = -4.0,
) -> dict[str, dict[str, Any]]:
    """Paper-style presets over the (toxicity) SAE features `features`, as plain config dicts.

    off     nothing
    light   ablate the features, only at tokens where any of them fires above light_threshold
    medium  clamp the features to medium_clamp (< 0), at tokens where any fires above
            medium_threshold (lower than light's, so it acts on more tokens)
    strong  add strong_add * d_f for every feature at every steerable token, ungated
    """
    feats = [int(f) for f in features]
    if not feats:
        raise ValueError("default_tiers needs at least one feature")

    def each(mode: str, strength: float) -> list[dict[str, Any]]:
        return [{"feature": f, "mode": mode, "strength": float(strength)} for f in feats]

    return {
        OFF_TIER: {"interventions": [], "gate": None},
        "light": {
            "interventions": each("ablate", 0.0),
            "gate": {"features": list(feats), "threshold": float(light_threshold)},
        },
        "medium": {
            "interventions": each("clamp", medium_clamp),
            "gate": {"features": list(feats), "threshold": float(medium_threshold)},
        },
        "strong": {"interventions": each("add", strong_add), "gate": None},
    }


@dataclass(frozen=True)
class PresetSpec:
    """One tier, parsed from config (not yet checked against an SAE)."""

    interventions: list[InterventionSpec]
    gate: GateSpec | None
    steer_positions: SteerPositions | None  # None: the middleware's default


def _check_keys(what: str, given: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _intervention(what: str, raw: Any, allowed: frozenset[str]) -> InterventionSpec:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what} must be an object, got {type(raw).__name__}")
    _check_keys(what, raw, allowed)
    vector = raw.get("vector")
    return InterventionSpec(
        feature=raw.get("feature"),
        mode=raw.get("mode", "add"),
        strength=raw.get("strength", 0.0),
        vector=None if vector is None else list(vector),
    )


def parse_preset(name: str, raw: Any) -> PresetSpec:
    """A tier preset from config: {"interventions": [...], "gate": {...} | None, "steer_positions"?}."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"tier {name!r} must be a mapping, got {type(raw).__name__}")
    _check_keys(f"tier {name!r}", raw, _PRESET_KEYS)
    items = raw.get("interventions") or []
    specs = [
        _intervention(f"tier {name!r} intervention {i}", s, _PRESET_INTERVENTION_KEYS)
        for i, s in enumerate(items)
    ]
    gate_raw = raw.get("gate")
    gate = None
    if gate_raw is not None:
        if not isinstance(gate_raw, Mapping):
            raise ValueError(f"tier {name!r} gate must be a mapping or null")
        _check_keys(f"tier {name!r} gate", gate_raw, _GATE_KEYS)
        weights = gate_raw.get("weights")
        gate = GateSpec(
            features=list(gate_raw.get("features") or []), threshold=gate_raw.get("threshold", 0.0),
            weights=None if weights is None else list(weights),
        )
    positions = raw.get("steer_positions")
    if positions is not None and positions not in STEER_POSITIONS:
        raise ValueError(f"tier {name!r} steer_positions must be one of {STEER_POSITIONS}, got {positions!r}")
    return PresetSpec(specs, gate, positions)


def parse_interventions(items: Any, max_interventions: int) -> list[InterventionSpec]:
    """A request's explicit interventions (not yet checked against an SAE)."""
    if not isinstance(items, list):
        raise ValueError(f"steering.interventions must be a list, got {type(items).__name__}")
    if len(items) > max_interventions:
        raise ValueError(
            f"steering.interventions has {len(items)} entries; at most {max_interventions} allowed"
        )
    specs = [
        _intervention(f"steering.interventions[{i}]", s, _REQUEST_INTERVENTION_KEYS)
        for i, s in enumerate(items)
    ]
    for i, s in enumerate(specs):
        if s.feature is None:
            raise ValueError(f"steering.interventions[{i}] needs a 'feature'")
    return specs


def validate_steering(
    steering: Any, d_sae: int, tiers: Mapping[str, Any], max_interventions: int = 16
) -> None:
    """Raise ValueError with a client-readable message if `steering` cannot run.

    For the API layer, before a request reaches the engine (the engine itself never raises on a
    bad spec: it leaves that request unsteered). "off" is always a valid tier.
    """
    if not isinstance(steering, Mapping):
        raise ValueError(f"steering must be an object, got {type(steering).__name__}")
    _check_keys("steering", steering, frozenset({"tier", "interventions", "steer_positions"}))
    if ("tier" in steering) == ("interventions" in steering):
        raise ValueError("steering needs exactly one of 'tier' or 'interventions'")
    positions = steering.get("steer_positions")
    if positions is not None and positions not in STEER_POSITIONS:
        raise ValueError(f"steering.steer_positions must be one of {list(STEER_POSITIONS)}, got {positions!r}")
    if "tier" in steering:
        tier = steering["tier"]
        if tier != OFF_TIER and (not isinstance(tier, str) or tier not in tiers):
            known = sorted({OFF_TIER, *tiers})
            raise ValueError(f"unknown steering tier {tier!r}; configured tiers: {known}")
        return
    for i, s in enumerate(parse_interventions(steering["interventions"], max_interventions)):
        where = f"steering.interventions[{i}]"
        if not isinstance(s.feature, int) or isinstance(s.feature, bool):
            raise ValueError(f"{where}.feature must be an integer, got {s.feature!r}")
        if not 0 <= s.feature < d_sae:
            raise ValueError(
                f"{where}.feature {s.feature} is out of range: the SAE has features 0..{d_sae - 1}"
            )
        if s.mode not in MODES:
            raise ValueError(f"{where}.mode must be one of {list(MODES)}, got {s.mode!r}")
        strength = s.strength
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not math.isfinite(strength):
            raise ValueError(f"{where}.strength must be a finite number, got {strength!r}")


def tier_label(steering: Any) -> str:
    """safety["tier"] for a request's steering field: its tier, "custom" or "off".

    For the server, which knows what it sent to the engine; the middleware's `annotate` only
    sees per-token records and does not set the tier.
    """
    if not isinstance(steering, Mapping):
        return OFF_TIER
    if "interventions" in steering:
        return CUSTOM_TIER if steering["interventions"] else OFF_TIER
    tier = steering.get("tier")
    return tier if isinstance(tier, str) else OFF_TIER
