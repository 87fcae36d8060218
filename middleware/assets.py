"""Where the shipped artefacts of the embedded model live (package data, see pyproject.toml).

middleware/data/smollm2-135m-instruct/
    sae/                   cfg.json + sae_weights.safetensors (SAELens format, fp16) + README.md (model card)
    sae/train_report.json  what `steergate train-sae` measured
    features.json          toxicity features + detector (`steergate find-features`)
    features_report.md     the held-out report, side by side with the judges
    heldout.jsonl          the held-out split (texts, judge scores, labels) the report was computed on
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["EMBEDDED_ASSETS", "EMBEDDED_FEATURES", "EMBEDDED_HELDOUT", "EMBEDDED_SAE"]

EMBEDDED_ASSETS = Path(__file__).parent / "data" / "smollm2-135m-instruct"
EMBEDDED_SAE = EMBEDDED_ASSETS / "sae"
EMBEDDED_FEATURES = EMBEDDED_ASSETS / "features.json"
EMBEDDED_HELDOUT = EMBEDDED_ASSETS / "heldout.jsonl"
