"""The shipped SAE and features file: recompute the held-out AUROC from the committed held-out
split with the real SmolLM2, the shipped SAE and the shipped detector (no cached numbers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from discovery.activations import load_lm
from discovery.features import auroc, precision_recall
from discovery.scoring import load_detector, score_texts
from middleware.assets import EMBEDDED_FEATURES, EMBEDDED_HELDOUT, EMBEDDED_SAE
from middleware.detection import FeatureSet
from middleware.embedded import embedded_model_dir
from middleware.sae import load_sae_config

TARGET_AUROC = 0.95


def test_shipped_sae_fits_the_embedded_model_and_is_small() -> None:
    cfg = load_sae_config(EMBEDDED_SAE)
    assert cfg.d_in == 576 and cfg.architecture in ("topk", "abstopk") and cfg.hook_layer is not None
    assert (EMBEDDED_SAE / "sae_weights.safetensors").stat().st_size < 25_000_000
    card = (EMBEDDED_SAE / "README.md").read_text()
    report = json.loads((EMBEDDED_SAE / "train_report.json").read_text())
    for key in ("fvu", "l0", "dead_fraction", "delta_loss"):
        assert key in report["metrics"]
    assert f"{report['metrics']['fvu']:.4f}" in card
    assert FeatureSet.load(EMBEDDED_FEATURES).sae_path == str(EMBEDDED_SAE.resolve())


def test_heldout_auroc_recomputed_from_committed_data() -> None:
    records = [json.loads(line) for line in EMBEDDED_HELDOUT.read_text().splitlines()]
    labels = np.array([r["label"] for r in records])
    reported = FeatureSet.load(EMBEDDED_FEATURES).extra["heldout"]
    assert len(records) == reported["texts"] and labels.sum() == reported["toxic"]

    model, tokenizer = load_lm(embedded_model_dir())
    detector = load_detector(str(EMBEDDED_FEATURES))
    scores = score_texts(model, tokenizer, detector, [r["text"] for r in records])
    recomputed = auroc(scores, labels)
    assert recomputed >= TARGET_AUROC
    assert recomputed == pytest.approx(reported["detector"]["auroc"], abs=0.005)
    # find-features scored from its activation cache, stored in fp16; this run is fp32 end to end.
    assert np.abs(scores - np.array([r["detector"] for r in records])).max() < 0.05
    pr = precision_recall(scores, labels, 0.5)
    assert pr["precision"] == pytest.approx(reported["detector"]["precision"], abs=0.02)
