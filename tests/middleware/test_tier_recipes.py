"""middleware/tier_recipes.py: calibrated tiers as rules over a features file, and FeatureSet reading them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from middleware.assets import EMBEDDED_FEATURES
from middleware.detection import FeatureSet
from middleware.embedded import embedded_model_dir
from middleware.offline import attach
from middleware.sae import load_sae_config
from middleware.steering import STEERED, SAESteeringMiddleware
from middleware.tier_recipes import (
    TierRecipe,
    load_tier_recipes,
    recipe_presets,
    tiers_path_for,
    write_tier_recipes,
)
from middleware.tiers import parse_preset

FEATURES = [7, 3, 9]
WEIGHTS = [0.5, 2.0, 1.0]
GATES = [1.0, 4.0, 2.0]
TYPICAL = [10.0, 5.0, 8.0]


def test_preset_scales_by_each_features_statistics() -> None:
    preset = TierRecipe(mode="clamp", strength=-0.5, gate=2.0, top_k=2).preset(FEATURES, WEIGHTS, GATES, TYPICAL)
    # top 2 by weight: features 3 (w 2.0) and 9 (w 1.0), in the file's order
    assert preset["interventions"] == [{"feature": 3, "mode": "clamp", "strength": -2.5},
                                       {"feature": 9, "mode": "clamp", "strength": -4.0}]
    assert preset["gate"] == {"features": [3, 9], "threshold": [8.0, 4.0]}
    assert "steer_positions" not in preset


def test_a_detector_gate_is_the_detectors_per_token_logit_over_all_its_features() -> None:
    weights = [0.5, -2.0, 1.0]
    preset = TierRecipe(mode="clamp", strength=-1.0, detector_gate=-6.0, top_k=1).preset(
        FEATURES, weights, GATES, TYPICAL, bias=-9.0)
    assert preset["interventions"] == [{"feature": 9, "mode": "clamp", "strength": -8.0}]
    # bias + w . log1p(f) > -6  <=>  w . log1p(f) > 3: the benign-evidence feature counts too.
    assert preset["gate"] == {"features": FEATURES, "weights": weights, "threshold": 3.0}
    parsed = parse_preset("strong", preset).gate
    assert parsed is not None and parsed.weights == weights and parsed.threshold == 3.0


def test_ungated_add_over_every_feature() -> None:
    preset = TierRecipe(mode="add", strength=-1.0, steer_positions="both").preset(FEATURES, WEIGHTS, GATES, TYPICAL)
    assert [i["strength"] for i in preset["interventions"]] == [-10.0, -5.0, -8.0]
    assert preset["gate"] is None and preset["steer_positions"] == "both"


def test_a_signed_detectors_benign_features_are_never_steered(tmp_path: Path) -> None:
    weights = [0.5, -2.0, 1.0]  # feature 3 is benign evidence
    preset = TierRecipe(mode="ablate", top_k=2).preset(FEATURES, weights, GATES, TYPICAL)
    assert [i["feature"] for i in preset["interventions"]] == [7, 9]
    everything = TierRecipe(mode="add", strength=-1.0).preset(FEATURES, weights, GATES, TYPICAL)
    assert [i["feature"] for i in everything["interventions"]] == [7, 9]
    # The starting points (no tiers file) steer the toxic features only, too.
    src = FeatureSet.load(EMBEDDED_FEATURES)
    raw = src.to_dict(src.sae_path)
    raw["detector"]["weights"] = [-abs(w) if i % 2 else abs(w) for i, w in enumerate(src.weights)]
    (tmp_path / "features.json").write_text(json.dumps(raw))
    steered = {i["feature"] for tier in FeatureSet.load(tmp_path / "features.json").tiers().values()
               for i in tier["interventions"]}
    assert steered and steered <= set(src.features[0::2])


@pytest.mark.parametrize("raw, message", [
    ({"mode": "boost"}, "mode must be one of"),
    ({"mode": "add", "top_k": 0}, "top_k"),
    ({"mode": "add", "gate": -1}, "gate"),
    ({"mode": "add", "colour": 1}, "unknown key"),
    ({"mode": "add", "gate": 2.0, "detector_gate": -6.0}, "not both"),
])
def test_bad_recipes_are_errors(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TierRecipe.from_dict(raw)


def test_round_trip_and_feature_set_reads_the_file_beside_it(tmp_path: Path) -> None:
    assert tiers_path_for(tmp_path / "features.json") == tmp_path / "tiers.json"
    assert tiers_path_for(tmp_path / "l9.json") == tmp_path / "l9.tiers.json"
    src = FeatureSet.load(EMBEDDED_FEATURES)
    features = tmp_path / "features.json"
    features.write_text(json.dumps(src.to_dict(src.sae_path)))
    derived = FeatureSet.load(features).tiers()  # no tiers file: the starting points
    assert set(derived) == {"off", "light", "medium", "strong"}
    recipes = {"light": TierRecipe(mode="ablate", gate=3.0, top_k=5), "strong": TierRecipe(mode="add", strength=-0.5)}
    write_tier_recipes(tiers_path_for(features), recipes, {"calibration": {"table": "..."}})
    loaded, extra = load_tier_recipes(tiers_path_for(features))
    assert loaded == recipes and extra == {"calibration": {"table": "..."}}
    fs = FeatureSet.load(features)
    tiers = fs.tiers()
    assert list(tiers) == ["off", "light", "strong"]
    assert tiers == recipe_presets(recipes, fs.features, fs.weights, fs.gate_thresholds, fs.typical_activation)
    assert len(tiers["light"]["interventions"]) == 5


def test_a_broken_tiers_file_is_an_error(tmp_path: Path) -> None:
    shutil.copy(EMBEDDED_FEATURES, tmp_path / "features.json")
    (tmp_path / "tiers.json").write_text(json.dumps({"format": "steergate-tiers/1", "tiers": {"x": {"mode": "zap"}}}))
    with pytest.raises(ValueError, match="tiers.json"):
        FeatureSet.load(tmp_path / "features.json")


@torch.no_grad()
def test_a_detector_gate_steers_the_real_model_where_the_detectors_token_logit_crosses_its_level() -> None:
    """The shipped SAE and detector on the real SmolLM2 (offline hooks, the middleware the engine runs):
    the gate opens exactly at the tokens whose per-token detector logit, computed here from the
    unhooked model's stream, is above the level."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fs = FeatureSet.load(EMBEDDED_FEATURES)
    layer, level = load_sae_config(fs.sae_path).hook_layer, -6.0
    preset = TierRecipe(mode="clamp", strength=-1.0, detector_gate=level, top_k=20).preset(
        fs.features, fs.weights, fs.gate_thresholds, fs.typical_activation, bias=fs.bias)
    mw = SAESteeringMiddleware(layer=layer, d_model=576, sae_path=fs.sae_path,
                               tiers={"off": {"interventions": [], "gate": None}, "gated": preset},
                               steer_positions="both")
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir(), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    text = ("Thanks for the lovely dinner, the soup was great. You are a pathetic worthless idiot and "
            "everyone hates you, shut up. See you next week at the market.")
    ids = torch.tensor([tokenizer(text).input_ids])  # (1, T)
    # hidden_states[L + 1] is decoder layer L's output, the stream the middleware reads and edits.
    h = model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0]  # (T, d)
    acts = mw.sae.encode_features(h, torch.tensor(fs.features)).clamp_min(0)  # (T, m)
    logit = fs.bias + torch.log1p(acts).double() @ torch.tensor(fs.weights, dtype=torch.float64)  # (T,)
    with attach(model, mw, [{"steering": {"tier": "gated"}}]) as session:
        model(input_ids=ids)
    steered = torch.tensor([t[STEERED] for t in session.tokens(0)]) > 0  # (T,)
    clear = (logit - level).abs() > 1e-3  # a token at the level itself may go either way in fp32
    assert torch.equal(steered[clear], (logit > level)[clear])
    assert 0 < int(steered.sum()) < len(steered)  # the test has teeth: some tokens open, some not
