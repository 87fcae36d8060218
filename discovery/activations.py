"""Residual-stream activations of a transformers causal LM, read off decoder layers by hooks.

What the engine's hook point sees at layer L (vLLM's hidden + residual after layer L) is what
transformers' decoder layer L returns; middleware/offline.py relies on the same equality.

Which tokens count: attention-mask 1, not a special token (chat-template markers), and not the
first token of a text. The first position is the model's attention sink, with a residual norm
tens of times the others; left in, it dominates SAE training and every max-over-tokens score.
The detector skips the same tokens (middleware/detection.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from middleware.offline import decoder_layers

__all__ = ["TextActivations", "cached_activations", "collect", "load_lm", "scored_token_mask"]

MAX_TOKENS_PER_TEXT = 128


def load_lm(model_dir: str | Path) -> tuple[nn.Module, Any]:
    """(model, tokenizer) in fp32 eval mode; the tokenizer pads on the right."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tokenizer


def scored_token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      special_ids: Sequence[int]) -> torch.Tensor:
    """(B, S) bool: the tokens that count (see module docstring). Right padding assumed."""
    mask = attention_mask.bool() & ~torch.isin(input_ids, torch.as_tensor(list(special_ids), dtype=torch.long))
    mask[:, 0] = False
    return mask


class TextActivations:
    """One text's activations: {layer: (n, d_model)} of its counted tokens, and their token ids (n,)."""

    def __init__(self, index: int, acts: dict[int, torch.Tensor], token_ids: torch.Tensor) -> None:
        self.index = index
        self.acts = acts
        self.token_ids = token_ids


class _StopForward(Exception):
    """Raised by the last needed hook: the layers above it are not worth running."""


@torch.no_grad()
def collect(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    batch_size: int = 32,
    max_tokens: int = MAX_TOKENS_PER_TEXT,
    progress: str | None = None,
) -> Iterator[TextActivations]:
    """Yield each text's activations after each of `layers` (`.index` says which text).

    Texts run in length-sorted batches (less padding), so they come out of order; the forward
    stops after the deepest requested layer.
    """
    layers = sorted(set(int(x) for x in layers))
    blocks = decoder_layers(model)
    special = tokenizer.all_special_ids
    captured: dict[int, torch.Tensor] = {}

    def hook(layer: int) -> Any:
        def fn(_: nn.Module, __: Any, output: Any) -> None:
            captured[layer] = output[0] if isinstance(output, tuple) else output  # (B, S, d)
            if layer == layers[-1]:
                raise _StopForward

        return fn

    handles = [blocks[layer].register_forward_hook(hook(layer)) for layer in layers]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    bar = tqdm(total=len(texts), desc=progress, unit="text", disable=progress is None)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_tokens, add_special_tokens=False)
            try:
                model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False)
            except _StopForward:
                pass
            mask = scored_token_mask(enc["input_ids"], enc["attention_mask"], special)  # (B, S)
            for row, i in enumerate(idx):
                m = mask[row]
                yield TextActivations(
                    i, {layer: captured[layer][row, m].clone() for layer in layers}, enc["input_ids"][row, m]
                )
            bar.update(len(idx))
    finally:
        bar.close()
        for h in handles:
            h.remove()


def cached_activations(model: Any, tokenizer: Any, texts: list[str], layer: int, path: Path,
                       desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(all tokens (N, d) fp16, offsets (len(texts) + 1,)) of `texts` at `layer`, cached at `path`."""
    key = hashlib.sha256(json.dumps([layer, texts]).encode()).hexdigest()
    if path.exists():
        cached = torch.load(path, weights_only=True)
        if cached["key"] == key:
            return cached["acts"], cached["offsets"]
    per_text: dict[int, torch.Tensor] = {}
    for item in collect(model, tokenizer, texts, [layer], progress=desc):
        per_text[item.index] = item.acts[layer].to(torch.float16)
    lengths = torch.tensor([per_text[i].shape[0] for i in range(len(texts))])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    acts = torch.cat([per_text[i] for i in range(len(texts))])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # atomic: another run may read the cache meanwhile
    torch.save({"key": key, "acts": acts, "offsets": offsets}, tmp)
    tmp.replace(path)
    return acts, offsets
