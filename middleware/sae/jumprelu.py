"""JumpReLU SAE, as SAELens' `JumpReLUSAE` (Rajamanoharan et al. 2024, Gemma Scope).

f = relu(pre) * (pre > threshold), pre = x' @ W_enc + b_enc: SAELens applies the ReLU first
and then the jump, so a negative threshold still never lets a negative activation through.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import SAE, SAEConfig, register_sae_class

__all__ = ["JumpReLUSAE"]


@register_sae_class
class JumpReLUSAE(SAE):
    threshold: nn.Parameter  # (d_sae,)

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__(cfg)
        self.threshold = self._param(torch.zeros(cfg.d_sae, dtype=cfg.torch_dtype))

    @classmethod
    def architecture(cls) -> str:
        return "jumprelu"

    @staticmethod
    def _jump(pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        # (..., n), (n,) -> (..., n)
        return torch.relu(pre) * (pre > threshold).to(pre.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._jump(self.hidden_pre(x), self.threshold)  # (..., d_sae)

    def encode_features(self, x: torch.Tensor, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        # The jump is elementwise, so only the n requested encoder columns are needed.
        idx = self._as_index(idx)
        return self._jump(self.hidden_pre(x, idx), self.threshold[idx])  # (..., n)
