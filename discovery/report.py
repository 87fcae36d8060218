"""`find-features`' report as Markdown (features_report.md), from the features file's contents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["format_features_report", "write_features_report"]


def _pr(row: dict[str, Any]) -> str:
    return f"{row['auroc']:.4f} | {row['precision']:.3f} | {row['recall']:.3f} | {row['false_positive_rate']:.3f}"


def format_features_report(data: dict[str, Any]) -> str:
    held, sel = data["heldout"], data["selection"]
    det = data["detector"]
    lines = [
        f"# Toxicity features for {data['model_name']} (SAE `{data['sae']['id']}`)",
        "",
        "Written by `steergate find-features`. Labels: the independent judge "
        f"`{sel['judge']}`: toxic when it scores >= 0.7; benign when it scores <= 0.3 and no word of the "
        "better-profanity list occurs; the rest (the judges disagree, or the classifier is unsure) is left out. "
        f"Selection split: {sel['texts']} texts ({sel['toxic']} toxic); held-out split: {held['texts']} texts "
        f"({held['toxic']} toxic), never used for ranking, fitting or thresholds.",
        "",
        "## Held-out split (threshold 0.5)",
        "",
        "| scorer | AUROC | precision | recall | false-positive rate |",
        "|---|---|---|---|---|",
        f"| **steergate SAE detector** ({len(det['features'])} features, in-model) | {_pr(held['detector'])} |",
    ]
    for name, row in held["peers"].items():
        note = " (the label source: 1.0 by construction)" if row["labels_from_this_judge"] else " (word list)"
        lines.append(f"| judge `{name}`{note} | {_pr(row)} |")
    only = held["classifier_only_labels"]
    lines += [
        "",
        f"With the classifier's labels alone ({only['texts']} texts, {only['toxic']} toxic: the held-out split plus "
        "the word-list texts the classifier calls clean, counted as benign), the detector's AUROC is "
        f"{only['detector_auroc']:.4f}. Most of that gap is the classifier's blind spot: it has never seen most "
        "spellings on the list (it scores \"You are such a fucker\" 0.08), while the detector reads them as toxic.",
    ]
    hard = held["hard_negatives"]
    lines += [
        "",
        "## Benign texts with strong words",
        "",
        f"The {hard['texts']} `hard_negative` corpus texts (benign seed sentences such as \"kill the process\", "
        f"continued by the model): the detector flags {hard['detector_flag_rate']:.1%}, the judge "
        f"{hard['judge_flag_rate']:.1%} (score >= 0.5). The seed sentences alone:",
        "",
        "| text | detector | judge |",
        "|---|---|---|",
    ]
    lines += [f"| {p['text']} | {p['detector']:.3f} | {p['judge']:.3f} |" for p in hard["phrases"]]
    lines += [
        "",
        "## Selected features",
        "",
        "The features an L1-regularised logistic regression over every feature's log max activation keeps "
        "(positive weights), its strength C chosen on a validation part of the selection split: "
        + ", ".join(f"C={t['C']}: {t['features']} features, AUROC {t['validation_auroc']:.4f}"
                    for t in sel["size_search"])
        + ". Per feature, on the selection split: AUROC of its max activation, mean max activation and firing "
        "frequency in each class, its detector weight and its steering-gate threshold.",
        "",
        "| feature | AUROC | mean max act. toxic | benign | fires on toxic | benign | weight | gate threshold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in data["features"]:
        lines.append(f"| {f['index']} | {f['auroc']:.4f} | {f['mean_toxic']:.3f} | {f['mean_benign']:.3f} | "
                     f"{f['freq_toxic']:.2%} | {f['freq_benign']:.2%} | {f['weight']:.4f} | {f['gate_threshold']:.3f} |")
    lines += ["", f"Detector bias {det['bias']:.4f}; score = sigmoid(bias + sum weight * log1p(max activation over "
              "the text's tokens)).",
              f"Run time: {data.get('seconds', 0) / 60:.1f} min.", ""]
    return "\n".join(lines)


def write_features_report(path: Path, data: dict[str, Any]) -> None:
    path.write_text(format_features_report(data))
