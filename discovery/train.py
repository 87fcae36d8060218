"""Train a TopK / AbsTopK SAE on stored residual-stream activations, on CPU, resumably.

Follows Gao et al. 2024 ("Scaling and evaluating sparse autoencoders"): k largest latents per
token, unit-norm decoder rows, decoder bias initialised at the data mean, an AuxK loss that
makes dead latents explain the residual error. AbsTopK (arXiv:2510.00404) keeps the k latents
of largest magnitude with their sign.

Inputs are scaled by one scalar so that E||x||^2 = d_in while training (a learning rate that
does not depend on the layer's norm); the scale is folded back into the biases on export, so
the shipped SAE reads the raw stream and its decoder rows stay unit-norm.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from middleware.sae import SAE, SAEConfig, sae_class_for

__all__ = ["TrainSpec", "TrainableSAE", "train_sae"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    architecture: str = "topk"  # "topk" or "abstopk"
    d_sae: int = 4096
    k: int = 32
    lr: float = 5e-4
    batch_tokens: int = 1024
    epochs: int = 4
    seed: int = 0
    aux_k: int = 256
    aux_coef: float = 1 / 32
    # A latent that has not fired for this many training tokens counts as dead (for AuxK).
    dead_after_tokens: int = 100_000
    checkpoint_every: int = 200


class TrainableSAE(nn.Module):
    """The training-time SAE (trainable parameters); `export` turns it into a frozen middleware SAE."""

    def __init__(self, d_in: int, spec: TrainSpec, b_dec_init: torch.Tensor) -> None:
        super().__init__()
        self.spec = spec
        w_dec = torch.randn(spec.d_sae, d_in)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)  # (d_sae, d_in)
        self.W_enc = nn.Parameter(w_dec.T.clone())  # (d_in, d_sae)
        self.b_enc = nn.Parameter(torch.zeros(spec.d_sae))
        self.b_dec = nn.Parameter(b_dec_init.clone().float())  # (d_in,)

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_in) -> pre-activations (B, d_sae)."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor, k: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d_sae) -> (B, d_sae): the k winning latents; `allowed` (d_sae,) bool restricts the race."""
        signed = self.spec.architecture == "abstopk"
        rank = pre.abs() if signed else pre
        if allowed is not None:
            rank = rank.masked_fill(~allowed, -math.inf)
        idx = torch.topk(rank, k=k, dim=-1, sorted=False).indices  # (B, k)
        vals = pre.gather(-1, idx)
        vals = vals if signed else vals.relu()
        if allowed is not None:
            vals = vals * allowed[idx]  # fewer than k allowed latents: the -inf fillers contribute 0
        return torch.zeros_like(pre).scatter(-1, idx, vals)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def export(self, scale: float, hook_layer: int, model_name: str) -> SAE:
        """A frozen SAE that reads the raw (unscaled) stream: acts/scale, biases/scale."""
        cfg = SAEConfig(
            d_in=self.W_dec.shape[1], d_sae=self.spec.d_sae, architecture=self.spec.architecture,
            k=self.spec.k, apply_b_dec_to_input=True, hook_name=f"blocks.{hook_layer}.hook_resid_post",
            model_name=model_name, dtype="float32",
        )
        with torch.device("meta"):
            sae = sae_class_for(cfg.architecture)(cfg)
        # f(s*x) = topk((s*x - b_dec) W_enc + b_enc) = s * topk((x - b_dec/s) W_enc + b_enc/s).
        state = {"W_enc": self.W_enc.detach().clone(), "W_dec": self.W_dec.detach().clone(),
                 "b_enc": self.b_enc.detach() / scale, "b_dec": self.b_dec.detach() / scale}
        sae.load_state_dict(state, assign=True)
        return sae.eval()


def _fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return (x_hat - x).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum().clamp_min(1e-8)


def train_sae(
    acts: torch.Tensor,
    spec: TrainSpec,
    *,
    hook_layer: int,
    model_name: str,
    checkpoint: str | Path | None = None,
) -> tuple[SAE, dict[str, Any]]:
    """Train on `acts` (N, d_in) for `spec.epochs`; resume from `checkpoint` when it exists.

    Returns the exported SAE and a training log (final losses, steps, input scale).
    """
    n, d_in = acts.shape
    torch.manual_seed(spec.seed)
    sample = acts[torch.randperm(n)[: min(n, 20_000)]].float()
    scale = float(math.sqrt(d_in / sample.pow(2).sum(dim=-1).mean()))
    model = TrainableSAE(d_in, spec, b_dec_init=sample.mean(dim=0) * scale)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, betas=(0.9, 0.999))
    steps_per_epoch = n // spec.batch_tokens
    total = steps_per_epoch * spec.epochs
    last_fired = torch.zeros(spec.d_sae, dtype=torch.long)  # training tokens seen when each latent last fired
    step, history = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["spec"] != asdict(spec) or state["n"] != n:
            raise ValueError(f"checkpoint {ckpt} is from a different run (spec or data changed); delete it")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        last_fired, step, history, scale = state["last_fired"], state["step"], state["history"], state["scale"]
        logger.info("resuming SAE training at step %d/%d", step, total)
    bar = tqdm(total=total, initial=step, desc=f"train-sae ({spec.architecture}, d_sae={spec.d_sae}, k={spec.k})",
               unit="step")
    while step < total:
        epoch, i = divmod(step, steps_per_epoch)
        # The permutation of an epoch depends only on (seed, epoch): a resumed run sees the same batches.
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed * 7919 + epoch))
        x = acts[perm[i * spec.batch_tokens : (i + 1) * spec.batch_tokens]].float() * scale  # (B, d_in)
        pre = model.pre(x)
        f = model.activate(pre, spec.k)
        x_hat = f @ model.W_dec + model.b_dec
        loss = _fvu(x, x_hat)
        seen = (step + 1) * spec.batch_tokens
        last_fired[(f != 0).any(dim=0)] = seen
        dead = (seen - last_fired) > spec.dead_after_tokens  # (d_sae,)
        aux = torch.zeros(())
        if dead.any():
            err = (x - x_hat).detach()
            e_hat = model.activate(pre, min(spec.aux_k, int(dead.sum())), allowed=dead) @ model.W_dec
            aux = _fvu(err, e_hat)
        opt.zero_grad(set_to_none=True)
        (loss + spec.aux_coef * aux).backward()
        opt.step()
        model.normalize_decoder()
        step += 1
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(fvu=f"{loss.item():.3f}", dead=f"{dead.float().mean().item():.2f}")
        if step % 100 == 0 or step == total:
            history.append({"step": step, "fvu": round(loss.item(), 4), "aux": round(float(aux), 4),
                            "dead_fraction": round(dead.float().mean().item(), 4)})
        if ckpt is not None and (step % spec.checkpoint_every == 0 or step == total):
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"spec": asdict(spec), "n": n, "model": model.state_dict(), "opt": opt.state_dict(),
                        "last_fired": last_fired, "step": step, "history": history, "scale": scale}, tmp)
            tmp.replace(ckpt)
    bar.close()
    log = {"steps": total, "tokens": n, "epochs": spec.epochs, "input_scale": scale, "history": history}
    return model.export(scale, hook_layer, model_name), log
