"""The toxicity detector and SafetyMiddleware, over a tiny random SAE and a hand-made features file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from middleware.detection import (
    FEATURES_FORMAT,
    TOXICITY_FEATURES,
    DetectorParams,
    FeatureSet,
    SafetyMiddleware,
    ToxicityDetector,
)
from middleware.hooks import BatchLayout
from middleware.steering import STEERED

from .builders import build_inputs, build_sae

D_IN = 16


def write_features(tmp: Path, features: list[int], weights: list[float], bias: float) -> Path:
    sae = build_sae("topk", d_in=D_IN, d_sae=32)
    sae.save(tmp / "sae")
    path = tmp / "features.json"
    fs = FeatureSet(model_name="tiny", sae_path="", sae_id="tiny/sae", features=features, weights=weights, bias=bias,
                    gate_thresholds=[0.2] * len(features), typical_activation=[1.0] * len(features))
    path.write_text(json.dumps(fs.to_dict("sae")))
    return path


def test_features_file_round_trip_and_relative_sae_path(tmp_path: Path) -> None:
    path = write_features(tmp_path, [3, 5], [1.0, 0.5], -2.0)
    fs = FeatureSet.load(path)
    assert fs.sae_path == str((tmp_path / "sae").resolve())
    assert (fs.features, fs.weights, fs.bias, fs.threshold) == ([3, 5], [1.0, 0.5], -2.0, 0.5)
    raw = json.loads(path.read_text())
    assert raw["format"] == FEATURES_FORMAT and "log1p" in raw["detector"]["combine"]
    tiers = fs.tiers()
    assert set(tiers) == {"off", "light", "medium", "strong"}
    assert tiers["strong"]["interventions"][0] == {"feature": 3, "mode": "add", "strength": -2.0}


def test_features_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a steergate features file"):
        FeatureSet.load(bad)
    path = write_features(tmp_path, [3], [1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match="1 features but 2 weights"):
        FeatureSet.load(path)


def test_detector_adds_each_features_strongest_activation(tmp_path: Path) -> None:
    fs = FeatureSet.load(write_features(tmp_path, [3, 5], [1.0, 0.5], -2.0))
    sae = build_sae("topk", d_in=D_IN, d_sae=32)
    det = ToxicityDetector(sae, fs)
    x = build_inputs(8, D_IN) * 4
    acts = sae.encode(x)[:, [3, 5]].clamp_min(0)
    peak = acts.amax(dim=0)
    expected = torch.sigmoid(torch.log1p(peak) @ torch.tensor([1.0, 0.5]) - 2.0).item()
    assert det.text_score(x) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="names feature 40"):
        ToxicityDetector(sae, FeatureSet("m", "", "", [40], [1.0], 0.0))


def test_running_score_never_decreases_and_skips_unscored_tokens() -> None:
    params = DetectorParams((1.0, 2.0), -3.0)
    rows = [[0.0, 0.0], [2.0, 0.0], [math.nan, math.nan], [0.0, 0.0], [0.0, 4.0]]
    running = params.running(rows)
    assert running == sorted(running) and running[1] == running[2] == running[3]
    assert running[-1] == pytest.approx(1 / (1 + math.exp(-(-3 + math.log1p(2) + 2 * math.log1p(4)))))
    assert params.score(rows) == running[-1] and params.score([]) == 0.0


def test_running_score_updated_per_moved_peak_equals_the_whole_formula() -> None:
    # Signed weights: benign evidence (a negative weight) can bring the score down again.
    rng = torch.Generator().manual_seed(0)
    weights = torch.randn(64, generator=rng).tolist()
    params = DetectorParams(tuple(weights), -1.0)
    rows = (torch.rand(50, 64, generator=rng) * (torch.rand(50, 64, generator=rng) < 0.1) * 3).tolist()
    peak = torch.zeros(64)
    running = params.running(rows)
    for t, row in enumerate(rows):
        peak = torch.maximum(peak, torch.tensor(row))
        logit = -1.0 + float(torch.log1p(peak.double()) @ torch.tensor(weights, dtype=torch.float64))
        assert running[t] == pytest.approx(1 / (1 + math.exp(-logit)), rel=1e-9, abs=1e-12)
    assert running != sorted(running)  # it fell at least once
    with pytest.raises(ValueError, match="a row of 3 activations for a detector of 64"):
        params.running([[0.0, 1.0, 2.0]])


def test_safety_middleware_scores_every_request_and_skips_first_and_special_tokens(tmp_path: Path) -> None:
    path = write_features(tmp_path, [3, 5], [1.0, 0.5], -2.0)
    mw = SafetyMiddleware(layer=3, d_model=D_IN, features_path=str(path), skip_token_ids=[0])
    x = build_inputs(7, D_IN) * 4
    # Two requests: one new (positions 0..3, prompt), one decoding (positions 9..11).
    layout = BatchLayout.from_spans(["a", "b"], [(0, 4), (4, 7)], [0, 9], [4, 5],
                                    request_args=[{}, {"steering": {"tier": "strong"}}],
                                    token_ids=torch.tensor([5, 0, 7, 8, 9, 10, 11]))
    result = mw(x, layout)
    acts = result.side_outputs[TOXICITY_FEATURES]  # (T, m)
    assert acts.shape == (7, 2)
    expected = mw.detector.feature_acts(x)
    assert acts[:2].isnan().all()  # position 0; special token id 0
    assert torch.allclose(acts[2:], expected[2:])  # read before steering moved request b
    assert result.side_outputs[STEERED][4:].sum() == 3  # b steered (generated tokens), a not
    assert result.side_outputs[STEERED][:4].sum() == 0


def test_safety_annotation_reports_max_toxicity_per_phase(tmp_path: Path) -> None:
    path = write_features(tmp_path, [3], [1.0], 0.0)
    args = SafetyMiddleware.resolved_args({"features_path": str(path)})
    assert args["sae_path"].endswith("sae") and "light" in args["tiers"] and args["threshold"] == 0.5
    tokens = [{"position": 0, "is_prompt": True, TOXICITY_FEATURES: [math.nan], STEERED: 0.0},
              {"position": 1, "is_prompt": True, TOXICITY_FEATURES: [0.1], STEERED: 0.0},
              {"position": 2, "is_prompt": False, TOXICITY_FEATURES: [5.0], STEERED: 1.0},
              {"position": 3, "is_prompt": False, TOXICITY_FEATURES: [0.0], STEERED: 1.0}]
    safety: dict = {}
    SafetyMiddleware.annotate(args, {"steering": {"tier": "light"}}, tokens, safety)
    prompt, completion = 1 / (1 + math.exp(-math.log1p(0.1))), 1 / (1 + math.exp(-math.log1p(5.0)))
    assert safety == {"tier": "light",
                      "prompt": {"steered_tokens": 0, "toxicity": round(prompt, 6), "flagged": True},
                      "completion": {"steered_tokens": 2, "toxicity": round(completion, 6), "flagged": True}}


def test_short_text_shift_raises_only_short_texts_logit() -> None:
    params = DetectorParams((1.0,), -2.0, short_words=6, short_shift=1.5)
    rows = [[1.0], [3.0]]
    z = -2.0 + math.log1p(3.0)
    assert params.score(rows) == pytest.approx(1 / (1 + math.exp(-z)))  # length unknown: no shift
    assert params.score(rows, words=7) == params.score(rows)
    assert params.score(rows, words=6) == pytest.approx(1 / (1 + math.exp(-(z + 1.5))))
    assert params.score(rows, words=0) == params.score(rows)  # no words: nothing was typed
    assert params.score([], words=2) == 0.0
    # The shift is a lower threshold for short texts at every policy threshold t: sigmoid(logit(t) - shift).
    for t in (0.3, 0.5, 0.7):
        lower = 1 / (1 + math.exp(-(math.log(t / (1 - t)) - 1.5)))
        assert (params.score(rows, words=3) >= t) == (params.score(rows) >= lower)
        assert params.threshold_for(t, 3) == pytest.approx(lower) and params.threshold_for(t, 30) == t
    assert DetectorParams((1.0,), -800.0).score([[0.0]], words=2) == 0.0  # no overflow far out


def test_features_file_carries_the_short_text_shift(tmp_path: Path) -> None:
    path = write_features(tmp_path, [3], [1.0], 0.0)
    assert FeatureSet.load(path).params().short_shift == 0.0  # files without one: one threshold
    raw = json.loads(path.read_text())
    raw["detector"] |= {"short_words": 6, "short_shift": 2.0}
    path.write_text(json.dumps(raw))
    fs = FeatureSet.load(path)
    assert (fs.short_words, fs.short_shift) == (6, 2.0)
    assert fs.to_dict("sae")["detector"]["short_shift"] == 2.0
    args = SafetyMiddleware.resolved_args({"features_path": str(path)})
    tokens = [{"position": 1, "is_prompt": True, TOXICITY_FEATURES: [0.5]},
              {"position": 2, "is_prompt": False, TOXICITY_FEATURES: [0.5]}]
    short, long, unknown = {}, {}, {}
    SafetyMiddleware.annotate(args, {"prompt_words": 3}, tokens, short)
    SafetyMiddleware.annotate(args, {"prompt_words": 30}, tokens, long)
    SafetyMiddleware.annotate(args, {}, tokens, unknown)
    base = round(1 / (1 + math.exp(-math.log1p(0.5))), 6)
    assert long["prompt"]["toxicity"] == unknown["prompt"]["toxicity"] == base
    assert short["prompt"]["toxicity"] == round(1 / (1 + math.exp(-(math.log1p(0.5) + 2.0))), 6)
    assert short["completion"]["toxicity"] == base  # a completion gets no shift
