"""The labelled set's token activations at an SAE's layer: what `find-features` selects on and
`tier-gates` reads, loaded one way for both.

The sets are generated (or resumed) in the work directory (discovery/labelled.py), the model reads
every text once and its stream at the SAE's layer is cached there (discovery/activations.py: the
scored tokens of each text, attention sink left out), keyed by the layer and the texts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from discovery.activations import cached_activations, load_lm
from discovery.labelled import DataSpec, LabelledPaths, build_labelled, load_labelled
from discovery.splits import HELDOUT
from middleware.sae import SAE, load_sae

__all__ = ["LabelledActivations", "load_labelled_activations"]


@dataclass(frozen=True)
class LabelledActivations:
    model: Any
    tokenizer: Any
    paths: LabelledPaths
    texts: list[dict[str, Any]]  # discovery/labelled.py's records, N of them
    instructed: list[dict[str, Any]]  # every instructed output, kept or dropped (for the filter's table)
    sae: SAE  # fp32
    acts: torch.Tensor  # (tokens, d_model) fp16: the scored tokens of every text, text after text
    offsets: torch.Tensor  # (N + 1,): text i is acts[offsets[i] : offsets[i + 1]]
    labels: np.ndarray  # (N,) 1 toxic, 0 benign
    categories: np.ndarray  # (N,) str
    held: np.ndarray  # (N,) bool: the held-out split

    @property
    def layer(self) -> int:
        return int(self.sae.cfg.hook_layer)

    def text_acts(self, i: int) -> torch.Tensor:
        """(T_i, d_model) fp16: text i's scored tokens at the SAE's layer."""
        return self.acts[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, keep: np.ndarray, texts: list[dict[str, Any]]) -> LabelledActivations:
        """Only the texts `keep` (k,), whose records become `texts` (labels and categories read
        from them): e.g. the selection split under a reader's labels (discovery/review.py)."""
        pieces = [self.text_acts(int(i)) for i in keep]
        offsets = torch.tensor([0, *np.cumsum([len(p) for p in pieces]).tolist()], dtype=self.offsets.dtype)
        return replace(self, texts=texts, acts=torch.cat(pieces), offsets=offsets,
                       labels=np.array([t["label"] for t in texts]),
                       categories=np.array([t["category"] for t in texts]), held=self.held[keep])

    @torch.no_grad()
    def encode(self, i: int) -> torch.Tensor:
        """(T_i, d_sae): the SAE's feature activations on text i's scored tokens."""
        return self.sae.encode(self.text_acts(i).float())


def load_labelled_activations(model_dir: Path, work_dir: Path, data: DataSpec, sae_dir: str | Path
                              ) -> LabelledActivations:
    paths = build_labelled(model_dir, work_dir, data)
    model, tokenizer = load_lm(model_dir)
    texts, _, instructed = load_labelled(paths, tokenizer)
    sae = load_sae(sae_dir, dtype="float32")
    layer = sae.cfg.hook_layer
    if layer is None:
        raise ValueError(f"{sae_dir}/cfg.json names no layer (hook_name {sae.cfg.hook_name!r})")
    acts, offsets = cached_activations(model, tokenizer, [t["text"] for t in texts], layer,
                                       work_dir / f"acts_labelled_L{layer}.pt", "activations: labelled texts")
    return LabelledActivations(
        model=model, tokenizer=tokenizer, paths=paths, texts=texts, instructed=instructed, sae=sae,
        acts=acts, offsets=offsets, labels=np.array([t["label"] for t in texts]),
        categories=np.array([t["category"] for t in texts]),
        held=np.array([t["split"] == HELDOUT for t in texts]))
