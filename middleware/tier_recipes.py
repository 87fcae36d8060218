"""Calibrated tier presets as recipes over a features file's statistics, not as feature indices.

`steergate calibrate` measures candidate tiers with the evaluation harness and writes the winners
to `tiers.json` beside the features file. A recipe names no feature index: it says which of the
detector's toxic features to steer (the top k by detector weight, of those weighted positively: a
signed detector's negative features are benign evidence, never steered), how (add / clamp / ablate), how hard
(in units of each feature's own typical activation on toxic text), and where (a gate that opens
where a feature fires above a multiple of its own gate threshold, or where the detector's own
per-token logit crosses a level). So the file stays meaningful
when `find-features` reselects the features; the calibration should still be rerun then, since
the numbers it measured were for the old ones.

For feature i of the chosen ones (typical_i, gate_i from the features file):

    add     h += strength * typical_i * d_i                       (strength < 0 steers away)
    clamp   h += (strength * typical_i - f_i(h)) * d_i
    ablate  h -= f_i(h) * d_i
    gate    open where any f_i(h) > gate * gate_i                 (null: every steerable token)
    detector_gate   open where bias + sum_j w_j log1p(max(f_j(h), 0)) > detector_gate, over all
                    the detector's features j, both signs (instead of `gate`)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from middleware.interventions import MODES, Mode
from middleware.tiers import OFF_TIER, STEER_POSITIONS, SteerPositions

__all__ = ["TIERS_FORMAT", "TierRecipe", "load_tier_recipes", "recipe_presets", "steerable", "tiers_path_for",
           "write_tier_recipes"]

TIERS_FORMAT = "steergate-tiers/1"
_FIELDS = frozenset({"mode", "strength", "gate", "detector_gate", "top_k", "steer_positions"})


def steerable(weights: Sequence[float]) -> list[int]:
    """Indices of the detector features a tier may steer: the toxic ones (positive weight). A
    signed detector's negative-weight features are benign evidence and are never steered."""
    return [i for i, w in enumerate(weights) if w > 0]


@dataclass(frozen=True)
class TierRecipe:
    """One tier as a rule over a features file (see the module docstring)."""

    mode: Mode
    strength: float = 0.0  # x each feature's typical activation (add: the amount, clamp: the target)
    gate: float | None = None  # x each feature's gate threshold; None: ungated
    top_k: int | None = None  # the k detector features of largest positive weight; None: all of them
    steer_positions: SteerPositions | None = None  # None: the middleware's default
    # The detector's per-token logit (0 is its text-level threshold) at which the gate opens;
    # None: `gate` decides.
    detector_gate: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"tier recipe mode must be one of {MODES}, got {self.mode!r}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"tier recipe top_k must be >= 1, got {self.top_k}")
        if self.gate is not None and self.gate < 0:
            raise ValueError(f"tier recipe gate must be >= 0, got {self.gate}")
        if self.gate is not None and self.detector_gate is not None:
            raise ValueError("a tier recipe has a feature gate or a detector gate, not both")
        if self.steer_positions is not None and self.steer_positions not in STEER_POSITIONS:
            raise ValueError(f"tier recipe steer_positions must be one of {STEER_POSITIONS}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TierRecipe:
        unknown = sorted(set(raw) - _FIELDS)
        if unknown:
            raise ValueError(f"tier recipe: unknown key(s) {unknown}; allowed: {sorted(_FIELDS)}")
        return cls(**raw)

    def preset(self, features: Sequence[int], weights: Sequence[float], gate_thresholds: Sequence[float],
               typical_activation: Sequence[float], bias: float = 0.0) -> dict[str, Any]:
        """The tier as config (middleware/tiers.py's preset form) for one features file's numbers.

        features, weights, gate_thresholds, typical_activation: (m,) each, as in the file; bias its
        detector's.
        """
        toxic = steerable(weights)
        order = sorted(toxic, key=lambda i: -weights[i])[: self.top_k or len(toxic)]
        chosen = sorted(order)  # keep the file's order among the chosen
        # Files written before these statistics existed: unit scale.
        typical = [typical_activation[i] if typical_activation else 1.0 for i in chosen]
        gates = [gate_thresholds[i] if gate_thresholds else 1.0 for i in chosen]
        feats = [int(features[i]) for i in chosen]
        interventions = [{"feature": f, "mode": self.mode, "strength": float(self.strength * t)}
                         for f, t in zip(feats, typical, strict=True)]
        gate: dict[str, Any] | None = None
        if self.gate is not None:
            gate = {"features": feats, "threshold": [float(self.gate * g) for g in gates]}
        elif self.detector_gate is not None:
            gate = {"features": [int(f) for f in features], "weights": [float(w) for w in weights],
                    "threshold": float(self.detector_gate - bias)}
        preset: dict[str, Any] = {"interventions": interventions, "gate": gate}
        if self.steer_positions is not None:
            preset["steer_positions"] = self.steer_positions
        return preset


def recipe_presets(recipes: Mapping[str, TierRecipe], features: Sequence[int], weights: Sequence[float],
                   gate_thresholds: Sequence[float], typical_activation: Sequence[float], bias: float = 0.0
                   ) -> dict[str, dict[str, Any]]:
    """Every tier's preset, "off" first (always present, always empty)."""
    out: dict[str, dict[str, Any]] = {OFF_TIER: {"interventions": [], "gate": None}}
    for name, recipe in recipes.items():
        if name != OFF_TIER:
            out[name] = recipe.preset(features, weights, gate_thresholds, typical_activation, bias)
    return out


def tiers_path_for(features_path: str | Path) -> Path:
    """Where the tiers file of a features file lives: beside it, features.json -> tiers.json,
    NAME.json -> NAME.tiers.json (so several features files can share a directory)."""
    features_path = Path(features_path)
    name = "tiers.json" if features_path.name == "features.json" else f"{features_path.stem}.tiers.json"
    return features_path.with_name(name)


def load_tier_recipes(path: str | Path) -> tuple[dict[str, TierRecipe], dict[str, Any]]:
    """(recipes by tier name, the rest of the file: how they were calibrated)."""
    path = Path(path)
    raw = json.loads(path.read_text())
    if raw.get("format") != TIERS_FORMAT:
        raise ValueError(f"{path}: not a steergate tiers file (format {raw.get('format')!r}, "
                         f"expected {TIERS_FORMAT!r})")
    try:
        recipes = {name: TierRecipe.from_dict(r) for name, r in raw["tiers"].items()}
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    return recipes, {k: v for k, v in raw.items() if k not in ("format", "tiers")}


def write_tier_recipes(path: str | Path, recipes: Mapping[str, TierRecipe], extra: Mapping[str, Any]) -> Path:
    """Write `recipes` (and `extra`: the calibration's table and provenance) to `path`."""
    path = Path(path)
    tiers = {name: {k: v for k, v in asdict(r).items() if v is not None} for name, r in recipes.items()}
    path.write_text(json.dumps({"format": TIERS_FORMAT, "tiers": tiers, **extra}, indent=2) + "\n")
    return path

