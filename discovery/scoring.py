"""Score texts offline with a features file's detector: what the engine computes, on transformers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from discovery.activations import collect
from middleware.detection import FeatureSet, ToxicityDetector
from middleware.sae import load_sae

__all__ = ["load_detector", "score_texts"]


def load_detector(features_path: str) -> ToxicityDetector:
    fs = FeatureSet.load(features_path)
    return ToxicityDetector(load_sae(fs.sae_path, dtype="float32"), fs)


def score_texts(model: Any, tokenizer: Any, detector: ToxicityDetector, texts: Sequence[str],
                progress: str | None = None, words: Sequence[int] | None = None) -> np.ndarray:
    """(len(texts),) toxicity of each text (the detector's score of its counted tokens; `words`:
    each text's length as the gateway counts it, for the short-text shift)."""
    layer = detector.sae.cfg.hook_layer
    if layer is None:
        raise ValueError("the SAE's cfg.json names no layer (hook_name)")
    out = np.zeros(len(texts))
    for item in collect(model, tokenizer, texts, [layer], progress=progress):
        out[item.index] = detector.text_score(item.acts[layer], None if words is None else words[item.index])
    return out
