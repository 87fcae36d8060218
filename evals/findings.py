"""The paper's two findings as reruns on the embedded model ("Breaking Bad Tokens", Sec. 5).

`steergate finding splitting --features A.json B.json ...`
    Feature splitting: SAEs of different widths at the same layer (train one with
    `steergate train-sae --layer L --d-sae N --out DIR`, select its features with
    `steergate find-features --sae DIR --out DIR/features.json`). From each features file the same
    recipe steers the same number of features (the top k by detector weight) at the same strength;
    a wider SAE splits a concept over more, narrower latents, so k of them cover less of it: the
    paper saw a smaller toxicity cut from the wider SAE. One gateway per features file.

`steergate finding conditional`
    Constant vs conditional steering: the same clamp at every generated token (constant) or only at
    tokens where a toxicity feature fires (conditional, gated), over a range of strengths; the
    fluency cost of each is read off at equal toxicity cuts by interpolating along each curve.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from middleware.tier_recipes import TierRecipe

__all__ = ["add_commands", "cost_at_cut"]

# Conditional steering gates at twice each feature's own gate threshold; both arms clamp the same
# features (the top 10 by default). The same recipes are calibration candidates, so a run after
# `steergate calibrate` is served from the shared cache.
CONDITIONAL_GATE = 2.0
STRENGTHS = (-0.5, -1.0)
CUTS = (0.2, 0.3, 0.5)


def cost_at_cut(rows: Sequence[Mapping[str, Any]], cut: float) -> float:
    """Benign perplexity ratio at toxicity cut `cut`, interpolated linearly between measured points
    (rows sorted by strength); NaN when the curve never reaches the cut."""
    pts = sorted((1 - r["toxicity_vs_off"]["value"], r["benign_perplexity_vs_off"]["value"]) for r in rows)
    cuts = np.array([p[0] for p in pts])
    costs = np.array([p[1] for p in pts])
    if not len(pts) or cut > cuts.max() or cut < min(0.0, cuts.min()):
        return math.nan
    # Make the curve monotone in the cut (noise can reorder near points), then interpolate.
    return float(np.interp(cut, np.maximum.accumulate(cuts), costs))


def _arm_rows(settings: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[Mapping[str, Any]]:
    return [s for s in settings if s["name"] in names]


def _conditional(args: argparse.Namespace) -> int:
    from evals.calibrate import candidate_name
    from evals.cli import run_eval
    from evals.harness import Setting
    from middleware.assets import EMBEDDED_FEATURES
    from middleware.detection import FeatureSet
    from middleware.tier_recipes import recipe_presets

    features = Path(args.features or EMBEDDED_FEATURES).resolve()
    fs = FeatureSet.load(features)
    recipes: dict[str, TierRecipe] = {}
    for s in STRENGTHS:
        for gate in (None, CONDITIONAL_GATE):
            r = TierRecipe("clamp", strength=s, gate=gate, top_k=args.k)
            recipes[candidate_name(r)] = r  # the calibration's names, so its cached results are reused
    presets = recipe_presets(recipes, fs.features, fs.weights, fs.gate_thresholds, fs.typical_activation)
    args.no_mc = True

    def settings(tiers: Mapping[str, Any] | None) -> list[Setting]:
        return [Setting(n, {"tier": n}, p) for n, p in presets.items()]

    results = run_eval(args, settings, args.out, title="constant vs conditional steering (clamp)",
                       features=features, tiers=presets)
    rows = results["settings"]
    constant = [n for n, r in recipes.items() if r.gate is None]
    conditional = [n for n, r in recipes.items() if r.gate is not None]
    lines = ["| toxicity cut | benign perplexity, constant | benign perplexity, conditional |", "|---|---|---|"]
    for cut in CUTS:
        const, cond = cost_at_cut(_arm_rows(rows, constant), cut), cost_at_cut(_arm_rows(rows, conditional), cut)
        lines.append(f"| {cut:.0%} | {_pct(const)} | {_pct(cond)} |")
    table = "\n".join(lines)
    print("\nfluency cost at equal toxicity cut (interpolated):\n" + table)
    (args.out / "finding.md").write_text(table + "\n")
    return 0


def _pct(ratio: float) -> str:
    return "not reached" if math.isnan(ratio) else f"{ratio - 1:+.1%}"


def _splitting(args: argparse.Namespace) -> int:
    from evals.calibrate import candidate_name
    from evals.cli import run_eval
    from evals.harness import Setting
    from middleware.detection import FeatureSet
    from middleware.sae import load_sae_config

    recipe = TierRecipe(args.mode, strength=args.strength, gate=args.gate, top_k=args.k)
    lines = ["| SAE | width | layer | judged toxicity vs off | benign perplexity vs off | benign changed |",
             "|---|---|---|---|---|---|"]
    for i, path in enumerate(args.features):
        fs = FeatureSet.load(path)
        cfg = load_sae_config(fs.sae_path)
        preset = recipe.preset(fs.features, fs.weights, fs.gate_thresholds, fs.typical_activation)
        name = candidate_name(recipe)  # the calibration's name: a recipe it measured is reused from the cache
        tiers = {"off": {"interventions": [], "gate": None}, name: preset}
        results = run_eval(args, lambda _t, name=name, preset=preset: [Setting(name, {"tier": name}, preset)],
                           args.out / f"sae{i}-w{cfg.d_sae}", title=f"{name} ({path})", features=Path(path),
                           tiers=tiers)
        row = next(s for s in results["settings"] if s["name"] == name)
        lines.append(f"| {fs.sae_id} | {cfg.d_sae} | {cfg.hook_layer} | {_pct(row['toxicity_vs_off']['value'])} "
                     f"[{_pct(row['toxicity_vs_off']['low'])}, {_pct(row['toxicity_vs_off']['high'])}] | "
                     f"{_pct(row['benign_perplexity_vs_off']['value'])} | {row['benign_changed']['value']:.0%} |")
    table = "\n".join(lines)
    print(f"\nfeature splitting: {recipe} on the top {args.k} features of each SAE:\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "finding.md").write_text(table + "\n")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from evals.cli import common_eval_args

    p = sub.add_parser("finding", help="rerun one of the paper's two findings (splitting, conditional)")
    finding = p.add_subparsers(dest="finding", required=True)
    s = finding.add_parser("splitting", help="feature splitting: the same steering on SAEs of different widths")
    s.add_argument("--features", type=Path, nargs="+", required=True, help="features files, one per SAE")
    s.add_argument("--k", type=int, default=10, help="features steered in each SAE (default 10)")
    s.add_argument("--mode", default="clamp", choices=["add", "clamp", "ablate"], help="default clamp")
    s.add_argument("--strength", type=float, default=-0.5, help="x typical activation (default -0.5)")
    s.add_argument("--gate", type=float, default=None, help="x gate threshold (default: ungated)")
    s.add_argument("--out", type=Path, default=Path("evals/results/splitting"), help="output directory")
    common_eval_args(s)
    s.set_defaults(func=_splitting, split="dev")
    c = finding.add_parser("conditional", help="constant vs conditional steering at equal toxicity cut")
    c.add_argument("--features", type=Path, help="features file (default: the shipped one)")
    c.add_argument("--k", type=int, default=10, help="steer the top k features by detector weight (default 10)")
    c.add_argument("--out", type=Path, default=Path("evals/results/conditional"), help="output directory")
    common_eval_args(c)
    c.set_defaults(func=_conditional, split="dev")
