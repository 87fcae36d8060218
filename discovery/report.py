"""`find-features`' report as Markdown (features_report.md), from the features file's contents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from discovery.labelled import CATEGORIES, TOXIC_CATEGORIES
from discovery.review import OUTCOMES

__all__ = ["format_features_report", "format_reviewed", "write_features_report"]

_SCORER_NAMES = {"detector": "**steergate SAE detector** (in-model)", "alt-profanity-check": "`alt-profanity-check`",
                 "better-profanity": "`better-profanity` (word list)"}


def _ci(v: list[float]) -> str:
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def _scorer_tables(held: dict[str, Any]) -> list[str]:
    scorers = held["scorers"]
    cats = [c for c in CATEGORIES if c in scorers["detector"]["categories"]]
    lines = ["| scorer | " + " | ".join(f"AUROC {u}" for u in scorers["detector"]["unions"]) + " |",
             "|---|" + "---|" * len(scorers["detector"]["unions"])]
    for name, m in scorers.items():
        lines.append(f"| {_SCORER_NAMES.get(name, name)} | " + " | ".join(_ci(u["auroc"]) for u in m["unions"].values())
                     + " |")
    lines += ["", "Per category (toxic: AUROC against all benign texts, and recall at the scorer's threshold 0.5; "
              "benign: false-positive rate at 0.5):", "",
              "| category | texts | " + " | ".join(_SCORER_NAMES.get(n, n) for n in scorers) + " |",
              "|---|---|" + "---|" * len(scorers)]
    for c in cats:
        n = scorers["detector"]["categories"][c]["texts"]
        if c in TOXIC_CATEGORIES:
            lines.append(f"| {c}: AUROC | {n} | " + " | ".join(_ci(m["categories"][c]["auroc"]) for m in scorers.values())
                         + " |")
            lines.append(f"| {c}: recall | {n} | " + " | ".join(_ci(m["categories"][c]["recall"])
                                                                for m in scorers.values()) + " |")
        else:
            lines.append(f"| {c}: false-positive rate | {n} | "
                         + " | ".join(_ci(m["categories"][c]["false_positive_rate"]) for m in scorers.values()) + " |")
    return lines


def format_reviewed(section: dict[str, Any]) -> list[str]:
    """The held-out numbers on the reader's labels (discovery/review.py), and how far the reader
    agreed with each set's labels."""
    lines = ["## Held-out split, the reader's labels", "",
             "Every held-out line of the lexical corpus, the short lines and the instructed sets was read "
             "by one reader, shuffled and shown without its label, set or any score (discovery/review.py "
             "says what toxic, benign and unclear mean; the verdicts are "
             "discovery/data/review.jsonl). Under the reader's labels a line the reader contradicts "
             "changes label, an unclear one is left out, and the templated lines keep theirs (right by "
             "construction). So on profanity `alt-profanity-check` is no longer scored only against its own "
             "labels, though it still chose which lines are in the set. Lines per set and labelled "
             "category:", "",
             "| set: labelled category | " + " | ".join(OUTCOMES) + " |", "|---|" + "---|" * len(OUTCOMES)]
    lines += [f"| {k} | " + " | ".join(str(row[o]) for o in OUTCOMES) + " |"
              for k, row in section["agreement"].items()]
    lines += ["", f"On the reader's labels: {section['texts']} texts ({section['toxic']} toxic), "
              "threshold 0.5.", "", *_scorer_tables(section)]
    return lines


def _checks(held: dict[str, Any], shift: dict[str, Any] | None) -> list[str]:
    checks = held["checks"]
    lines = ["## Checks", "",
             "**Raw vs chat template** (instructed, short and templated lines, each scored both ways; "
             "AUROC):", "",
             "| view | scorer | " + " | ".join(next(iter(next(iter(checks["views"].values())).values()))) + " |",
             "|---|---|" + "---|" * len(next(iter(next(iter(checks["views"].values())).values())))]
    for view, by_scorer in checks["views"].items():
        for name, unions in by_scorer.items():
            lines.append(f"| {view} | {_SCORER_NAMES.get(name, name)} | "
                         + " | ".join(_ci(u["auroc"]) for u in unions.values()) + " |")
    if "frontier" in checks:  # files written before the frontier existed have none
        cats = list(checks["frontier"][0]["flagged"])
        lines += ["", "**Operating points** (a policy's `detection` threshold; the shipped one is 0.5): "
                  "share of each held-out category the detector flags, recall for the toxic ones, "
                  "false-positive rate for benign and benign-hard:", "",
                  "| threshold | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
        lines += [f"| {row['threshold']} | " + " | ".join(f"{row['flagged'][c]:.3f}" for c in cats) + " |"
                  for row in checks["frontier"]]
    lines += _by_set(checks.get("non_lexical_sets"))  # absent from files written before the templated lines
    lines += ["", "**Short texts** (at most 6 words), share flagged at 0.5"
              + (f"; the detector adds {shift['shift']:g} to a short text's logit (discovery/thresholds.py: "
                 f"candidate {shift['candidate']:g}, chosen on the selection split's short benign texts; "
                 f"cross-frame estimate {100 * (shift['cross_frame_fpr'] or 0):.2f}% against 5%, used only "
                 "within it), shown without it too:" if isinstance(shift, dict) else ":"), "",
              "| scorer | toxic lines | recall | benign lines | false-positive rate | everyday requests | "
              "false-positive rate |", "|---|---|---|---|---|---|---|"]
    for name, row in checks["short"].items():
        req = row.get("requests", {"texts": 0, "flagged": 0.0})
        lines.append(f"| {_SCORER_NAMES.get(name, name)} | {row['toxic']['texts']} | {row['toxic']['flagged']:.3f} | "
                     f"{row['benign']['texts']} | {row['benign']['flagged']:.3f} | {req['texts']} | "
                     f"{req['flagged']:.3f} |")
    fw = checks["first_word"]
    lines += ["", "**First token is the toxic word.** Raw, a text's first token is the attention sink and is never "
              "scored (neither in training nor in the engine); in the chat template the same word comes after the "
              "template's tokens and is scored. Detector recall at 0.5:", "",
              "| texts | raw | chat template |", "|---|---|---|",
              f"| held-out toxic lines whose first word is on the profanity list ({fw['lines']['raw']['texts']}) | "
              f"{fw['lines']['raw']['flagged']:.3f} | {fw['lines']['chat']['flagged']:.3f} |",
              f"| a held-out list word the judge knows, alone (\"Word!\", {fw['single_words']['texts']}) | "
              f"{fw['single_words']['raw']:.3f} | {fw['single_words']['chat']:.3f} |",
              "", "Seed sentences with strong words in benign senses (lexical corpus frames; detector score):", "",
              "| text | detector |", "|---|---|"]
    lines += [f"| {p['text']} | {p['detector']:.3f} |" for p in checks["seed_phrases"]]
    return lines


def _by_set(by_scorer: dict[str, Any] | None) -> list[str]:
    if not by_scorer:
        return []
    cats = [c for c in TOXIC_CATEGORIES if c != "profanity"]
    lines = ["", "**Beyond the lexicon, per set**: the non-lexical categories of each set on their "
             "own (toxic lines against the same set's benign lines). The instructed lines' labels "
             "are noisy (the model is often off-task; read the samples under Labelled data); the "
             "templated lines' are right by construction, and no kept templated line holds a word of "
             "the profanity list (discovery/templated.py). Recall and false-positive rate at 0.5:", "",
             "| set | scorer | AUROC non-lexical | " + " | ".join(f"recall {c}" for c in cats)
             + " | false-positive rate, the set's benign lines |", "|---|---|---|" + "---|" * (len(cats) + 1)]
    for name, sets in by_scorer.items():
        for set_name, m in sets.items():
            recall = [_ci(m["categories"][c]["recall"]) if c in m["categories"] else "—" for c in cats]
            fpr = m["categories"].get("benign", {}).get("false_positive_rate")
            lines.append(f"| {set_name} ({m['auroc']['texts']} toxic) | {_SCORER_NAMES.get(name, name)} | "
                         f"{_ci(m['auroc']['auroc'])} | " + " | ".join(recall)
                         + f" | {_ci(fpr) if fpr else '—'} |")
    return lines


def _data(data: dict[str, Any]) -> list[str]:
    d = data["data"]
    lines = ["## Labelled data", "",
             "Texts per category and split (an instructed, short or templated line counts twice: raw and in "
             "the chat template):", "",
             "| category | selection | held-out |", "|---|---|---|"]
    lines += [f"| {c} | {n['selection']} | {n['heldout']} |" for c, n in d["texts"].items()]
    rules = [r for r in next(iter(d["filter"].values())) if r not in ("asked", "kept")]
    lines += ["", "Instructed sets: what the filter kept, per kind (discovery/instructed.py documents each rule):", "",
              "| kind | asked | kept (acceptance) | " + " | ".join(rules) + " |", "|---|---|---|" + "---|" * len(rules)]
    for kind, row in d["filter"].items():
        rate = row["kept"] / row["asked"] if row["asked"] else 0.0
        lines.append(f"| {kind} | {row['asked']} | {row['kept']} ({rate:.0%}) | " + " | ".join(str(row[r]) for r in rules)
                     + " |")
    lines += ["", "Samples (seeded), so a reader can judge the labels: kept lines, then dropped ones with the rule "
              "that dropped them.", ""]
    for kind, s in d["samples"].items():
        lines.append(f"- **{kind}**: " + " / ".join(f"\u201c{t}\u201d" for t in s["kept"]))
        if s["dropped"]:
            lines.append("  - dropped: " + " / ".join(f"({r}) \u201c{t.strip()[:160]}\u201d" for r, t in s["dropped"]))
    if d.get("templated"):  # files written before the templated lines have none
        lines += ["", "Templated lines (discovery/templated.py): per kind, lines made, kept, dropped "
                  "because the profanity word list hits them, the share of kept lines "
                  "`alt-profanity-check` calls toxic (>= 0.5), and a seeded sample:", "",
                  "| kind | category | lines | kept | dropped (word list) | judge flags | sample |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {k} | {r['category']} | {r['lines']} | {r['kept']} | {r['dropped_wordlist']} | "
                  f"{r['judge_flags']:.0%} | " + " / ".join(f"\u201c{t}\u201d" for t in r["samples"]) + " |"
                  for k, r in d["templated"].items()]
    return lines


def _readers_labels_clause(counts: dict[str, int] | None) -> str:
    """What the fit took from the review file (discovery/review.py), for the selection paragraph."""
    if counts is None:  # --no-review-selection
        return ""
    # "read" is counted since 2026-11-28 (older files: the clause below, as they were written).
    if counts.get("read") == 0:  # e.g. another model's split, whose lines the review never read
        return (". Fitted on the sets' own labels: the review file has read none of this selection split's "
                "lines (discovery/review.py)")
    return (". Fitted on the reader's labels where the review file has read a selection line "
            f"(discovery/review.py; {counts['relabelled']} selection texts changed label, "
            f"{counts['left_out']} were left out)")


def format_features_report(data: dict[str, Any]) -> str:
    held, sel = data["heldout"], data["selection"]
    det = data["detector"]
    lines = [
        f"# Toxicity features for {data['model_name']} (SAE `{data['sae']['id']}`)",
        "",
        "Written by `steergate find-features`. Labels: the lexical corpus and the short lines (templated "
        "around a word, discovery/short_lines.py) are labelled by the judge `alt-profanity-check` (toxic at "
        ">= 0.7: category profanity; benign at <= 0.3 with no word of the "
        "better-profanity list); the instructed sets are labelled by the instruction the model was given, after "
        "the filter below; the templated lines (discovery/templated.py: neutral frames filled with a hostile "
        "or a benign phrase, no word of the profanity list) by their template. Frames and subjects are split "
        "before generation, so no held-out text shares a frame or "
        f"a subject with a selection text. Selection split: {sel['texts']} texts ({sel['toxic']} toxic); held-out "
        f"split: {held['texts']} texts ({held['toxic']} toxic), never used for ranking, fitting or thresholds. "
        f"Intervals: {held['intervals']}. The judges score the readable text (the line, not the chat template); "
        "`alt-profanity-check` made the lexical labels, so on the profanity category it is scored against its own "
        "labels.",
        "",
        f"## Held-out split ({len(det['features'])} detector features, threshold 0.5)",
        "",
        *_scorer_tables(held),
        "",
        *(format_reviewed(held["reviewed"]) + [""] if "reviewed" in held else []),
        *_checks(held, sel.get("short_shift")),
        "",
        *_data(data),
        "",
        "## Selected features",
        "",
        "The features an L1-regularised logistic regression over every feature's log max activation keeps "
        + ("(any nonzero weight: benign evidence counts against), " if sel.get("weights") == "signed"
           else "(positive weights), ")
        + "its strength C chosen on a validation part of the selection split (whole frames "
        "held apart): "
        + ", ".join(f"C={t['C']}: {t['features']} features, AUROC {t['validation_auroc']:.4f}"
                    + (" (chosen)" if t.get("chosen") else "") for t in sel["size_search"])
        + _readers_labels_clause(sel.get("readers_labels"))
        + f". Operating point: the lowest score that flags at most {sel['fpr_budget']:.0%} of the selection split's "
        f"benign and benign-hard texts as scored {sel.get('operating_point_scores', 'in-sample')} "
        f"({sel['operating_point_before_folding']:.4f}, folded into the bias). Per "
        "feature, on the selection split: AUROC of its max activation, mean max activation and firing frequency in "
        "each class, its detector weight and its steering-gate threshold.",
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
