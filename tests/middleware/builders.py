"""Tiny CPU-sized SAEs with random weights for tests."""

from __future__ import annotations

from typing import Any

import torch

from middleware.sae import SAE, SAEConfig, sae_class_for

ARCHITECTURES = ("standard", "jumprelu", "topk", "abstopk")


def build_sae_cfg(arch: str = "standard", d_in: int = 16, d_sae: int = 32, **overrides: Any) -> SAEConfig:
    """An SAEConfig; topk-style architectures get k=4 unless overridden."""
    fields: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": d_sae,
        "architecture": arch,
        "k": 4 if arch in ("topk", "abstopk") else None,
        "hook_name": "blocks.3.hook_resid_post",
        "model_name": "tiny-model",
    }
    fields.update(overrides)
    return SAEConfig(**fields)


@torch.no_grad()
def build_sae(
    arch: str = "standard", d_in: int = 16, d_sae: int = 32, seed: int = 0, **overrides: Any
) -> SAE:
    """An SAE with seeded random weights: non-zero biases (so b_dec-on-input matters), some
    negative JumpReLU thresholds (so ReLU-before-jump matters)."""
    sae = sae_class_for(arch)(build_sae_cfg(arch, d_in, d_sae, **overrides))
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(sae.dtype)

    sae.W_enc.copy_(rand(d_in, d_sae) / d_in**0.5)
    sae.W_dec.copy_(rand(d_sae, d_in) / d_in**0.5)
    sae.b_enc.copy_(rand(d_sae) * 0.1)
    sae.b_dec.copy_(rand(d_in) * 0.1)
    if arch == "jumprelu":
        threshold = torch.rand(d_sae, generator=gen) * 0.8 - 0.2  # in [-0.2, 0.6)
        sae.get_parameter("threshold").copy_(threshold.to(sae.dtype))
    return sae


def build_inputs(n_tokens: int = 12, d_in: int = 16, seed: int = 1) -> torch.Tensor:
    """Residual-stream-like inputs (n_tokens, d_in)."""
    return torch.randn(n_tokens, d_in, generator=torch.Generator().manual_seed(seed))
