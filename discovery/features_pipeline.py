"""`steergate find-features`: labelled corpus + SAE -> toxicity features, detector, held-out report.

Splits the judge-labelled texts once, seeded and stratified: a selection split (ranking,
choosing, fitting, thresholds) and a held-out split used only for the final report. The
held-out split ships (heldout.jsonl) so a test can recompute the reported AUROC.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from middleware.detection import FeatureSet, ToxicityDetector
from discovery import seeds
from discovery.activations import load_lm
from discovery.corpus import BENIGN_AT, TOXIC_AT, CorpusSpec, build_corpus, load_corpus
from discovery.features import (
    auroc,
    feature_stats,
    fit_detector,
    log_max,
    precision_recall,
    stratified_split,
    youden_threshold,
)
from discovery.judges import JUDGES, get_judge
from discovery.report import write_features_report
from discovery.scoring import score_texts
from discovery.train_pipeline import corpus_activations
from middleware.sae import load_sae

__all__ = ["FindFeaturesJob", "run_find_features"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FindFeaturesJob:
    model_dir: Path
    work_dir: Path
    sae_dir: Path
    out: Path  # features.json; heldout.jsonl and features_report.md go beside it
    model_name: str = "smollm2-135m-instruct"
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    seed: int = 0
    heldout_fraction: float = 0.4


def _f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    candidates = np.unique(scores)
    best = max(candidates, key=lambda t: (precision_recall(scores, labels, float(t))["f1"], -t))
    return float(best)


def run_find_features(job: FindFeaturesJob) -> dict[str, Any]:
    started = time.monotonic()
    records = load_corpus(build_corpus(job.model_dir, job.work_dir / "corpus.jsonl", job.corpus))
    model, tokenizer = load_lm(job.model_dir)
    sae = load_sae(job.sae_dir, dtype="float32")
    layer = sae.cfg.hook_layer
    if layer is None:
        raise ValueError(f"{job.sae_dir}/cfg.json names no layer (hook_name {sae.cfg.hook_name!r})")
    all_texts = [r["text"] for r in records]
    acts, offsets = corpus_activations(model, tokenizer, all_texts, layer,
                                       job.work_dir / f"acts_corpus_L{layer}.pt", "activations: corpus")
    labelled = [i for i, r in enumerate(records) if r["label"] is not None]
    labels = np.array([records[i]["label"] for i in labelled])
    held = stratified_split(labels, job.heldout_fraction, job.seed)
    sel = ~held

    # Per text: each feature's strongest activation over the text's tokens (log1p).
    with torch.no_grad():
        x = np.concatenate([log_max([sae.encode(acts[offsets[i] : offsets[i + 1]].float())])  # (1, d_sae)
                            for i in labelled])  # (N, d_sae)
    det, tried = fit_detector(x[sel], labels[sel], seed=job.seed)
    chosen = det.features
    t_star = _f1_threshold(det.scores(x[sel]), labels[sel])
    # Fold the operating point into the bias, so that score 0.5 is the threshold chosen on selection.
    bias = det.bias - math.log(t_star / (1 - t_star)) if 0 < t_star < 1 else det.bias
    raw_max = np.expm1(x)  # (N, d_sae) max activations
    stats = feature_stats(raw_max[sel][:, chosen], labels[sel])  # one per chosen feature, in order
    gate = [youden_threshold(raw_max[sel][:, f], labels[sel]) for f in chosen]
    toxic_sel = raw_max[sel & (labels == 1)]
    typical = [float(toxic_sel[:, f][toxic_sel[:, f] > 0].mean()) if (toxic_sel[:, f] > 0).any() else 1.0
               for f in chosen]
    feature_set = FeatureSet(
        model_name=job.model_name, sae_path=str(job.sae_dir),
        sae_id=f"steergate/{job.model_name}-L{layer}-{sae.cfg.architecture}-{sae.cfg.d_sae}",
        features=chosen, weights=det.weights, bias=bias, threshold=0.5, gate_thresholds=gate,
        typical_activation=typical,
    )

    # ---- held-out: scored once, with the detector exactly as it runs ----------------------
    detector = ToxicityDetector(sae, feature_set)

    @functools.cache  # the held-out texts are scored again as part of the classifier-only set
    def score(i: int) -> float:
        return detector.text_score(acts[offsets[i] : offsets[i + 1]])

    held_idx = [labelled[j] for j in np.flatnonzero(held)]
    held_scores = np.array([score(i) for i in held_idx])
    held_labels = labels[held]
    visible = [records[i]["visible"] for i in held_idx]
    peers = {}
    for name in JUDGES:
        scores = np.array([records[i]["judge"] for i in held_idx]) if name == job.corpus.judge \
            else np.array(get_judge(name).score(visible))
        peers[name] = {"auroc": float(auroc(scores, held_labels)), **precision_recall(scores, held_labels, 0.5),
                       "labels_from_this_judge": name == job.corpus.judge}
    # The same held-out texts labelled by the classifier alone (word-list texts it calls clean
    # counted as benign): how much the consensus labels matter.
    held_set = set(held_idx)
    judge_only = [i for i, r in enumerate(records)
                  if i in held_set or (r["label"] is None and r["judge"] <= BENIGN_AT)]
    judge_only_labels = np.array([1 if records[i]["judge"] >= TOXIC_AT else 0 for i in judge_only])
    judge_only_scores = np.array([score(i) for i in judge_only])
    hard = [i for i in range(len(records)) if records[i]["source"] == "hard_negative"]
    hard_scores = np.array([score(i) for i in hard])
    hard_judge = np.array([records[i]["judge"] for i in hard])
    phrase_scores = score_texts(model, tokenizer, detector, list(seeds.HARD_NEGATIVES))
    phrase_judge = get_judge(job.corpus.judge).score(list(seeds.HARD_NEGATIVES))
    heldout = {
        "texts": int(held.sum()), "toxic": int(held_labels.sum()), "benign": int((held_labels == 0).sum()),
        "detector": {"auroc": float(auroc(held_scores, held_labels)), **precision_recall(held_scores, held_labels, 0.5)},
        "peers": peers,
        "classifier_only_labels": {
            "texts": len(judge_only), "toxic": int(judge_only_labels.sum()),
            "detector_auroc": float(auroc(judge_only_scores, judge_only_labels)),
        },
        "hard_negatives": {
            "texts": len(hard), "detector_flag_rate": float((hard_scores >= 0.5).mean()) if hard else 0.0,
            "judge_flag_rate": float((hard_judge >= 0.5).mean()) if hard else 0.0,
            "phrases": [{"text": t, "detector": round(float(s), 4), "judge": round(float(j), 4)}
                        for t, s, j in zip(seeds.HARD_NEGATIVES, phrase_scores, phrase_judge, strict=True)],
        },
    }
    feature_set.extra = {
        "features": [{**asdict(stats[j]), "index": f, "gate_threshold": g, "weight": w}
                     for j, (f, g, w) in enumerate(zip(chosen, gate, det.weights, strict=True))],
        "selection": {"texts": int(sel.sum()), "toxic": int(labels[sel].sum()), "size_search": tried,
                      "f1_threshold_before_folding": t_star, "judge": job.corpus.judge, "seed": job.seed},
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
        for i, value in zip(held_idx, held_scores, strict=True):
            r = records[i]
            f.write(json.dumps({"id": r["id"], "source": r["source"], "text": r["text"], "visible": r["visible"],
                                "judge": r["judge"], "label": r["label"], "detector": round(float(value), 6)},
                               ensure_ascii=False) + "\n")
    write_features_report(job.out.parent / "features_report.md", data)
    return data
