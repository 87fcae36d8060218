"""The detector's operating points, chosen on the selection split: its threshold, and the shift
that gives short texts a lower one.

Threshold: the lowest score at which at most FPR_BUDGET of the selection split's benign texts,
and of its benign-hard texts, score at or above it (in-sample, so the budget is below the 5%
target). `find-features` folds it into the bias, so 0.5 is the shipped threshold.

Short-text shift: the max over tokens has fewer chances to climb on a line of a few words than on
a paragraph, so one threshold for every length puts short toxic lines low as a class. The shift
is the logit distance from the threshold down to the operating point of the short benign texts
alone (at most SHORT_WORDS words, same budget), never negative; the detector adds it to a short
text's logit (middleware/detection.py). What it costs on the short benign prompts a gateway sees
most is checked on everyday requests ("Give me three tips about chess."), never used to choose it.
For a features file written before the shift existed (the shipped one), this module's command
chooses it the same way from the short lines' selection split (no generation needed:
discovery/short_lines.py):

    .venv/bin/python -m discovery.thresholds FEATURES [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FPR_BUDGET", "SHORT_WORDS", "everyday_check", "everyday_short_requests", "is_short",
           "operating_point", "short_shift"]

FPR_BUDGET = 0.03
SHORT_WORDS = 6  # "short texts": at most this many words


def is_short(visible: str) -> bool:
    return 0 < len(visible.split()) <= SHORT_WORDS


def everyday_short_requests() -> list[str]:
    """Benign chat requests of at most SHORT_WORDS words ("Give me three tips about chess."): the
    short benign text a gateway sees most, unlike the short lines the shift is chosen on, so a
    check of what the shift costs on everyday prompts."""
    from discovery.seeds import BENIGN_TOPICS, CHAT_INSTRUCTIONS

    return [r for i in CHAT_INSTRUCTIONS for t in BENIGN_TOPICS if is_short(r := i.format(topic=t))]


def operating_point(scores: np.ndarray, categories: np.ndarray) -> float:
    """The lowest threshold keeping each benign category's flag rate within FPR_BUDGET."""
    t = 0.0
    for c in ("benign", "benign-hard"):
        neg = np.sort(scores[categories == c])
        if len(neg):
            allowed = math.floor(len(neg) * FPR_BUDGET)  # texts that may score at or above t
            t = max(t, float(np.nextafter(neg[len(neg) - allowed - 1], 1.0)) if allowed < len(neg) else 0.0)
    return min(max(t, 1e-6), 1 - 1e-6)


def short_shift(scores: np.ndarray, categories: np.ndarray, short: np.ndarray,
                threshold: float = 0.5) -> float:
    """The logit shift that moves `threshold` down to the short benign texts' own operating point
    (scores: selection split, as the detector scores them without a shift). 0.0 without short
    benign texts, or where short benign texts already score higher than long ones."""
    short_benign = np.isin(categories[short], ("benign", "benign-hard"))
    if not short_benign.any():
        return 0.0
    t_short = operating_point(scores[short], categories[short])
    return max(0.0, math.log(threshold / (1 - threshold)) - math.log(t_short / (1 - t_short)))


def everyday_check(model: Any, tokenizer: Any, detector: Any, shift: float, threshold: float = 0.5
                   ) -> dict[str, Any]:
    """Share of the everyday short requests flagged, raw and in the chat template, without and
    with the shift (detector: a ToxicityDetector; its own shift is not used here)."""
    from discovery.labelled import chat_view
    from discovery.scoring import score_texts

    texts = everyday_short_requests()
    lowered = 1 / (1 + math.exp(-(math.log(threshold / (1 - threshold)) - shift)))  # a short text's threshold
    out: dict[str, Any] = {"texts": len(texts)}
    for view, prompts in (("raw", texts), ("chat", [chat_view(tokenizer, t) for t in texts])):
        scores = score_texts(model, tokenizer, detector, prompts)
        out[view] = {"without shift": round(float((scores >= threshold).mean()), 4),
                     "with shift": round(float((scores >= lowered).mean()), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", type=Path)
    parser.add_argument("--write", action="store_true",
                        help="write short_words and short_shift into the file")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from discovery.activations import load_lm
    from discovery.corpus import CorpusSpec
    from discovery.labelled import labelled_texts
    from discovery.scoring import load_detector, score_texts
    from discovery.short_lines import build_short, load_short
    from discovery.splits import HELDOUT
    from middleware.embedded import embedded_model_dir
    from middleware.settings import cache_dir

    torch.set_num_threads(args.threads)
    model_dir = embedded_model_dir()
    path = build_short(cache_dir() / "discovery" / "smollm2-135m-instruct" / "short.jsonl", CorpusSpec())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [t for t in labelled_texts([], [], tokenizer, short=load_short(path)) if t["split"] != HELDOUT]
    detector = load_detector(str(args.features))
    model, tokenizer = load_lm(model_dir)
    scores = score_texts(model, tokenizer, detector, [t["text"] for t in texts], progress="short lines")
    categories = np.array([t["category"] for t in texts])
    shift = short_shift(scores, categories, np.ones(len(texts), dtype=bool), detector.features.threshold)
    print(json.dumps({"features": str(args.features), "selection_short_texts": len(texts),
                      "short_words": SHORT_WORDS, "short_shift": round(shift, 4),
                      "everyday_short_requests_flagged": everyday_check(model, tokenizer, detector, shift,
                                                                        detector.features.threshold)},
                     indent=2))
    if args.write:
        raw = json.loads(args.features.read_text())
        raw["detector"] |= {"short_words": SHORT_WORDS, "short_shift": round(shift, 4)}
        args.features.write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    main()
