"""Standard (ReLU) SAE, as SAELens' `StandardSAE`: f = relu(x' @ W_enc + b_enc)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import SAE, register_sae_class

__all__ = ["StandardSAE"]


@register_sae_class
class StandardSAE(SAE):
    @classmethod
    def architecture(cls) -> str:
        return "standard"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden_pre(x))  # (..., d_sae)

    def encode_features(self, x: torch.Tensor, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        # ReLU is elementwise, so only the n requested encoder columns are needed.
        return torch.relu(self.hidden_pre(x, self._as_index(idx)))  # (..., n)
