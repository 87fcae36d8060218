"""File names and format markers of the SAELens on-disk SAE format (sae_lens/constants.py)."""

import torch

__all__ = [
    "DTYPE_MAP",
    "DTYPE_TO_STR",
    "SAELENS_FORMAT_VERSION",
    "SAE_CFG_FILENAME",
    "SAE_WEIGHTS_FILENAME",
]

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"

# sae-lens decides whether a cfg.json needs its pre-6.0 migration by reading
# `metadata.sae_lens_version`; without it the nested metadata (hook_name, ...) is dropped.
# We write the first version of the format we follow, never claim a later one.
SAELENS_FORMAT_VERSION = "6.0.0"

# Both spellings occur in cfg.json files written by different SAELens releases.
DTYPE_MAP: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "torch.float32": torch.float32,
    "torch.float64": torch.float64,
    "torch.float16": torch.float16,
    "torch.bfloat16": torch.bfloat16,
}
DTYPE_TO_STR: dict[torch.dtype, str] = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}
