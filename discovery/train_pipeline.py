"""`steergate train-sae`: corpus -> activations -> SAE -> metrics -> model card.

The SAE learns, unsupervised, from the selection split of the lexical corpus (discovery/corpus.py:
the model's own text, labelled or not; held-out texts are never seen) plus standard-library
docstrings. The instructed sets (discovery/instructed.py) are for choosing features, not for
training the SAE: that keeps `train-sae` at one generation job. The layer is DEFAULT_LAYER
unless given; `--layer auto` picks one by a linear probe on the judge's labels instead (the
earliest layer within PROBE_TOLERANCE of the best).

Every stage caches its result in a work directory and a rerun skips finished stages, so an
interrupted run resumes (SAE training from its last checkpoint). Everything is seeded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from discovery.activations import cached_activations, collect, load_lm
from discovery.corpus import build_corpus, corpus_stats, docstring_texts, load_corpus
from discovery.defaults import DEFAULT_LAYER
from discovery.features import auroc
from discovery.labelled import DataSpec
from discovery.model_card import write_model_card
from discovery.sae_eval import reconstruction_metrics, spliced_loss
from discovery.train import TrainSpec, train_sae

__all__ = ["DEFAULT_LAYER", "TrainSAEJob", "probe_layers", "run_train_sae", "sae_texts"]

logger = logging.getLogger(__name__)

CANDIDATE_LAYERS = (3, 6, 9, 12, 15, 18, 21, 24, 27)
# Layers whose probe AUROC is within this of the best count as equally good; the earliest wins.
PROBE_TOLERANCE = 0.005


@dataclass(frozen=True)
class TrainSAEJob:
    model_dir: Path
    work_dir: Path
    out_dir: Path
    model_name: str = "smollm2-135m-instruct"
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    layer: int | None = DEFAULT_LAYER  # None: chosen by `probe_layers`
    candidate_layers: tuple[int, ...] = CANDIDATE_LAYERS
    extra_texts: int = 2000  # stdlib docstrings added to the SAE's training tokens
    eval_fraction: float = 0.05  # texts held out of SAE training for its metrics
    probe_texts_per_class: int = 300
    loss_texts: int = 96  # held-out texts the delta-loss metric runs on


def sae_texts(corpus: list[dict[str, Any]]) -> list[str]:
    """The corpus texts the SAE learns from: the selection split, labelled or not."""
    return [r["text"] for r in corpus if r["split"] == "selection"]


def probe_layers(model: Any, tokenizer: Any, records: list[dict[str, Any]], layers: tuple[int, ...],
                 per_class: int, seed: int) -> dict[str, Any]:
    """Linear-probe AUROC (5-fold cross-validated, mean-pooled stream) of the judge's labels per layer."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = random.Random(seed)
    chosen = []
    for label in (0, 1):
        pool = [r for r in records if r["label"] == label]
        chosen += rng.sample(pool, min(per_class, len(pool)))
    texts = [r["text"] for r in chosen]
    labels = np.array([r["label"] for r in chosen])
    pooled = {layer: np.zeros((len(texts), 0)) for layer in layers}
    rows: dict[int, dict[int, np.ndarray]] = {layer: {} for layer in layers}
    norms: dict[int, list[float]] = {layer: [] for layer in layers}
    for item in collect(model, tokenizer, texts, layers, progress="probe layers"):
        for layer, acts in item.acts.items():
            rows[layer][item.index] = acts.mean(dim=0).numpy() if len(acts) else np.zeros(acts.shape[1])
            norms[layer] += acts.norm(dim=-1).tolist()
    table = []
    for layer in layers:
        pooled[layer] = np.stack([rows[layer][i] for i in range(len(texts))])
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        folds = min(5, int(np.bincount(labels, minlength=2).min()))
        if folds < 2:
            raise ValueError("the layer probe needs at least 2 toxic and 2 benign texts; pass --layer")
        scores = cross_val_predict(probe, pooled[layer], labels, cv=folds, method="predict_proba")[:, 1]
        table.append({"layer": layer, "probe_auroc": round(float(auroc(scores, labels)), 4),
                      "median_norm": round(float(np.median(norms[layer])), 2)})
    best = max(t["probe_auroc"] for t in table)
    layer = next(t["layer"] for t in table if t["probe_auroc"] >= best - PROBE_TOLERANCE)
    return {"layers": table, "chosen": layer, "texts": len(texts),
            "rule": f"earliest layer within {PROBE_TOLERANCE} of the best probe AUROC ({best:.4f})"}


def _split(n: int, fraction: float, seed: int) -> np.ndarray:
    """(n,) bool: True for the texts held out of SAE training (at least one when n >= 2)."""
    held = np.random.default_rng(seed).random(n) < fraction
    if n >= 2 and not held.any():
        held[0] = True
    return held


def _rows(acts: torch.Tensor, offsets: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
    return torch.cat([acts[:0], *(acts[offsets[i] : offsets[i + 1]] for i in np.flatnonzero(keep))])


def run_train_sae(job: TrainSAEJob) -> dict[str, Any]:
    torch.manual_seed(job.train.seed)
    started = time.monotonic()
    job.work_dir.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(build_corpus(job.model_dir, job.work_dir / "corpus.jsonl", job.data.corpus))
    model, tokenizer = load_lm(job.model_dir)
    train_texts = sae_texts(corpus)

    probe = None
    layer = job.layer
    if layer is None:
        probe_path = job.work_dir / "probe.json"
        labelled = [r for r in corpus if r["split"] == "selection" and r["label"] is not None]
        key = hashlib.sha256(json.dumps([labelled, job.candidate_layers, job.probe_texts_per_class]).encode()).hexdigest()
        probe = json.loads(probe_path.read_text()) if probe_path.exists() else None
        if probe is None or probe.get("key") != key:
            probe = probe_layers(model, tokenizer, labelled, job.candidate_layers, job.probe_texts_per_class,
                                 job.data.corpus.seed)
            probe["key"] = key
            probe_path.write_text(json.dumps(probe, indent=2))
        layer = int(probe["chosen"])
        logger.info("layer %d chosen (%s)", layer, probe["rule"])

    extra = docstring_texts(job.extra_texts, seed=job.data.corpus.seed)
    c_acts, c_off = cached_activations(model, tokenizer, train_texts, layer,
                                       job.work_dir / f"acts_corpus_selection_L{layer}.pt", "activations: corpus")
    e_acts, e_off = cached_activations(model, tokenizer, extra, layer,
                                       job.work_dir / f"acts_docstrings_L{layer}.pt", "activations: docstrings")
    c_eval = _split(len(train_texts), job.eval_fraction, job.train.seed)
    e_eval = _split(len(extra), job.eval_fraction, job.train.seed + 1)
    train_acts = torch.cat([_rows(c_acts, c_off, ~c_eval), _rows(e_acts, e_off, ~e_eval)])
    eval_acts = torch.cat([_rows(c_acts, c_off, c_eval), _rows(e_acts, e_off, e_eval)])
    eval_texts = [t for t, e in zip(train_texts, c_eval, strict=True) if e] + \
                 [t for t, e in zip(extra, e_eval, strict=True) if e]

    ckpt = job.work_dir / f"sae_L{layer}_{job.train.architecture}_{job.train.d_sae}_k{job.train.k}.ckpt"
    sae, train_log = train_sae(train_acts, job.train, hook_layer=layer, model_name=job.model_name,
                               checkpoint=ckpt)
    metrics = reconstruction_metrics(sae, eval_acts)
    # Three full forwards per text (clean, spliced, zeroed): a seeded sample of the held-out texts.
    loss_texts = random.Random(job.train.seed).sample(eval_texts, min(len(eval_texts), job.loss_texts))
    metrics.update(spliced_loss(model, tokenizer, sae, layer, loss_texts))
    sae = sae.to(torch.float16)  # what ships: half the bytes; the middleware computes in fp32
    sae.save(job.out_dir)
    report = {
        "model_name": job.model_name, "layer": layer, "hook_name": sae.cfg.hook_name,
        "train_spec": asdict(job.train), "data_spec": asdict(job.data),
        "corpus": corpus_stats(corpus), "selection_texts": len(train_texts),
        "extra_texts": len(extra),
        "train_tokens": int(train_acts.shape[0]), "eval_tokens": int(eval_acts.shape[0]),
        "eval_texts": len(eval_texts), "loss_texts": len(loss_texts), "layer_probe": probe, "training": train_log,
        "metrics": {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
        "seconds": round(time.monotonic() - started, 1),
    }
    (job.out_dir / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_model_card(job.out_dir / "README.md", report)
    return report
