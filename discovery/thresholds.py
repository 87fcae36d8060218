"""The detector's operating points, chosen on the selection split: its threshold, and the shift
that gives short texts a lower one.

Threshold: the lowest score at which at most FPR_BUDGET of the selection split's benign texts,
and of its benign-hard texts, score at or above it (below the 5% target, for the noise of a
selection split; `find-features` passes out-of-fold scores, discovery/features.py) and folds it
into the bias, so 0.5 is the shipped threshold.

Short-text shift: the max over tokens has fewer chances to climb on a line of a few words than on
a paragraph, so one threshold for every length puts short toxic lines low as a class. The shift
is the logit distance from the threshold down to the operating point of the short benign texts
alone (at most SHORT_WORDS words, same budget), never negative; the detector adds it to a short
text's logit (middleware/detection.py). Short texts are few frames with many fillers, and a
detector can score a frame's benign texts far apart from another's, so a threshold that holds on
the frames it was chosen on may not hold on new ones. The shift is therefore checked across
frames first: for each selection frame, the threshold chosen without it must keep its benign flag
rate low; where that rate averages above FPR_TARGET, the detector gets no shift.
For a features file written before the shift existed (the shipped one), this module's command
chooses it by the same rule from the short and templated lines' selection split (the default
split: seed 0, 40% held out; no generation needed), scored by the file's detector as it is:
`find-features` reads out-of-fold scores instead, which a finished file cannot give, so for a
detector fitted on this selection split the result is optimistic (the shipped one predates it):

    .venv/bin/python -m discovery.thresholds FEATURES [--write [--candidate]]

`--candidate` writes the candidate shift even where the check rejects it, into a copy, say, so
that `python -m discovery.compare` can show on a held-out file what the check kept out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["FPR_BUDGET", "FPR_TARGET", "SHORT_WORDS", "ShortShift", "is_short", "operating_point",
           "short_shift"]

FPR_BUDGET = 0.03
FPR_TARGET = 0.05  # the false-positive target, which the cross-frame check holds the shift to
SHORT_WORDS = 6  # "short texts": at most this many words


def is_short(visible: str) -> bool:
    return 0 < len(visible.split()) <= SHORT_WORDS


def operating_point(scores: np.ndarray, categories: np.ndarray) -> float:
    """The lowest threshold keeping each benign category's flag rate within FPR_BUDGET."""
    t = 0.0
    for c in ("benign", "benign-hard"):
        neg = np.sort(scores[categories == c])
        if len(neg):
            allowed = math.floor(len(neg) * FPR_BUDGET)  # texts that may score at or above t
            t = max(t, float(np.nextafter(neg[len(neg) - allowed - 1], 1.0)) if allowed < len(neg) else 0.0)
    return min(max(t, 1e-6), 1 - 1e-6)


@dataclass(frozen=True)
class ShortShift:
    shift: float  # logits added to a short text's score (0.0: none)
    candidate: float  # the shift the short benign texts' operating point gives, before the check
    cross_frame_fpr: float | None  # mean benign flag rate of a frame left out of the choice


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def short_shift(scores: np.ndarray, categories: np.ndarray, short: np.ndarray, frames: np.ndarray,
                threshold: float = 0.5) -> ShortShift:
    """The logit shift that moves `threshold` down to the short benign texts' own operating point
    (scores: selection split, as the detector scores them without a shift), if it holds across
    frames (module docstring). No shift without short benign texts, or where they already score
    higher than long ones."""
    benign = short & np.isin(categories, ("benign", "benign-hard"))
    if not benign.any():
        return ShortShift(0.0, 0.0, None)
    candidate = max(0.0, _logit(threshold) - _logit(operating_point(scores[short], categories[short])))
    rates = []
    for f in sorted(set(frames[benign])):
        rest = short & (frames != f)
        if (rest & benign).any():
            t = operating_point(scores[rest], categories[rest])
            rates.append(float((scores[benign & (frames == f)] >= t).mean()))
    cross = float(np.mean(rates)) if rates else None
    holds = cross is not None and cross <= FPR_TARGET
    candidate = math.floor(candidate * 1e4) / 1e4  # 4 decimals, rounded down: never past the budget
    return ShortShift(candidate if holds else 0.0, candidate, cross)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", type=Path)
    parser.add_argument("--write", action="store_true",
                        help="write short_words and short_shift into the file")
    parser.add_argument("--candidate", action="store_true",
                        help="with --write: the candidate shift, even where the cross-frame check rejects it")
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
    from discovery.templated import build_templated, load_templated
    from middleware.embedded import embedded_model_dir
    from middleware.settings import cache_dir

    torch.set_num_threads(args.threads)
    model_dir = embedded_model_dir()
    work = cache_dir() / "discovery" / "smollm2-135m-instruct"
    short_lines = load_short(build_short(work / "short.jsonl", CorpusSpec()))
    templated = load_templated(build_templated(work / "templated.jsonl", CorpusSpec()))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # The selection split's short texts, as find-features sees them (the other sets have none).
    texts = [t for t in labelled_texts([], [], tokenizer, short=short_lines, templated=templated)
             if t["split"] != HELDOUT and is_short(t["visible"])]
    detector = load_detector(str(args.features))
    model, tokenizer = load_lm(model_dir)
    scores = score_texts(model, tokenizer, detector, [t["text"] for t in texts], progress="short texts")
    categories = np.array([t["category"] for t in texts])
    frames = np.array([t["frame"] for t in texts])
    short = np.ones(len(texts), dtype=bool)
    choice = short_shift(scores, categories, short, frames, detector.features.threshold)
    print(json.dumps({"features": str(args.features), "selection_short_texts": len(texts),
                      "short_words": SHORT_WORDS, **asdict(choice)}, indent=2))
    if args.write:
        raw = json.loads(args.features.read_text())
        raw["detector"] |= {"short_words": SHORT_WORDS,
                            "short_shift": choice.candidate if args.candidate else choice.shift}
        args.features.write_text(json.dumps(raw, indent=2) + "\n")

if __name__ == "__main__":
    main()
