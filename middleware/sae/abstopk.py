"""AbsTopK SAE, as SAELens' `AbsTopKSAE` (AbsTopK, ICLR 2026, arXiv:2510.00404).

Keeps the k pre-activations of largest magnitude with their sign (no ReLU), so one feature
can encode a direction and its opposite. Everything else is inherited from TopK.
"""

from __future__ import annotations

import torch

from .base import register_sae_class
from .topk import TopKSAE

__all__ = ["AbsTopKSAE"]


@register_sae_class
class AbsTopKSAE(TopKSAE):
    @classmethod
    def architecture(cls) -> str:
        return "abstopk"

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """(..., d_sae) -> (..., d_sae): the k entries of largest |pre|, signed, zero elsewhere."""
        indices = torch.topk(pre.abs(), k=self.k, dim=-1, sorted=False).indices  # (..., k)
        return torch.zeros_like(pre).scatter_(-1, indices, pre.gather(-1, indices))
