"""Pure statistics of feature selection and the SAE trainer, on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from discovery.features import (
    Detector,
    auroc,
    feature_stats,
    fit_detector,
    fit_weights,
    log_max,
    out_of_fold_scores,
    precision_recall,
    stratified_split,
    youden_threshold,
)
from discovery.train import TrainableSAE, TrainSpec, train_sae


def test_auroc_matches_sklearn_with_ties_and_columns() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    scores = np.round(rng.random((200, 3)) + labels[:, None] * [0.5, 0.0, -0.5], 1)  # ties on purpose
    ours = auroc(scores, labels)
    for f in range(3):
        assert ours[f] == pytest.approx(roc_auc_score(labels, scores[:, f]))
    assert auroc(scores[:, 0], labels) == pytest.approx(roc_auc_score(labels, scores[:, 0]))
    with pytest.raises(ValueError):
        auroc(scores[:, 0], np.zeros(200))


def test_precision_recall_and_youden() -> None:
    labels = np.array([1, 1, 0, 0, 0])
    pr = precision_recall(np.array([0.9, 0.4, 0.6, 0.1, 0.2]), labels, 0.5)
    assert (pr["precision"], pr["recall"], pr["false_positive_rate"]) == (0.5, 0.5, pytest.approx(1 / 3))
    values = np.array([5.0, 4.0, 1.0, 0.0, 0.0])
    assert youden_threshold(values, labels) == 4.0  # separates the classes exactly


def test_feature_stats_finds_the_planted_feature() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random(300) < 0.4
    text_max = np.maximum(rng.normal(0, 1, (300, 20)), 0)
    text_max[:, 7] += labels * 3.0
    stats = feature_stats(text_max, labels)
    best = max(stats, key=lambda s: s.auroc)
    assert best.index == 7 and best.auroc > 0.95 and best.mean_toxic > best.mean_benign


def test_fit_detector_keeps_the_separating_features_with_nonnegative_weights() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.3).astype(int)
    per_text = []
    for y in labels:
        a = torch.tensor(rng.random((6, 40)) * 0.3, dtype=torch.float32)  # (tokens, features): noise
        if y:  # a toxic text: feature 7 or feature 9 fires strongly on one token
            a[int(rng.integers(6)), 7 if rng.random() < 0.5 else 9] = 8.0
        per_text.append(a)
    x = log_max(per_text)  # (N, 40)
    det, tried = fit_detector(x, labels, cs=(0.05, 0.5))
    assert {7, 9} <= set(det.features) and all(w >= 0 for w in det.weights)
    assert auroc(det.scores(x), labels) > 0.99
    assert [t["C"] for t in tried] == [0.05, 0.5]


def test_signed_detector_counts_benign_evidence_against() -> None:
    """Same frame, a toxic or a benign word: only a signed detector can use the benign word's feature."""
    rng = np.random.default_rng(1)
    labels = (rng.random(400) < 0.5).astype(int)
    per_text = []
    for y in labels:
        a = torch.tensor(rng.random((6, 20)) * 0.3, dtype=torch.float32)
        a[0, 2] = 4.0  # the frame's feature, in every text
        a[3, 7 if y else 11] = float(rng.uniform(0.5, 5.0))  # a toxic word's feature, or a benign word's
        per_text.append(a)
    x = log_max(per_text)
    det, _ = fit_detector(x, labels, cs=(0.1, 1.0), signed=True)
    weight = dict(zip(det.features, det.weights, strict=True))
    assert weight[7] > 0 and weight[11] < 0
    assert det.features[0] == 7 and det.features[-1] == 11  # most toxic first, most benign last
    assert auroc(det.scores(x), labels) > 0.99
    nonneg, _ = fit_detector(x, labels, cs=(0.1, 1.0))
    assert 11 not in nonneg.features and all(w >= 0 for w in nonneg.weights)
    capped, tried = fit_detector(x, labels, cs=(0.1, 1.0), signed=True, max_features=1)
    assert capped.features == [7] and sum(t["chosen"] for t in tried) == 1


def test_out_of_fold_scores_do_not_see_their_own_frame() -> None:
    """Each frame has a feature of its own and one label: in-sample, a detector learns the frames;
    out of fold it can only use the (weak) real signal, as on a held-out frame."""
    rng = np.random.default_rng(2)
    frames = np.repeat(np.arange(40), 10)  # 40 frames x 10 texts
    labels = (np.arange(40) % 2)[frames]  # a frame is all toxic or all benign
    x = rng.random((400, 60)) * 0.2
    x[np.arange(400), 20 + frames] = 2.0  # the frame's own feature
    x[:, 3] += labels * rng.random(400) * 0.5  # weak real signal
    groups = [f"frame{f}" for f in frames]
    det, tried = fit_detector(x, labels, cs=(1.0,), signed=True, max_features=60)
    inside = auroc(det.scores(x), labels)
    oof = out_of_fold_scores(x, labels, groups, det, 1.0, signed=True, max_features=60)
    assert oof.shape == (400,) and ((oof >= 0) & (oof <= 1)).all()
    assert inside > 0.99 and auroc(oof, labels) < inside - 0.1


def test_detector_scores_match_the_runtime_combination() -> None:
    det = Detector(features=[1, 3], weights=[2.0, 0.5], bias=-4.0)
    x = log_max([torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 3.0, 0.0, 2.0]]), torch.zeros(0, 4)])
    expected = 1 / (1 + np.exp(-(-4.0 + 2.0 * np.log1p(3.0) + 0.5 * np.log1p(2.0))))
    assert det.scores(x)[0] == pytest.approx(expected)
    assert det.scores(x)[1] == pytest.approx(1 / (1 + np.exp(4.0)))  # no tokens: no evidence
    w, b = fit_weights(np.array([[0.0], [1.0], [0.0], [1.0]]), np.array([0, 1, 0, 1]))
    assert w[0] > 0 and b < 0


def test_stratified_split_keeps_class_shares() -> None:
    labels = np.array([1] * 40 + [0] * 160)
    held = stratified_split(labels, 0.25, seed=3)
    assert held[labels == 1].sum() == 10 and held[labels == 0].sum() == 40
    assert (stratified_split(labels, 0.25, seed=3) == held).all()


def _sparse_data(n: int, d: int, atoms: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(atoms, d, generator=g)
    codes = (torch.rand(n, atoms, generator=g) < 4 / atoms) * torch.rand(n, atoms, generator=g) * 5
    return (codes @ dictionary + 3.0).to(torch.float16)  # an offset, as residual streams have


@pytest.mark.parametrize("arch", ["topk", "abstopk"])
def test_train_sae_learns_sparse_data_and_resumes(arch: str, tmp_path) -> None:
    acts = _sparse_data(6000, 32, 48, seed=0)
    spec = TrainSpec(architecture=arch, d_sae=64, k=6, epochs=15, batch_tokens=256, lr=3e-3,
                     checkpoint_every=50, dead_after_tokens=2000)
    ckpt = tmp_path / "sae.ckpt"
    sae, log = train_sae(acts, spec, hook_layer=3, model_name="toy", checkpoint=ckpt)
    assert sae.cfg.architecture == arch and sae.cfg.hook_layer == 3
    fvu = sae.fraction_of_variance_unexplained(acts.float()).item()
    assert fvu < 0.2, log["history"]
    assert log["history"][-1]["fvu"] < log["history"][0]["fvu"]
    # A finished checkpoint resumes to the same weights without training again.
    again, _ = train_sae(acts, spec, hook_layer=3, model_name="toy", checkpoint=ckpt)
    assert torch.equal(again.W_enc, sae.W_enc) and torch.equal(again.b_dec, sae.b_dec)
    with pytest.raises(ValueError, match="different run"):
        train_sae(acts[:5000], spec, hook_layer=3, model_name="toy", checkpoint=ckpt)


def test_export_folds_the_input_scale() -> None:
    spec = TrainSpec(d_sae=16, k=3)
    model = TrainableSAE(8, spec, b_dec_init=torch.randn(8))
    with torch.no_grad():
        model.b_enc.copy_(torch.randn(16))
    x = torch.randn(5, 8) * 7
    scale = 0.25
    sae = model.export(scale, hook_layer=0, model_name="toy")
    with torch.no_grad():
        trained = model.activate(model.pre(x * scale), spec.k) @ model.W_dec + model.b_dec
    # The exported SAE on raw x reconstructs what the trained one did on scaled x, unscaled.
    assert torch.allclose(sae(x), trained / scale, atol=1e-4)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(16), atol=1e-5)
