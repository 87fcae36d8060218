"""Score a held-out file with any features file's detector, per category, beside the numbers it ships with.

For comparing detectors on the same texts: another layer's SAE, or the features file of an earlier
revision (`git show REV:middleware/data/smollm2-135m-instruct/features.json > old.json`; a relative
SAE path resolves against the file's directory, so pass `--sae` when the file moved).

    .venv/bin/python -m discovery.compare FEATURES [--heldout FILE] [--sae DIR]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from discovery.activations import load_lm
from discovery.evaluation import frontier, non_lexical_by_set, scorer_metrics, subset_recall
from discovery.scoring import score_texts
from middleware.assets import EMBEDDED_HELDOUT
from middleware.detection import FeatureSet, ToxicityDetector
from middleware.embedded import embedded_model_dir
from middleware.sae import load_sae

__all__ = ["main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", type=Path)
    parser.add_argument("--heldout", type=Path, default=EMBEDDED_HELDOUT, help="held-out file (default: the shipped one)")
    parser.add_argument("--sae", type=Path, help="SAE directory (default: the one the features file names)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fs = FeatureSet.load(args.features)
    detector = ToxicityDetector(load_sae(args.sae or fs.sae_path, dtype="float32"), fs)
    records = [json.loads(line) for line in args.heldout.read_text().splitlines()]
    model, tokenizer = load_lm(embedded_model_dir())
    scores = score_texts(model, tokenizer, detector, [r["text"] for r in records], progress="scoring",
                         words=[len(r.get("visible", r["text"]).split()) for r in records])
    metrics = scorer_metrics(scores, records, fs.threshold)
    # Per labelled set (lexical corpus, instructed, short and templated lines) and per kind of short
    # text (toxic lines, benign lines, everyday requests): recall and false-positive rate.
    sets, labels = np.array([r.get("set", "") for r in records]), np.array([r["label"] for r in records])
    kinds = np.array([r.get("kind", "") for r in records])
    by_set = {name: {"toxic": subset_recall(scores, fs.threshold, (sets == name) & (labels == 1)),
                     "benign": subset_recall(scores, fs.threshold, (sets == name) & (labels == 0))}
              for name in sorted(set(sets))}
    by_short_kind = {k: subset_recall(scores, fs.threshold, (sets == "short") & (kinds == k))
                     for k in sorted(set(kinds[sets == "short"]))}
    print(json.dumps({"features": str(args.features), "detector_features": len(fs.features),
                      "heldout": str(args.heldout), "short_shift": fs.short_shift, **metrics, "sets": by_set,
                      "short_kinds": by_short_kind,
                      "non_lexical_sets": non_lexical_by_set(scores, records, fs.threshold),
                      "frontier": frontier(scores, np.array([r["category"] for r in records]))},
                     indent=2))


if __name__ == "__main__":
    main()
