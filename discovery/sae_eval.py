"""How good an SAE is as a stand-in for the layer it reads: the metrics on its model card.

- FVU: fraction of variance unexplained, sum ||x - x_hat||^2 / sum ||x - mean||^2 over tokens.
- L0: mean number of active latents per token.
- dead fraction: latents that never fire on the evaluation tokens.
- delta loss: increase in next-token cross-entropy when the SAE's reconstruction replaces the
  layer output (at the counted tokens, see activations.py), versus the clean model; with the
  zero-ablation increase beside it for scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from discovery.activations import MAX_TOKENS_PER_TEXT, scored_token_mask
from middleware.offline import decoder_layers
from middleware.sae import SAE

__all__ = ["reconstruction_metrics", "spliced_loss"]


@torch.no_grad()
def reconstruction_metrics(sae: SAE, acts: torch.Tensor, batch: int = 4096) -> dict[str, float]:
    """FVU, L0 and dead fraction of `sae` on activations (N, d_in)."""
    sq_err, l0 = 0.0, 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for start in range(0, acts.shape[0], batch):
        x = acts[start : start + batch].float()
        f = sae.encode(x)  # (b, d_sae)
        sq_err += (sae.decode(f) - x).pow(2).sum().item()
        l0 += (f != 0).sum().item()
        fired |= (f != 0).any(dim=0)
    x = acts.float()
    total = (x - x.mean(dim=0)).pow(2).sum().item()
    n = acts.shape[0]
    return {"fvu": sq_err / total, "l0": l0 / n, "dead_fraction": 1.0 - fired.float().mean().item(),
            "tokens": n}


@torch.no_grad()
def spliced_loss(model: nn.Module, tokenizer: Any, sae: SAE, layer: int, texts: Sequence[str],
                 batch_size: int = 16) -> dict[str, float]:
    """Mean next-token loss: clean, with layer `layer` replaced by the SAE's reconstruction, and
    zero-ablated, over the counted tokens' predictions."""
    block = decoder_layers(model)[layer]
    mode: dict[str, Any] = {"kind": "clean", "mask": None}

    def hook(_: nn.Module, __: Any, output: Any) -> Any:
        if mode["kind"] == "clean":
            return None
        hidden = output[0] if isinstance(output, tuple) else output  # (B, S, d)
        mask = mode["mask"]  # (B, S)
        new = hidden.clone()
        new[mask] = sae(hidden[mask]).to(hidden.dtype) if mode["kind"] == "sae" else 0.0
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = block.register_forward_hook(hook)
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    count = 0
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="delta loss", unit="batch"):
            enc = tokenizer(list(texts[start : start + batch_size]), return_tensors="pt", padding=True,
                            truncation=True, max_length=MAX_TOKENS_PER_TEXT, add_special_tokens=False)
            ids, attn = enc["input_ids"], enc["attention_mask"]
            mask = scored_token_mask(ids, attn, tokenizer.all_special_ids)  # (B, S)
            # Loss on predicting token t+1 from position t, for counted positions t with a next token.
            target_ok = mask[:, :-1] & attn[:, 1:].bool()
            count += int(target_ok.sum())
            for kind in sums:
                mode.update(kind=kind, mask=mask)
                logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits  # (B, S, V)
                ce = nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
                sums[kind] += ce[target_ok].sum().item()
    finally:
        handle.remove()
    clean, spliced, zero = (sums[k] / max(count, 1) for k in ("clean", "sae", "zero"))
    return {"loss_clean": clean, "loss_spliced": spliced, "loss_zero_ablated": zero,
            "delta_loss": spliced - clean,
            # 1.0: as good as the clean model; 0.0: no better than deleting the layer's output.
            "loss_recovered": (zero - spliced) / (zero - clean) if zero != clean else float("nan")}
