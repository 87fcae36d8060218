"""Read and write SAEs in the SAELens on-disk format: a directory with `cfg.json` +
`sae_weights.safetensors` (W_enc, W_dec, b_enc, b_dec, and threshold for JumpReLU).

Writes what SAELens >= 6 writes (`SAE.save_model`); reads that and the older flat configs
that SAELens migrates in `handle_pre_6_0_config` (hook_point, activation_fn_str, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .base import SAE, SAEConfig, layer_from_hook_name, sae_class_for
from .constants import DTYPE_MAP, DTYPE_TO_STR, SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, SAELENS_FORMAT_VERSION

__all__ = ["config_from_dict", "config_to_dict", "load_sae", "load_sae_config", "save_sae"]

# Pre-6.0 names of keys that SAELens renames on load.
_LEGACY_RENAMES = {
    "hook_point": "hook_name",
    "hook_point_layer": "hook_layer",
    "activation_fn_str": "activation_fn",
}
# Flat keys of pre-6.0 configs that SAELens >= 6 moves under `metadata` (its LLM_METADATA_KEYS).
_LEGACY_METADATA_KEYS = frozenset(
    {
        "model_class_name",
        "hook_head_index",
        "model_from_pretrained_kwargs",
        "prepend_bos",
        "exclude_special_tokens",
        "neuronpedia_id",
        "context_size",
        "seqpos_slice",
        "dataset_path",
        "sae_lens_version",
        "sae_lens_training_version",
        "hook_name_out",
        "hook_head_index_out",
        "hf_hook_name",
        "hf_hook_name_out",
    }
)
_TOPK_ARCHITECTURES = ("topk", "abstopk")


def _pop_either(metadata: dict[str, Any], flat: dict[str, Any], key: str, default: Any = None) -> Any:
    """Pop `key` from both dicts; the nested (>= 6.0) value wins over the flat (older) one."""
    nested, old = metadata.pop(key, None), flat.pop(key, None)
    return default if nested is None and old is None else (nested if nested is not None else old)


def _normalize_activations(value: Any) -> str:
    # Pre-6.0 configs stored a bool: True meant "expected_average_only_in".
    if value is None or value is False:
        return "none"
    if value is True:
        return "expected_average_only_in"
    return str(value)


def config_from_dict(raw: dict[str, Any]) -> SAEConfig:
    """SAEConfig from a parsed cfg.json, SAELens >= 6 (nested metadata) or older (flat)."""
    cfg = {_LEGACY_RENAMES.get(k, k): v for k, v in raw.items()}
    metadata = dict(cfg.pop("metadata", None) or {})
    for key in _LEGACY_METADATA_KEYS & cfg.keys():
        metadata.setdefault(key, cfg.pop(key))
    if "d_in" not in cfg or "d_sae" not in cfg:
        raise ValueError(f"{SAE_CFG_FILENAME} must give d_in and d_sae, got keys {sorted(raw)}")

    activation_fn = cfg.pop("activation_fn", None)
    fn_kwargs = cfg.pop("activation_fn_kwargs", None) or {}
    architecture = cfg.pop("architecture", None)
    if architecture is None:
        # Pre-6.0: the architecture was implied by the activation function.
        architecture = "topk" if activation_fn == "topk" else "standard"
    if architecture == "standard" and activation_fn not in (None, "relu"):
        raise ValueError(f"activation_fn={activation_fn!r} is not supported for standard SAEs (only 'relu')")
    k = cfg.pop("k", None)
    k = fn_kwargs.get("k") if k is None else k

    if cfg.pop("finetuning_scaling_factor", False):
        raise ValueError("finetuning_scaling_factor SAEs (SAELens < 6) are not supported")
    reshape = cfg.pop("reshape_activations", "none")
    if reshape != "none":
        raise ValueError(f"reshape_activations={reshape!r} (attention hook_z SAEs) is not supported")
    # The device an SAE was saved from says nothing about where to load it.
    cfg.pop("device", None)

    hook_name = _pop_either(metadata, cfg, "hook_name", default="")
    model_name = _pop_either(metadata, cfg, "model_name", default="")
    hook_layer = _pop_either(metadata, cfg, "hook_layer")
    return SAEConfig(
        d_in=int(cfg.pop("d_in")),
        d_sae=int(cfg.pop("d_sae")),
        architecture=architecture,
        k=None if k is None else int(k),
        apply_b_dec_to_input=bool(cfg.pop("apply_b_dec_to_input", True)),
        normalize_activations=_normalize_activations(cfg.pop("normalize_activations", None)),
        hook_name=hook_name,
        model_name=model_name,
        dtype=cfg.pop("dtype", None) or "float32",
        hook_layer=None if hook_layer is None else int(hook_layer),
        rescale_acts_by_decoder_norm=bool(cfg.pop("rescale_acts_by_decoder_norm", False)),
        metadata=metadata,
        extra=cfg,
    )


def _major_version(version: Any) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def config_to_dict(cfg: SAEConfig) -> dict[str, Any]:
    """The cfg.json that SAELens >= 6 would write for this config."""
    metadata = dict(cfg.metadata)
    major = _major_version(metadata.get("sae_lens_version"))
    if major is None or major < 6:
        # An older or missing version makes SAELens re-run its pre-6.0 migration, which
        # discards the nested metadata this file is written with.
        metadata["sae_lens_version"] = SAELENS_FORMAT_VERSION
    if cfg.hook_name:
        metadata["hook_name"] = cfg.hook_name
    if cfg.model_name:
        metadata["model_name"] = cfg.model_name
    if cfg.hook_layer is not None and cfg.hook_layer != layer_from_hook_name(cfg.hook_name):
        metadata["hook_layer"] = cfg.hook_layer
    out: dict[str, Any] = {
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": cfg.normalize_activations,
        "reshape_activations": "none",
        "metadata": metadata,
    }
    if cfg.architecture in _TOPK_ARCHITECTURES:
        out["k"] = cfg.k
        out["rescale_acts_by_decoder_norm"] = cfg.rescale_acts_by_decoder_norm
    out["architecture"] = cfg.architecture
    # Keys we do not interpret go first so that ours win on a clash.
    return {**cfg.extra, **out}


def _canonical_dtype(dtype: str | torch.dtype) -> str:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPE_TO_STR:
            raise ValueError(f"unsupported SAE dtype {dtype}")
        return DTYPE_TO_STR[dtype]
    if dtype not in DTYPE_MAP:
        raise ValueError(f"unknown SAE dtype {dtype!r}; expected one of {sorted(DTYPE_MAP)}")
    return DTYPE_TO_STR[DTYPE_MAP[dtype]]


def load_sae_config(path: str | Path) -> SAEConfig:
    """The SAEConfig of the SAE directory `path`, without reading its weights."""
    cfg_path = Path(path) / SAE_CFG_FILENAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no {SAE_CFG_FILENAME} in SAE directory {path}")
    with cfg_path.open() as f:
        return config_from_dict(json.load(f))


def load_sae(
    path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> SAE:
    """Load an SAE directory; weights are cast to `dtype` (default: the cfg.json dtype)."""
    cfg = load_sae_config(path)
    if dtype is not None:
        cfg.dtype = _canonical_dtype(dtype)
    weights_path = Path(path) / SAE_WEIGHTS_FILENAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"no {SAE_WEIGHTS_FILENAME} in SAE directory {path}")
    state = load_file(weights_path, device=str(device))
    # Older SAELens files carry an all-ones `scaling_factor`; SAELens drops it too.
    scaling = state.pop("scaling_factor", None)
    if scaling is not None and not torch.all(scaling == 1):
        raise ValueError("a non-trivial scaling_factor (SAELens < 6 fine-tuning) is not supported")

    # Built on the meta device so that no memory is spent on weights about to be replaced.
    with torch.device("meta"):
        sae = sae_class_for(cfg.architecture)(cfg)
    expected = {name: tuple(t.shape) for name, t in sae.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if expected != found:
        raise ValueError(
            f"{weights_path} does not fit a {cfg.architecture} SAE with d_in={cfg.d_in}, "
            f"d_sae={cfg.d_sae}: expected tensors {expected}, found {found}"
        )
    sae.load_state_dict({name: t.to(cfg.torch_dtype) for name, t in state.items()}, assign=True)
    return sae.eval()


def save_sae(sae: SAE, path: str | Path) -> None:
    """Write `cfg.json` + `sae_weights.safetensors` into directory `path` (created if needed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous() for name, t in sae.state_dict().items()}
    save_file(state, path / SAE_WEIGHTS_FILENAME)
    # The tensors may have been cast after loading (sae.to(...)); record what is on disk.
    cfg_dict = config_to_dict(sae.cfg)
    cfg_dict["dtype"] = DTYPE_TO_STR[sae.dtype]
    with (path / SAE_CFG_FILENAME).open("w") as f:
        json.dump(cfg_dict, f, indent=2)
