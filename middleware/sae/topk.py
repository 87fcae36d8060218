"""TopK SAE, as SAELens' `TopKSAE` (Gao et al. 2024): keep the k largest pre-activations, then ReLU.

With `rescale_acts_by_decoder_norm`, pre-activations are multiplied by the decoder row norms
before ranking and divided by them again when decoding, as in SAELens.
"""

from __future__ import annotations

import torch

from .base import SAE, SAEConfig, register_sae_class

__all__ = ["TopKSAE"]


@register_sae_class
class TopKSAE(SAE):
    """encode_features cannot be cheaper than encode here: whether a feature is among the
    top k depends on every pre-activation, so the inherited full-encoder path is used."""

    @classmethod
    def architecture(cls) -> str:
        return "topk"

    @classmethod
    def check_cfg(cls, cfg: SAEConfig) -> None:
        if cfg.k is None or not 0 < cfg.k <= cfg.d_sae:
            raise ValueError(f"{cls.architecture()} SAE needs 0 < k <= d_sae={cfg.d_sae}, got k={cfg.k}")

    @property
    def k(self) -> int:
        assert self.cfg.k is not None  # guaranteed by check_cfg
        return self.cfg.k

    def hidden_pre(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        pre = super().hidden_pre(x, idx)  # (..., d_sae) or (..., n)
        if not self.cfg.rescale_acts_by_decoder_norm:
            return pre
        norms = self.W_dec.norm(dim=-1)  # (d_sae,)
        return pre * (norms if idx is None else norms[idx])

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """(..., d_sae) -> (..., d_sae): ReLU of the k largest, zero elsewhere."""
        values, indices = torch.topk(pre, k=self.k, dim=-1, sorted=False)  # (..., k)
        return torch.zeros_like(pre).scatter_(-1, indices, values.relu())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.hidden_pre(x))

    def decoder_directions(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        rows = super().decoder_directions(idx)  # (d_sae or n, d_in)
        if not self.cfg.rescale_acts_by_decoder_norm:
            return rows
        return rows / rows.norm(dim=-1, keepdim=True)

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
        feature_acts = feature_acts.to(self.dtype)
        if self.cfg.rescale_acts_by_decoder_norm:
            # Same operation order as SAELens' act_times_W_dec, for bit-identical results.
            feature_acts = feature_acts * (1 / self.W_dec.norm(dim=-1))
        return feature_acts @ self.W_dec + self.b_dec
