"""Rank SAE features by how well they separate toxic from benign texts; fit the detector.

"Breaking Bad Tokens" ranks features by activation strength and frequency on toxic text and
then checks them by hand. Here every step is a measurement on a labelled selection split:
1. the feature set: an L1-regularised logistic regression over every feature's (log) max
   activation in each text keeps the few that carry the label; its strength is chosen on a
   validation part of the selection split (`fit_detector`);
2. the detector: a logistic combination of those features, in exactly the form it runs in
   (middleware/detection.py). Signed (the default of `find-features`): features that speak for a
   benign reading ("kind", "help you move") count against the toxic ones, which is what lets a
   detector tell "you are worthless" from "you are thoughtful" in the same frame (README, "Why
   these choices"; the measurement is in docs/detector/HISTORY.md, "templated lines and signed
   weights"). Non-negative (the form of the detectors shipped until 2026-11-27): only toxic
   evidence, so a text's score can only grow as it is generated;
3. per selected feature, the stats a person checks: AUROC of its max activation, mean
   activation and firing frequency in each class (`feature_stats`), and a threshold (Youden's J)
   for steering gates.
The held-out split is scored once, at the end, by the caller (discovery/pipeline.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata

__all__ = [
    "Detector",
    "FeatureStats",
    "auroc",
    "feature_stats",
    "MAX_FEATURES",
    "fit_detector",
    "fit_weights",
    "log_max",
    "out_of_fold_scores",
    "precision_recall",
    "stratified_split",
    "youden_threshold",
]


# The detector's features are a per-token side output of the engine, (T, m), which the server
# combines token by token in Python (middleware/detection.py); m is bounded so that cost stays
# small (the shipped detector has 40).
MAX_FEATURES = 128


def auroc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray | float:
    """Area under the ROC curve of `scores` (N,) or (N, F) against binary `labels` (N,), ties averaged."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        raise ValueError("AUROC needs both classes")
    ranks = rankdata(scores, axis=0)  # (N,) or (N, F)
    result = (ranks[labels].sum(axis=0) - pos * (pos + 1) / 2) / (pos * neg)
    return float(result) if np.ndim(result) == 0 else result


def precision_recall(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    pred = np.asarray(scores) >= threshold
    labels = np.asarray(labels).astype(bool)
    tp = int((pred & labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": threshold, "precision": precision, "recall": recall, "f1": f1,
            "false_positive_rate": fp / max(int((~labels).sum()), 1)}


def youden_threshold(values: np.ndarray, labels: np.ndarray) -> float:
    """The cut on `values` (N,) maximising TPR - FPR (a feature's gate threshold)."""
    labels = np.asarray(labels).astype(bool)
    best, best_j = float(values.max()), -1.0
    for t in np.unique(values[values > 0]):
        pred = values >= t
        j = pred[labels].mean() - pred[~labels].mean()
        if j > best_j:
            best, best_j = float(t), j
    return best


@dataclass(frozen=True)
class FeatureStats:
    index: int
    auroc: float
    mean_toxic: float  # mean over toxic texts of the text's max activation
    mean_benign: float
    freq_toxic: float  # fraction of toxic texts where the feature fires at all
    freq_benign: float


def feature_stats(text_max: np.ndarray, labels: np.ndarray) -> list[FeatureStats]:
    """Per-feature separation stats from per-text max activations (N, d_sae)."""
    labels = np.asarray(labels).astype(bool)
    aucs = np.asarray(auroc(text_max, labels))
    fires = text_max > 0
    out = []
    for f in range(text_max.shape[1]):
        out.append(FeatureStats(
            index=f, auroc=float(aucs[f]),
            mean_toxic=float(text_max[labels, f].mean()), mean_benign=float(text_max[~labels, f].mean()),
            freq_toxic=float(fires[labels, f].mean()), freq_benign=float(fires[~labels, f].mean()),
        ))
    return out


def stratified_split(labels: np.ndarray, fraction: float, seed: int,
                     groups: Sequence[str] | None = None) -> np.ndarray:
    """(N,) bool: True for held-out, seeded. Without `groups`, the same fraction of each class.

    With `groups`, every group goes to one side whole, whatever its labels: groups are taken in a
    seeded order while a class they contain is below its share. A group that carries both labels
    (a short line's frame does) must not put its toxic texts on one side and its benign ones on
    the other, or validation would compare frames instead of labels.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    held = np.zeros(len(labels), dtype=bool)
    if groups is None:
        for value in (0, 1):
            idx = np.flatnonzero(labels == value)
            held[rng.permutation(idx)[: round(len(idx) * fraction)]] = True
        return held
    keys = np.asarray(groups)
    target = {v: fraction * (labels == v).sum() for v in (0, 1)}
    for name in rng.permutation(np.unique(keys)):
        group = keys == name
        if any((labels[group] == v).any() and (labels[held] == v).sum() < target[v] for v in (0, 1)):
            held |= group
    return held


def log_max(per_text: Sequence[torch.Tensor]) -> np.ndarray:
    """(N, d) log1p of each feature's max activation over each text's tokens (0 for none)."""
    d = per_text[0].shape[1]
    return np.stack([np.log1p(a.clamp_min(0).amax(dim=0).numpy()) if len(a) else np.zeros(d) for a in per_text])


@dataclass
class Detector:
    """score(text) = sigmoid(bias + sum_i weights[i] * log1p(max over tokens of a_i)): the
    combination middleware/detection.py runs (see its docstring)."""

    features: list[int]
    weights: list[float]
    bias: float

    def scores(self, log_max_acts: np.ndarray) -> np.ndarray:
        """(N,) scores from (N, d) `log_max` of all features."""
        z = log_max_acts[:, self.features] @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-z))


def fit_weights(x: np.ndarray, y: np.ndarray, *, signed: bool = False, steps: int = 500,
                l2: float = 1e-3) -> tuple[list[float], float]:
    """Logistic regression on (N, m) features, L2-penalised; weights non-negative (w = softplus(v))
    unless `signed`."""
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    v = torch.full((x.shape[1],), 0.0 if signed else -2.0, requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([v, b], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def weights() -> torch.Tensor:
        return v if signed else torch.nn.functional.softplus(v)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        w = weights()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return [float(w) for w in weights().detach()], float(b.detach())


def _l1_selected(x: np.ndarray, y: np.ndarray, c: float, seed: int, signed: bool,
                 limit: int | None = None) -> list[int]:
    """Features an L1-regularised logistic regression weights positively (or, `signed`, at all),
    at most `limit` of them (the largest weights in magnitude), most toxic first."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(l1_ratio=1.0, C=c, solver="liblinear", max_iter=5000, random_state=seed)
    lr.fit(x, y)
    coef = lr.coef_[0]
    kept = np.flatnonzero(coef != 0 if signed else coef > 0)
    kept = kept[np.argsort(-np.abs(coef[kept]))][:limit]
    return [int(f) for f in kept[np.argsort(-coef[kept])]]


def fit_detector(
    log_max_acts: np.ndarray,
    labels: np.ndarray,
    *,
    cs: Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.5),
    seed: int = 0,
    validation_fraction: float = 0.3,
    groups: Sequence[str] | None = None,
    signed: bool = False,
    max_features: int = MAX_FEATURES,
) -> tuple[Detector, list[dict[str, float]]]:
    """Choose the detector's feature set and fit the detector on (N, d) `log_max` features.

    The set is the features an L1-regularised logistic regression weights positively (`signed`:
    weights at all, benign evidence included); its
    strength C is picked on a validation part of the given (selection) texts (whole `groups` on
    one side, e.g. frames, so validation texts share no frame with the fitting part, as held-out
    texts share none with selection); then the detector (weights over that set, non-negative
    unless `signed`) is refitted on all of them. A C whose set exceeds `max_features` is not
    chosen, and the final set is cut to that many (largest weights). Returns the detector and, per
    C tried, the set size, validation AUROC and whether it was chosen.
    """
    labels = np.asarray(labels).astype(int)
    val = stratified_split(labels, validation_fraction, seed + 1, groups)
    tried = []
    for c in cs:
        feats = _l1_selected(log_max_acts[~val], labels[~val], c, seed, signed)
        if not feats:
            tried.append({"C": c, "features": 0, "validation_auroc": 0.5})
            continue
        w, b = fit_weights(log_max_acts[~val][:, feats], labels[~val], signed=signed)
        scores = Detector(feats, w, b).scores(log_max_acts[val])
        tried.append({"C": c, "features": len(feats), "validation_auroc": float(auroc(scores, labels[val]))})
    usable = [t for t in tried if 0 < t["features"] <= max_features]
    if usable:
        best = max(t["validation_auroc"] for t in usable)
        # The sparsest set within 0.002 of the best: fewer features, fewer false positives to explain.
        c = min((t for t in usable if t["validation_auroc"] >= best - 0.002), key=lambda t: (t["features"], t["C"]))["C"]
    elif any(t["features"] for t in tried):  # every set too large: the strongest penalty tried
        c = min(cs)
    else:  # too few texts for any C to keep a feature on the fitting part: the weakest penalty tried
        c = max(cs)
    for t in tried:
        t["chosen"] = t["C"] == c
    det = _fit_at(log_max_acts, labels, c, seed, signed, max_features)
    if det is None:
        raise RuntimeError("no SAE feature separates toxic from benign texts; is the corpus too small?")
    return det, tried


def _fit_at(x: np.ndarray, y: np.ndarray, c: float, seed: int, signed: bool,
            max_features: int) -> Detector | None:
    feats = _l1_selected(x, y, c, seed, signed, max_features)
    if not feats:
        return None
    w, b = fit_weights(x[:, feats], y, signed=signed)
    return Detector(feats, w, b)


def out_of_fold_scores(log_max_acts: np.ndarray, labels: np.ndarray, groups: Sequence[str],
                       detector: Detector, c: float, *, seed: int = 0, signed: bool = False,
                       max_features: int = MAX_FEATURES, folds: int = 5) -> np.ndarray:
    """(N,) each text's score by a detector chosen and fitted the same way (C = `c`) without the
    fold its group is in: how the detector scores texts of frames it was not fitted on.

    The operating points are read from these (discovery/thresholds.py). Read from the detector's
    own in-sample scores, they would be set where a detector with many features has already
    separated its training texts, and would flag far more than the budget on new frames. A fold
    whose fitting part keeps no feature is scored with `detector`'s features, refitted without it.
    """
    labels = np.asarray(labels).astype(int)
    names = np.unique(np.asarray(groups))
    order = np.random.default_rng(seed + 2).permutation(len(names))
    fold_of = {names[j]: i % folds for i, j in enumerate(order)}
    fold = np.array([fold_of[g] for g in groups])
    out = np.empty(len(labels))
    for k in range(folds):
        test, fit = fold == k, fold != k
        if not test.any():
            continue
        if len(np.unique(labels[fit])) < 2:  # too few texts to fit without this fold: in-sample
            out[test] = detector.scores(log_max_acts[test])
            continue
        det = _fit_at(log_max_acts[fit], labels[fit], c, seed, signed, max_features)
        if det is None:
            w, b = fit_weights(log_max_acts[fit][:, detector.features], labels[fit], signed=signed)
            det = Detector(detector.features, w, b)
        out[test] = det.scores(log_max_acts[test])
    return out
