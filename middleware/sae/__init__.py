"""Sparse autoencoders in the SAELens format: one class per architecture over a shared base."""

from .abstopk import AbsTopKSAE
from .base import (
    SAE,
    SAEConfig,
    layer_from_hook_name,
    register_sae_class,
    registered_architectures,
    sae_class_for,
)
from .format import config_from_dict, config_to_dict, load_sae, load_sae_config, save_sae
from .jumprelu import JumpReLUSAE
from .standard import StandardSAE
from .topk import TopKSAE

__all__ = [
    "SAE",
    "AbsTopKSAE",
    "JumpReLUSAE",
    "SAEConfig",
    "StandardSAE",
    "TopKSAE",
    "config_from_dict",
    "config_to_dict",
    "layer_from_hook_name",
    "load_sae",
    "load_sae_config",
    "register_sae_class",
    "registered_architectures",
    "sae_class_for",
    "save_sae",
]
