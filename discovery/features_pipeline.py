"""`steergate find-features`: labelled sets + SAE -> toxicity features, detector, held-out report.

The split is decided before generation, by frame and subject (discovery/splits.py): the
selection split ranks, chooses, fits and sets the threshold; the held-out split is scored once,
at the end, for the report. The held-out split ships (heldout.jsonl) so a test can recompute
the reported numbers.

Operating points (discovery/thresholds.py): the threshold, where at most FPR_BUDGET of the
selection split's benign and of its benign-hard texts score, folded into the bias so that 0.5 is
the shipped threshold; and the short-text shift, which lowers it for texts of at most SHORT_WORDS
words to where the selection split's short benign texts score. Both are read from out-of-fold
scores (discovery/features.py: each selection text scored by a detector fitted without its
frame), not from the detector's in-sample scores.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from discovery import seeds
from discovery.evaluation import frontier, non_lexical_by_set, scorer_metrics, subset_recall
from discovery.features import feature_stats, fit_detector, log_max, out_of_fold_scores, youden_threshold
from discovery.instructed import FILTER_RULES, KINDS
from discovery.judges import JUDGES, get_judge
from discovery.labelled import VIEWS, DataSpec, chat_view
from discovery.labelled_activations import LabelledActivations, load_labelled_activations
from discovery.report import write_features_report
from discovery.review import REVIEW_FILE, load_review, reviewed_section, selection_under_review
from discovery.scoring import score_texts
from discovery.templated import load_templated, templated_summary
from discovery.thresholds import FPR_BUDGET, SHORT_WORDS, is_short, operating_point, short_shift
from discovery.wordlist import profanity_words
from middleware.detection import FeatureSet, ToxicityDetector

__all__ = ["UNSHIFTED", "FindFeaturesJob", "filter_table", "run_find_features"]

logger = logging.getLogger(__name__)

UNSHIFTED = "detector without the short-text shift"


@dataclass(frozen=True)
class FindFeaturesJob:
    model_dir: Path
    work_dir: Path
    sae_dir: Path
    out: Path  # features.json; heldout.jsonl and features_report.md go beside it
    model_name: str = "smollm2-135m-instruct"
    data: DataSpec = field(default_factory=DataSpec)
    seed: int = 0
    n_boot: int = 1000
    signed: bool = True  # detector weights of both signs (discovery/features.py); False: non-negative
    review: Path | None = REVIEW_FILE  # a reader's verdicts on lines of the sets (discovery/review.py)
    review_selection: bool = True  # fit on the reader's labels where the review has read a selection line


def filter_table(instructed: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per kind: outputs asked for, kept, and dropped by each filter rule."""
    table: dict[str, dict[str, int]] = {}
    for r in instructed:
        row = table.setdefault(r["kind"], {"asked": 0, "kept": 0, **{rule: 0 for rule in FILTER_RULES}})
        row["asked"] += 1
        row["kept" if r["dropped"] is None else r["dropped"]] += 1
    return table


def _samples(instructed: list[dict[str, Any]], seed: int, per_kind: int = 3) -> dict[str, Any]:
    """A seeded sample of kept and of dropped lines per kind, for a reader to judge the labels."""
    rng = random.Random(seed)
    out: dict[str, Any] = {}
    for kind in KINDS:
        kept = [r["line"] for r in instructed if r["kind"] == kind and r["dropped"] is None]
        dropped = [(r["dropped"], r["line"] or r["completion"]) for r in instructed
                   if r["kind"] == kind and r["dropped"] is not None]
        out[kind] = {"kept": rng.sample(kept, min(per_kind, len(kept))),
                     "dropped": rng.sample(dropped, min(2, len(dropped)))}
    return out


def _first_word_checks(model: Any, tokenizer: Any, detector: ToxicityDetector, held: list[dict[str, Any]],
                       scores: np.ndarray, judge: str) -> dict[str, Any]:
    """Texts whose first token is the toxic word, raw vs in the chat template.

    Raw, a text's first token is the attention sink and is never scored; inside the chat template
    the same word sits after the template's tokens and is. (1) held-out toxic lines whose first
    word is on the profanity list, raw vs chat views; (2) each held-out list word the judge
    knows, alone ("Word!"), raw vs chat.
    """
    words = {w.lower() for w in profanity_words()}
    first = np.array([t["set"] in ("instructed", "short") and t["label"] == 1 and
                      (t["visible"].split() or [""])[0].strip(",.!?:;\"'").lower() in words for t in held])
    views = np.array([t["view"] for t in held])
    out: dict[str, Any] = {"lines": {v: subset_recall(scores, 0.5, first & (views == v)) for v in VIEWS}}
    held_words = sorted({t["subject"] for t in held if t["set"] == "lexical" and t["kind"].startswith("wordlist")})
    known = [w for w, s in zip(held_words, get_judge(judge).score(held_words), strict=True) if s >= 0.5]
    alone = [w.capitalize() + "!" for w in known]
    raw = score_texts(model, tokenizer, detector, alone)
    chat = score_texts(model, tokenizer, detector, [chat_view(tokenizer, t) for t in alone])
    out["single_words"] = {"texts": len(alone), "raw": round(float((raw >= 0.5).mean()), 4) if alone else 0.0,
                           "chat": round(float((chat >= 0.5).mean()), 4) if alone else 0.0}
    return out


def run_find_features(job: FindFeaturesJob) -> dict[str, Any]:
    started = time.monotonic()
    la = load_labelled_activations(job.model_dir, job.work_dir, job.data, job.sae_dir)
    review = load_review(job.review) if job.review is not None and job.review.exists() else None
    reviewed_selection: dict[str, int] | None = None
    if job.review_selection:
        if review is None:
            raise ValueError(f"fitting on the reader's labels needs a review file ({job.review} not found); "
                             "--no-review-selection fits on the sets' own labels")
        keep, records, reviewed_selection = selection_under_review(la.texts, review)
        la = la.subset(keep, records)
    feature_set, selection = _select(job, la)
    if reviewed_selection is not None:
        selection["selection"]["readers_labels"] = reviewed_selection
    held_texts, det_scores, judge_scores, heldout = _score_heldout(job, la, feature_set, review)
    sel, categories = ~la.held, la.categories
    feature_set.extra = {
        **selection,
        "data": {"spec": asdict(job.data), "filter": filter_table(la.instructed),
                 "samples": _samples(la.instructed, job.seed),
                 "templated": templated_summary(load_templated(la.paths[3]), job.seed),
                 "texts": {c: {"selection": int((sel & (categories == c)).sum()),
                               "heldout": int((la.held & (categories == c)).sum())}
                           for c in sorted(set(categories))}},
        "heldout": heldout,
        "seconds": round(time.monotonic() - started, 1),
    }
    job.out.parent.mkdir(parents=True, exist_ok=True)
    sae_rel = Path(job.sae_dir).resolve()
    try:
        sae_ref = str(sae_rel.relative_to(job.out.parent.resolve()))
    except ValueError:
        sae_ref = str(sae_rel)
    data = feature_set.to_dict(sae_ref)
    job.out.write_text(json.dumps(data, indent=2) + "\n")
    with (job.out.parent / "heldout.jsonl").open("w") as f:
        for t, d, j in zip(held_texts, det_scores, judge_scores["alt-profanity-check"], strict=True):
            f.write(json.dumps({k: t[k] for k in ("uid", "group", "set", "kind", "category", "label", "view", "text",
                                                  "visible")}
                               | {"judge": round(float(j), 6), "detector": round(float(d), 6)},
                               ensure_ascii=False) + "\n")
    write_features_report(job.out.parent / "features_report.md", data)
    return data


def _select(job: FindFeaturesJob, la: LabelledActivations) -> tuple[FeatureSet, dict[str, Any]]:
    """On the selection split only: features, detector, operating points; and the report's
    per-feature and selection sections."""
    texts, labels, categories = la.texts, la.labels, la.categories
    sel = ~la.held
    # Per text: each feature's strongest activation over the text's tokens (log1p).
    x = np.concatenate([log_max([la.encode(i)]) for i in range(len(texts))])  # (N, d_sae)
    frames = [f"{t['set']}:{t['frame']}" for t in texts]
    sel_frames = [f for f, s in zip(frames, sel, strict=True) if s]
    det, tried = fit_detector(x[sel], labels[sel], seed=job.seed, groups=sel_frames, signed=job.signed)
    chosen = det.features
    chosen_c = next(t["C"] for t in tried if t["chosen"])
    # The operating points are read from scores of frames each detector was not fitted on.
    sel_scores = out_of_fold_scores(x[sel], labels[sel], sel_frames, det, chosen_c, seed=job.seed,
                                    signed=job.signed)
    t_star = operating_point(sel_scores, categories[sel])
    # Fold the operating point into the bias, so that score 0.5 is the threshold chosen on selection.
    bias = det.bias - math.log(t_star / (1 - t_star))
    short = np.array([is_short(t["visible"]) for t in texts])
    shift = short_shift(sel_scores, categories[sel], short[sel], np.array(frames)[sel], threshold=t_star)
    raw_max = np.expm1(x)  # (N, d_sae) max activations
    stats = feature_stats(raw_max[sel][:, chosen], labels[sel])  # one per chosen feature, in order
    gate = [youden_threshold(raw_max[sel][:, f], labels[sel]) for f in chosen]
    toxic_sel = raw_max[sel & (labels == 1)]
    typical = [float(toxic_sel[:, f][toxic_sel[:, f] > 0].mean()) if (toxic_sel[:, f] > 0).any() else 1.0
               for f in chosen]
    sae = la.sae
    feature_set = FeatureSet(
        model_name=job.model_name, sae_path=str(job.sae_dir),
        sae_id=f"steergate/{job.model_name}-L{la.layer}-{sae.cfg.architecture}-{sae.cfg.d_sae}",
        features=chosen, weights=det.weights, bias=bias, threshold=0.5, gate_thresholds=gate,
        typical_activation=typical, short_words=SHORT_WORDS, short_shift=shift.shift,
    )
    report = {
        "features": [{**asdict(stats[j]), "index": f, "gate_threshold": g, "weight": w}
                     for j, (f, g, w) in enumerate(zip(chosen, gate, det.weights, strict=True))],
        "selection": {"texts": int(sel.sum()), "toxic": int(labels[sel].sum()), "size_search": tried,
                      "weights": "signed" if job.signed else "non-negative",
                      "operating_point_before_folding": t_star, "fpr_budget": FPR_BUDGET, "seed": job.seed,
                      "operating_point_scores": "out-of-fold (5 folds by frame)",
                      "short_texts": int((sel & short).sum()), "short_shift": asdict(shift)},
    }
    return feature_set, report


def _score_heldout(job: FindFeaturesJob, la: LabelledActivations, feature_set: FeatureSet,
                   review: dict[str, str] | None
                   ) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """The held-out split, scored once with the detector exactly as it runs, and by the judges:
    its texts, the detector's and the judges' scores, and the report's held-out section (with the
    reader's labels where `review` has read its lines)."""
    detector = ToxicityDetector(la.sae, feature_set)
    held = la.held
    held_texts = [t for t, h in zip(la.texts, held, strict=True) if h]
    held_labels = la.labels[held]
    words = np.array([len(t["visible"].split()) for t in held_texts])  # what the gateway counts in a prompt
    held_short = np.array([is_short(t["visible"]) for t in held_texts])
    # One SAE encode per text; its score with the short-text shift and without it.
    held_rows = [detector.feature_acts(la.text_acts(i)).tolist() for i in np.flatnonzero(held)]
    det_scores = np.array([detector.params.score(r, int(n)) for r, n in zip(held_rows, words, strict=True)])
    unshifted = np.array([detector.params.score(r) for r in held_rows])
    visible = [t["visible"] for t in held_texts]
    judge_scores = {name: np.array(get_judge(name).score(visible)) for name in JUDGES}
    # The detector without its short-text shift too: a shift puts short texts on another scale, so
    # AUROC over texts of mixed lengths reads the unshifted scores as the one ranking.
    scorers = {"detector": det_scores, UNSHIFTED: unshifted, **judge_scores}
    metrics = {name: scorer_metrics(s, held_texts, 0.5, job.n_boot, job.seed) for name, s in scorers.items()}
    views = np.array([t["view"] for t in held_texts])
    requests = np.array([t["kind"] == "short_request" for t in held_texts])  # everyday requests, benign
    by_view = {v: [t for t in held_texts if t["view"] == v] for v in VIEWS}
    checks = {
        "views": {v: {name: scorer_metrics(s[views == v], by_view[v], 0.5, job.n_boot, job.seed)["unions"]
                      for name, s in scorers.items()}
                  for v in VIEWS},
        "frontier": frontier(det_scores, la.categories[held]),
        "non_lexical_sets": {name: non_lexical_by_set(s, held_texts, 0.5, job.n_boot, job.seed)
                             for name, s in scorers.items()},
        "short": {name: {"toxic": subset_recall(s, 0.5, held_short & (held_labels == 1)),
                         "benign": subset_recall(s, 0.5, held_short & (held_labels == 0) & ~requests),
                         "requests": subset_recall(s, 0.5, requests)}
                  for name, s in scorers.items()},
        "first_word": _first_word_checks(la.model, la.tokenizer, detector, held_texts, det_scores,
                                         "alt-profanity-check"),
        "seed_phrases": [{"text": t, "detector": round(float(s), 4)} for t, s in
                         zip(seeds.HARD_NEGATIVES, score_texts(la.model, la.tokenizer, detector,
                                                               list(seeds.HARD_NEGATIVES)), strict=True)],
    }
    heldout = {"texts": int(held.sum()), "toxic": int(held_labels.sum()), "scorers": metrics,
               "checks": checks,
               "intervals": f"95% percentile bootstrap over groups (both views of a line together), "
                            f"{job.n_boot} resamples"}
    # Every scorer on the reader's labels, where the review has read any of these lines (another
    # split may have none of them).
    if review is not None and any(t["visible"] in review for t in held_texts):
        heldout["reviewed"] = reviewed_section(held_texts, scorers, review, job.n_boot, job.seed)
    return held_texts, det_scores, judge_scores, heldout
