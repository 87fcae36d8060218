"""middleware/sae against the real sae-lens package: files written by either load in the other
and compute the same activations. Skipped where sae-lens is not installed (it is not a
dependency of steergate; run this in a venv that has it)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.testing import assert_close

from middleware.sae import SAE, load_sae
from tests.middleware.builders import build_inputs, build_sae

sae_lens = pytest.importorskip("sae_lens")
from sae_lens.saes.sae import SAEMetadata  # noqa: E402

HOOK = "blocks.3.hook_resid_post"
# Architectures both implement, with the sae-lens class names (abstopk only in newer releases).
_SAELENS_CLASSES = {
    "standard": "StandardSAE",
    "jumprelu": "JumpReLUSAE",
    "topk": "TopKSAE",
    "abstopk": "AbsTopKSAE",
}
ARCHS = [a for a, name in _SAELENS_CLASSES.items() if hasattr(sae_lens, name)]


def _saelens_sae(arch: str, dtype: str = "float32", **cfg_fields: Any) -> Any:
    """A sae-lens SAE of `arch` with seeded random weights (non-zero biases and thresholds)."""
    name = _SAELENS_CLASSES[arch]
    sae_cls, cfg_cls = getattr(sae_lens, name), getattr(sae_lens, name + "Config")
    if arch in ("topk", "abstopk"):
        cfg_fields.setdefault("k", 4)
    metadata = SAEMetadata(hook_name=HOOK, model_name="tiny-model")
    sae = sae_cls(cfg_cls(d_in=16, d_sae=32, dtype=dtype, metadata=metadata, **cfg_fields))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            values = torch.randn(param.shape, generator=gen) * 0.3
            param.copy_(values * 0.5 if name == "threshold" else values)  # some < 0
    return sae


def _assert_same_function(ours: SAE, theirs: Any, dtype: torch.dtype = torch.float32) -> None:
    x = build_inputs().to(dtype)
    with torch.no_grad():
        acts = theirs.encode(x)
        assert (acts != 0).any()
        assert_close(ours.encode(x), acts)
        assert_close(ours.decode(acts), theirs.decode(acts))
        assert_close(ours(x), theirs(x))


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("arch", ARCHS)
def test_saelens_files_load_in_ours(arch: str, tmp_path: Path) -> None:
    theirs = _saelens_sae(arch)
    theirs.save_model(tmp_path)
    ours = load_sae(tmp_path)
    assert ours.cfg.architecture == arch
    assert (ours.cfg.hook_name, ours.cfg.hook_layer, ours.cfg.model_name) == (HOOK, 3, "tiny-model")
    assert ours.cfg.k == getattr(theirs.cfg, "k", None)
    _assert_same_function(ours, theirs)


@pytest.mark.parametrize("arch", ARCHS)
def test_our_files_load_in_saelens(arch: str, tmp_path: Path) -> None:
    ours = build_sae(arch, hook_name=HOOK)
    ours.save(tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    assert type(theirs).__name__ == _SAELENS_CLASSES[arch]
    assert theirs.cfg.metadata.hook_name == HOOK
    assert theirs.cfg.metadata.model_name == "tiny-model"
    assert theirs.cfg.apply_b_dec_to_input is True
    _assert_same_function(ours, theirs)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a in ("topk", "abstopk")])
def test_rescale_acts_by_decoder_norm_both_ways(arch: str, tmp_path: Path) -> None:
    theirs = _saelens_sae(arch, rescale_acts_by_decoder_norm=True)
    theirs.save_model(tmp_path / "theirs")
    ours = load_sae(tmp_path / "theirs")
    assert ours.cfg.rescale_acts_by_decoder_norm
    _assert_same_function(ours, theirs)
    ours.save(tmp_path / "ours")
    _assert_same_function(ours, sae_lens.SAE.load_from_disk(tmp_path / "ours"))


def test_fp16_saelens_file_loads_as_fp32(tmp_path: Path) -> None:
    theirs = _saelens_sae("jumprelu", dtype="float16")
    theirs.save_model(tmp_path)
    ours = load_sae(tmp_path, dtype="float32")
    assert ours.dtype == torch.float32
    assert torch.equal(ours.W_enc, theirs.W_enc.float())
    _assert_same_function(ours, sae_lens.SAE.load_from_disk(tmp_path, dtype="float32"))


def test_apply_b_dec_to_input_false_both_ways(tmp_path: Path) -> None:
    theirs = _saelens_sae("standard", apply_b_dec_to_input=False)
    theirs.save_model(tmp_path / "theirs")
    ours = load_sae(tmp_path / "theirs")
    assert ours.cfg.apply_b_dec_to_input is False
    _assert_same_function(ours, theirs)
    ours.save(tmp_path / "ours")
    _assert_same_function(ours, sae_lens.SAE.load_from_disk(tmp_path / "ours"))


def test_pre_6_config_reads_the_same_in_both(tmp_path: Path) -> None:
    ours = build_sae("topk", k=3, hook_name=HOOK)
    ours.save(tmp_path)
    legacy = {
        "d_in": 16,
        "d_sae": 32,
        "hook_point": "blocks.5.hook_resid_pre",
        "hook_point_layer": 5,
        "model_name": "gpt2-small",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 3},
        "dtype": "float32",
        "device": "cpu",
        "normalize_activations": False,
        "sae_lens_training_version": "3.13.0",
    }
    (tmp_path / "cfg.json").write_text(json.dumps(legacy))
    ours_legacy = load_sae(tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    assert type(theirs).__name__ == "TopKSAE" and theirs.cfg.k == ours_legacy.cfg.k == 3
    assert theirs.cfg.metadata.hook_name == ours_legacy.cfg.hook_name == "blocks.5.hook_resid_pre"
    _assert_same_function(ours_legacy, theirs)
