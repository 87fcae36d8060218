"""middleware/sae: architecture formulas (as SAELens defines them) and the on-disk format."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from middleware.sae import (
    SAE,
    SAEConfig,
    StandardSAE,
    config_from_dict,
    layer_from_hook_name,
    load_sae,
    load_sae_config,
    register_sae_class,
    sae_class_for,
)
from tests.middleware.builders import ARCHITECTURES, build_inputs, build_sae


def _by_hand(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """Each architecture's encoder written out independently of the classes."""
    x_in = x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x
    pre = x_in @ sae.W_enc + sae.b_enc  # (T, d_sae)
    arch = sae.cfg.architecture
    if arch == "standard":
        return pre.clamp(min=0)
    if arch == "jumprelu":
        return torch.where(pre > sae.get_parameter("threshold"), pre.clamp(min=0), torch.zeros_like(pre))
    if sae.cfg.rescale_acts_by_decoder_norm:
        pre = pre * sae.W_dec.norm(dim=-1)
    out = torch.zeros_like(pre)
    for t in range(pre.shape[0]):
        key = pre[t] if arch == "topk" else pre[t].abs()
        keep = key.argsort(descending=True)[: sae.cfg.k]
        out[t, keep] = pre[t, keep].clamp(min=0) if arch == "topk" else pre[t, keep]
    return out


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_encode_matches_formula(arch: str, apply_b_dec: bool) -> None:
    sae = build_sae(arch, apply_b_dec_to_input=apply_b_dec)
    x = build_inputs()
    acts = sae.encode(x)
    assert acts.shape == (12, 32)
    assert_close(acts, _by_hand(sae, x))
    assert (acts != 0).any()


def test_topk_rescale_acts_by_decoder_norm_matches_formula() -> None:
    sae = build_sae("topk", rescale_acts_by_decoder_norm=True)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 3.0, 32)[:, None])  # uneven norms change the ranking
    x = build_inputs()
    acts = sae.encode(x)
    assert_close(acts, _by_hand(sae, x))
    assert_close(sae.decode(acts), (acts / sae.W_dec.norm(dim=-1)) @ sae.W_dec + sae.b_dec)
    assert_close(sae.decoder_directions(), sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True))


def test_topk_keeps_k_non_negative_and_abstopk_keeps_signs() -> None:
    x = build_inputs()
    topk, abstopk = build_sae("topk"), build_sae("abstopk")
    assert ((topk.encode(x) != 0).sum(-1) <= 4).all() and (topk.encode(x) >= 0).all()
    signed = abstopk.encode(x)
    assert ((signed != 0).sum(-1) == 4).all()
    assert (signed < 0).any(), "abstopk should keep negative activations"


def test_topk_relu_zeroes_negative_winners() -> None:
    sae = build_sae("topk")
    with torch.no_grad():
        sae.b_enc.sub_(10.0)  # every pre-activation < 0, so the k winners are all negative
    x = build_inputs()
    assert (sae.hidden_pre(x) < 0).all()
    assert (sae.encode(x) == 0).all()
    assert_close(sae.encode(x), _by_hand(sae, x))


def test_jumprelu_negative_threshold_lets_no_negative_activation_through() -> None:
    sae = build_sae("jumprelu")
    with torch.no_grad():
        sae.get_parameter("threshold").fill_(-10.0)
    acts = sae.encode(build_inputs())
    assert (acts >= 0).all()
    assert_close(acts, sae.hidden_pre(build_inputs()).clamp(min=0))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_decode_and_forward(arch: str) -> None:
    sae = build_sae(arch)
    x = build_inputs()
    f = sae.encode(x)
    assert_close(sae.decode(f), f @ sae.W_dec + sae.b_dec)
    assert_close(sae(x), sae.decode(f))
    assert sae.encode(x[None]).shape == (1, 12, 32), "leading dims pass through"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_encode_features_equals_full_encode_subset(arch: str) -> None:
    sae = build_sae(arch)
    x = build_inputs()
    idx = [5, 0, 31, 5]
    assert_close(sae.encode_features(x, idx), sae.encode(x)[:, idx])
    assert_close(sae.encode_features(x, torch.tensor(idx)), sae.encode(x)[:, idx])


@pytest.mark.parametrize("arch", ["standard", "jumprelu"])
def test_elementwise_architectures_skip_the_full_encoder(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sae = build_sae(arch)
    expected = sae.encode(build_inputs())[:, [3, 7]]

    def no_full_encode(x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("encode_features ran the full encoder")

    monkeypatch.setattr(sae, "encode", no_full_encode)
    assert_close(sae.encode_features(build_inputs(), [3, 7]), expected)


def test_reconstruction_error_and_fvu() -> None:
    sae = build_sae("standard")
    x = build_inputs()
    err = sae.reconstruction_error(x)
    assert err.shape == (12,)
    assert_close(err, ((sae(x) - x) ** 2).sum(-1))
    assert_close(sae.fraction_of_variance_unexplained(x), err.sum() / ((x - x.mean(0)) ** 2).sum())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_load_round_trip(arch: str, tmp_path: Path) -> None:
    sae = build_sae(arch, metadata={"neuronpedia_id": "tiny/3-res"}, extra={"trained_by": "tests"})
    sae.save(tmp_path)
    on_disk = json.loads((tmp_path / "cfg.json").read_text())
    assert on_disk["architecture"] == arch
    assert on_disk["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    assert on_disk["metadata"]["sae_lens_version"] == "6.0.0"
    assert ("k" in on_disk) == (arch in ("topk", "abstopk"))
    expected_keys = {"W_enc", "W_dec", "b_enc", "b_dec"} | ({"threshold"} if arch == "jumprelu" else set())
    assert set(load_file(tmp_path / "sae_weights.safetensors")) == expected_keys

    loaded = load_sae(tmp_path)
    assert type(loaded) is type(sae)
    # Saving stamps the SAELens format version; nothing else about the config changes.
    assert loaded.cfg == replace(sae.cfg, metadata={**sae.cfg.metadata, "sae_lens_version": "6.0.0"})
    for name, tensor in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert not loaded.W_enc.requires_grad
    x = build_inputs()
    assert torch.equal(loaded.encode(x), sae.encode(x))


def test_fp16_on_disk_loads_as_stored_or_as_requested(tmp_path: Path) -> None:
    sae = build_sae("jumprelu").to(torch.float16)
    sae.save(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["dtype"] == "float16"
    assert load_file(tmp_path / "sae_weights.safetensors")["W_enc"].dtype == torch.float16

    as_stored = load_sae(tmp_path)
    assert as_stored.dtype == torch.float16 and as_stored.cfg.dtype == "float16"
    as_fp32 = load_sae(tmp_path, dtype="float32")
    assert as_fp32.dtype == torch.float32 and as_fp32.cfg.dtype == "float32"
    assert torch.equal(as_fp32.W_enc, sae.W_enc.float())
    assert load_sae(tmp_path, dtype=torch.bfloat16).get_parameter("threshold").dtype == torch.bfloat16


def _write_legacy(path: Path, cfg: dict[str, object], d_in: int = 16, d_sae: int = 32) -> SAE:
    """A pre-6.0 SAELens directory with the weights of a fresh standard SAE."""
    sae = build_sae("standard", d_in, d_sae)
    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    state = {k: v.contiguous() for k, v in sae.state_dict().items()}
    save_file({**state, "scaling_factor": torch.ones(d_sae)}, path / "sae_weights.safetensors")
    return sae


def test_pre_6_topk_config_loads(tmp_path: Path) -> None:
    legacy = {
        "d_in": 16,
        "d_sae": 32,
        "hook_point": "blocks.7.hook_resid_pre",
        "hook_point_layer": 7,
        "model_name": "gpt2-small",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 3},
        "dtype": "torch.float32",
        "device": "cuda",
        "normalize_activations": False,
        "sae_lens_training_version": "3.13.0",
        "context_size": 128,
        "lr": 3e-4,
    }
    weights = _write_legacy(tmp_path, legacy)
    sae = load_sae(tmp_path)
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 3
    assert (sae.cfg.hook_name, sae.cfg.hook_layer, sae.cfg.model_name) == (
        "blocks.7.hook_resid_pre",
        7,
        "gpt2-small",
    )
    assert sae.cfg.dtype == "float32" and sae.cfg.normalize_activations == "none"
    assert sae.cfg.apply_b_dec_to_input is True
    assert sae.cfg.metadata["context_size"] == 128 and sae.cfg.extra == {"lr": 3e-4}
    assert torch.equal(sae.W_dec, weights.W_dec)


def test_pre_6_relu_config_defaults_to_standard(tmp_path: Path) -> None:
    _write_legacy(
        tmp_path,
        {
            "d_in": 16,
            "d_sae": 32,
            "hook_point": "blocks.2.hook_resid_post",
            "activation_fn_str": "relu",
            "apply_b_dec_to_input": False,
        },
    )
    cfg = load_sae_config(tmp_path)
    assert (cfg.architecture, cfg.hook_layer, cfg.apply_b_dec_to_input) == ("standard", 2, False)
    assert isinstance(load_sae(tmp_path), StandardSAE)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"d_in": 4, "d_sae": 8, "activation_fn_str": "tanh-relu"}, "activation_fn"),
        ({"d_in": 4, "d_sae": 8, "normalize_activations": "layer_norm"}, "normalize_activations"),
        ({"d_in": 4, "d_sae": 8, "normalize_activations": True}, "expected_average_only_in"),
        ({"d_in": 4, "d_sae": 8, "reshape_activations": "hook_z"}, "hook_z"),
        ({"d_in": 4, "d_sae": 8, "finetuning_scaling_factor": True}, "finetuning_scaling_factor"),
        ({"d_in": 4, "d_sae": 8, "dtype": "int8"}, "dtype"),
        ({"d_sae": 8}, "d_in"),
    ],
)
def test_unsupported_configs_raise(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict(raw)


def test_unknown_architecture_and_bad_k_raise() -> None:
    with pytest.raises(ValueError, match="unsupported SAE architecture 'gated'"):
        sae_class_for("gated")
    with pytest.raises(ValueError, match="k"):
        build_sae("topk", k=None)
    with pytest.raises(ValueError, match="k"):
        build_sae("abstopk", k=33)
    with pytest.raises(ValueError, match="architecture"):
        StandardSAE(SAEConfig(d_in=4, d_sae=8, architecture="jumprelu"))


def test_weights_that_do_not_fit_the_config_raise(tmp_path: Path) -> None:
    build_sae("standard").save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 64}))
    with pytest.raises(ValueError, match="does not fit"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "architecture": "jumprelu"}))
    with pytest.raises(ValueError, match="threshold"):
        load_sae(tmp_path)
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_sae(tmp_path / "missing")


def test_hook_layer_derived_or_kept(tmp_path: Path) -> None:
    assert layer_from_hook_name("blocks.15.hook_resid_post") == 15
    assert layer_from_hook_name("model.layers.15") == 15
    assert layer_from_hook_name("embed") is None
    sae = build_sae("standard", hook_name="resid_after_block", hook_layer=9)
    sae.save(tmp_path)
    assert load_sae_config(tmp_path).hook_layer == 9
    derived = build_sae("standard", hook_name="blocks.4.hook_resid_post")
    derived.save(tmp_path / "d")
    assert "hook_layer" not in json.loads((tmp_path / "d" / "cfg.json").read_text())["metadata"]


def test_register_sae_class_rejects_a_second_class_for_a_key() -> None:
    class OtherStandard(StandardSAE):
        pass

    assert register_sae_class(StandardSAE) is StandardSAE
    with pytest.raises(ValueError, match="already registered"):
        register_sae_class(OtherStandard)
