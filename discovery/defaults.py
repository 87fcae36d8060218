"""Defaults the commands share with the pipelines, in a module cheap to import (no torch)."""

from __future__ import annotations

__all__ = ["DEFAULT_LAYER", "INSTRUCTED_SCALE", "INSTRUCTED_SHOTS"]

# The shipped SAE's layer: chosen by held-out detector AUROC on the non-lexical and the lexical
# categories among the layers compared (README, "Layer"); `train-sae --layer auto` uses a linear
# probe instead.
DEFAULT_LAYER = 15
# Share of the instructed sets' (frame, subject) combinations asked for: what the shipped
# artefacts were built with (the whole grid costs ~5x the generation time on a 2-core machine).
INSTRUCTED_SCALE = 0.2
# Exemplar answers shown before each instructed contrast request (discovery/instructed_seeds.py):
# zero-shot, most "insults" SmolLM2-135M writes are small talk; shown three, far fewer are (README,
# "How often the model does what it is asked").
INSTRUCTED_SHOTS = 3
