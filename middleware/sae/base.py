"""SAE config and abstract base class, following SAELens (`sae_lens/saes/sae.py`).

One subclass per architecture (standard, jumprelu, topk, abstopk) registers itself under its
`architecture()` key, the string stored in `cfg.json`. Inference only: no training code.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .constants import DTYPE_MAP, DTYPE_TO_STR

__all__ = [
    "SAE",
    "SAEConfig",
    "layer_from_hook_name",
    "register_sae_class",
    "registered_architectures",
    "sae_class_for",
]

# SAELens can also rescale or layer-normalise inputs at run time; those make the steering
# deltas in interventions.py non-linear in the feature activations, so we refuse them.
SUPPORTED_NORMALIZATIONS = ("none",)

# Same rule as sae_lens.util.extract_layer_from_tlens_hook_name: the first `.<int>` segment
# followed by `.` or the end, so "blocks.15.hook_resid_post" and "model.layers.15" both give 15.
_LAYER_IN_HOOK_NAME = re.compile(r"\.(\d+)(?:\.|$)")


def layer_from_hook_name(hook_name: str) -> int | None:
    """The layer index named in a TransformerLens or HF-style hook name, or None."""
    match = _LAYER_IN_HOOK_NAME.search(hook_name)
    return None if match is None else int(match.group(1))


@dataclass
class SAEConfig:
    """What `cfg.json` says about an SAE, flattened from SAELens' config + metadata."""

    d_in: int
    d_sae: int
    architecture: str = "standard"
    # Number of active features; topk and abstopk only.
    k: int | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    hook_name: str = ""
    model_name: str = ""
    dtype: str = "float32"
    # Derived from hook_name when not given.
    hook_layer: int | None = None
    # SAELens TopK option: rank (and decode) activations as if decoder rows had unit norm.
    rescale_acts_by_decoder_norm: bool = False
    # The other `metadata` keys of cfg.json (sae_lens_version, neuronpedia_id, ...).
    metadata: dict[str, Any] = field(default_factory=dict)
    # Top-level cfg.json keys we do not interpret, written back unchanged on save.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.dtype not in DTYPE_MAP:
            raise ValueError(f"unknown SAE dtype {self.dtype!r}; expected one of {sorted(DTYPE_MAP)}")
        self.dtype = DTYPE_TO_STR[DTYPE_MAP[self.dtype]]
        if self.normalize_activations not in SUPPORTED_NORMALIZATIONS:
            raise ValueError(
                f"normalize_activations={self.normalize_activations!r} is not supported: only "
                f"{SUPPORTED_NORMALIZATIONS} (inputs used as-is). Fold any norm scaling factor into "
                "the weights first, as SAELens' fold_activation_norm_scaling_factor does."
            )
        if self.hook_layer is None:
            self.hook_layer = layer_from_hook_name(self.hook_name)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPE_MAP[self.dtype]


class SAE(nn.Module, ABC):
    """Sparse autoencoder: f = act(x' @ W_enc + b_enc), x_hat = f @ W_dec + b_dec.

    x' = x - b_dec when `cfg.apply_b_dec_to_input`, else x. Parameters are frozen
    (`requires_grad=False`): the gateway only runs inference.
    """

    W_enc: nn.Parameter  # (d_in, d_sae)
    W_dec: nn.Parameter  # (d_sae, d_in)
    b_enc: nn.Parameter  # (d_sae,)
    b_dec: nn.Parameter  # (d_in,)

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        if cfg.architecture != self.architecture():
            raise ValueError(
                f"{type(self).__name__} needs architecture {self.architecture()!r}, got {cfg.architecture!r}"
            )
        self.check_cfg(cfg)
        self.cfg = cfg
        d_in, d_sae, dtype = cfg.d_in, cfg.d_sae, cfg.torch_dtype
        self.W_enc = self._param(torch.empty(d_in, d_sae, dtype=dtype))
        self.W_dec = self._param(torch.empty(d_sae, d_in, dtype=dtype))
        self.b_enc = self._param(torch.zeros(d_sae, dtype=dtype))
        self.b_dec = self._param(torch.zeros(d_in, dtype=dtype))
        # SAELens' initialisation (tied encoder); real weights are loaded over it.
        nn.init.kaiming_uniform_(self.W_dec)
        with torch.no_grad():
            self.W_enc.copy_(self.W_dec.T)

    @staticmethod
    def _param(t: torch.Tensor) -> nn.Parameter:
        return nn.Parameter(t, requires_grad=False)

    @classmethod
    @abstractmethod
    def architecture(cls) -> str:
        """The `architecture` string of cfg.json."""

    @classmethod
    def check_cfg(cls, cfg: SAEConfig) -> None:
        """Raise ValueError for a config this architecture cannot run."""

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def process_input(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_in) -> (..., d_in): cast to the SAE dtype, subtract b_dec if configured."""
        x = x.to(self.dtype)
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def hidden_pre(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-activations (..., d_in) -> (..., d_sae), or (..., n) for the features `idx` (n,)."""
        x = self.process_input(x)
        if idx is None:
            return x @ self.W_enc + self.b_enc
        return x @ self.W_enc[:, idx] + self.b_enc[idx]

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_in) -> feature activations (..., d_sae)."""

    def encode_features(self, x: torch.Tensor, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Activations of the features `idx` only: (..., d_in) -> (..., n).

        Equal to `encode(x)[..., idx]`. Architectures whose activation is elementwise
        (standard, jumprelu) override this to multiply by the n needed encoder columns only;
        this default runs the full encoder, which top-k architectures need anyway.
        """
        return self.encode(x)[..., self._as_index(idx)]

    def decoder_directions(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """What one unit of each feature's activation adds to the reconstruction:
        (d_sae, d_in), or (n, d_in) for the features `idx` (n,)."""
        return self.W_dec if idx is None else self.W_dec[idx]

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
        """(..., d_sae) -> reconstruction (..., d_in)."""
        return feature_acts.to(self.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_in) -> reconstruction (..., d_in)."""
        return self.decode(self.encode(x))

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """Squared L2 reconstruction error per token: (..., d_in) -> (...,)."""
        return (self(x) - x.to(self.dtype)).pow(2).sum(dim=-1)

    def fraction_of_variance_unexplained(self, x: torch.Tensor) -> torch.Tensor:
        """FVU over a set of tokens (T, d_in) -> scalar: sum of squared errors / total variance."""
        x = x.to(self.dtype)
        total = (x - x.mean(dim=0, keepdim=True)).pow(2).sum()
        return self.reconstruction_error(x).sum() / total

    def save(self, path: str | Path) -> None:
        """Write `cfg.json` + `sae_weights.safetensors` (SAELens format) into directory `path`."""
        # format.py imports this module, so import it here rather than at the top.
        from .format import save_sae

        save_sae(self, path)

    def _as_index(self, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        return torch.as_tensor(idx, dtype=torch.long, device=self.device)


_SAE_CLASSES: dict[str, type[SAE]] = {}


def register_sae_class(sae_class: type[SAE]) -> type[SAE]:
    """Register `sae_class` under its `architecture()` key; usable as a class decorator."""
    key = sae_class.architecture()
    known = _SAE_CLASSES.get(key)
    if known is not None and known is not sae_class:
        raise ValueError(f"architecture {key!r} is already registered to {known.__name__}")
    _SAE_CLASSES[key] = sae_class
    return sae_class


def sae_class_for(architecture: str) -> type[SAE]:
    """The SAE class registered for `architecture`; ValueError naming the known ones otherwise."""
    try:
        return _SAE_CLASSES[architecture]
    except KeyError:
        raise ValueError(
            f"unsupported SAE architecture {architecture!r}; supported: {registered_architectures()}"
        ) from None


def registered_architectures() -> list[str]:
    return sorted(_SAE_CLASSES)
