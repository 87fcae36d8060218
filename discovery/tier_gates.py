"""`steergate tier-gates`: how often each kind of steering gate opens on toxic and on benign text, offline.

A tier steers only where its gate opens (middleware/tier_recipes.py): a feature gate where any of
its k features fires above a multiple of that feature's gate threshold (`gate`), a detector gate
where the detector's own per-token logit crosses a level (`detector_gate`). Which to try in a
calibration round is cheaper to judge here than through generations: this reads the labelled
sets' token activations (cached by `find-features`) for a features file and reports, per gate,

- the share of *selection* tokens it opens on, benign vs toxic (labels are per text, so "toxic
  tokens" are every token of a toxic text: a good gate opens on a minority of them);
- the share of *held-out* texts in which it opens at least once, per category: benign,
  benign-hard, toxic. A tier whose gate opens somewhere in a benign answer changes that answer.

Texts, tokens and the attention-sink rule are find-features' own (discovery/activations.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from discovery.labelled import DataSpec
from discovery.labelled_activations import load_labelled_activations
from middleware.detection import FeatureSet
from middleware.tier_recipes import steerable

__all__ = ["GateRow", "format_gates", "gate_rows"]

TEXT_GROUPS = ("benign", "benign-hard", "toxic")


@dataclass(frozen=True)
class GateRow:
    gate: str  # e.g. "top 20 features, 2x" or "detector logit > -6"
    tokens_benign: float  # share of benign selection tokens where it opens
    tokens_toxic: float
    texts: dict[str, float]  # held-out group -> share of texts where it opens at least once


def gate_rows(per_text: list[np.ndarray], labels: np.ndarray, categories: np.ndarray, held: np.ndarray,
              fs: FeatureSet, top_k: int, multiples: Sequence[float], levels: Sequence[float]
              ) -> list[GateRow]:
    """per_text[i]: (T_i, m) activations of the features file's m features on text i's scored tokens."""
    order = sorted(steerable(fs.weights), key=lambda i: -fs.weights[i])[:top_k]
    thresholds = np.array([fs.gate_thresholds[i] for i in order])  # (k,)
    weights = np.array(fs.weights)  # (m,)
    groups = {"benign": held & (categories == "benign"), "benign-hard": held & (categories == "benign-hard"),
              "toxic": held & (labels == 1)}
    sel = ~held

    def row(name: str, opens: list[np.ndarray]) -> GateRow:  # opens[i]: (T_i,) bool
        def token_share(mask: np.ndarray) -> float:
            picked = [opens[i] for i in np.where(mask)[0]]
            return float(np.concatenate(picked).mean()) if picked else float("nan")

        texts = {g: float(np.mean([opens[i].any() for i in np.where(m)[0]])) if m.any() else float("nan")
                 for g, m in groups.items()}
        return GateRow(name, token_share(sel & (labels == 0)), token_share(sel & (labels == 1)), texts)

    rows = [row(f"top {len(order)} features, {x:g}x",
                [(a[:, order] > x * thresholds).any(axis=1) for a in per_text]) for x in multiples]
    logits = [fs.bias + np.log1p(np.maximum(a, 0)) @ weights for a in per_text]  # (T_i,) each
    rows += [row(f"detector logit > {level:g}", [z > level for z in logits]) for level in levels]
    return rows


def format_gates(rows: Sequence[GateRow]) -> str:
    lines = ["| gate | selection tokens open: benign | toxic | held-out texts opened: benign | benign-hard "
             "| toxic |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.gate} | {r.tokens_benign:.1%} | {r.tokens_toxic:.1%} | "
                     + " | ".join(f"{r.texts[g]:.0%}" for g in TEXT_GROUPS) + " |")
    return "\n".join(lines)


def run_gates(model_dir: Path, work_dir: Path, data: DataSpec, features: Path, top_k: int,
              multiples: Sequence[float], levels: Sequence[float]) -> dict[str, Any]:
    fs = FeatureSet.load(features)
    la = load_labelled_activations(model_dir, work_dir, data, fs.sae_path)
    index = torch.tensor(fs.features)
    per_text = [la.encode(i)[:, index].numpy() for i in range(len(la.texts))]  # (T_i, m) each
    rows = gate_rows(per_text, la.labels, la.categories, la.held, fs, top_k, multiples, levels)
    return {"features": str(features), "rows": rows}
