"""Run residual-stream middleware on a plain transformers causal LM, by forward hooks.

For training and eval tools: the same middleware the engine runs inside vLLM (middleware/hooks.py)
edits the output of decoder layer `layer` of a Hugging Face model, i.e. the stream transformers
reports as `hidden_states[layer + 1]` and vLLM's hooked layer sees as hidden + residual.

A padded batch (B, S) is laid out like an engine step: the real tokens (attention mask 1) of
each row, in order, become one contiguous span of a flat (N, d_model) stream; padding tokens
are neither shown to the middleware nor changed. Positions count real tokens from the start of
the row (left or right padding alike), so a token is a prompt token when its position is below
the row's prompt length. Works with `generate` and a KV cache: later forwards see only the new
tokens and the full attention mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from middleware.hooks import BatchLayout, HookResult, ResidualMiddleware

__all__ = ["OfflineSession", "attach", "decoder_layers"]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder stack of a transformers causal LM (model.model.layers) or base model (.layers)."""
    for owner in (getattr(model, "model", None), model):
        layers = getattr(owner, "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise TypeError(f"cannot find decoder layers on {type(model).__name__} (expected model.model.layers)")


class OfflineSession:
    """The state of one `attach`: the current forward's layout and the side outputs so far."""

    def __init__(
        self,
        middleware: Sequence[ResidualMiddleware],
        request_args: Sequence[Mapping[str, Any]],
        prompt_lens: Sequence[int] | None,
    ) -> None:
        self.middleware = list(middleware)
        self.request_args = [dict(a) for a in request_args]
        self.prompt_lens: list[int] | None = None if prompt_lens is None else [int(n) for n in prompt_lens]
        if self.prompt_lens is not None and len(self.prompt_lens) != len(self.request_args):
            raise ValueError(f"{len(self.prompt_lens)} prompt lengths for {len(self.request_args)} sequences")
        self.layout: BatchLayout | None = None  # of the forward in flight (or the last one)
        self._real: torch.Tensor | None = None  # (N,) flat indices into (B * S) of the real tokens
        # Per sequence: position -> {"is_prompt": bool, <side output>: value}; a later forward
        # over the same position (generate without a cache) overwrites it.
        self._records: list[dict[int, dict[str, Any]]] = [{} for _ in self.request_args]

    def tokens(self, seq: int) -> list[dict[str, Any]]:
        """Sequence `seq`'s token records [{"position", "is_prompt", <side output>: value}],
        in the shape `ResidualMiddleware.annotate` takes."""
        return [{"position": p, **rec} for p, rec in sorted(self._records[seq].items())]

    def side_outputs(self, seq: int, name: str) -> list[Any]:
        """The values of side output `name` for sequence `seq`, in position order."""
        return [rec[name] for _, rec in sorted(self._records[seq].items()) if name in rec]

    def begin_forward(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
    ) -> None:
        """Lay out the forward about to run: input_ids (B, S) or inputs_embeds (B, S, d),
        attention_mask (B, M) with M >= S, the last S columns being this forward's tokens."""
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref is None:
            raise ValueError("the model was called without input_ids or inputs_embeds")
        n_seq, n_new = int(ref.shape[0]), int(ref.shape[1])
        if n_seq != len(self.request_args):
            raise ValueError(
                f"batch has {n_seq} sequences, but attach got {len(self.request_args)} request args"
            )
        mask = (
            torch.ones(n_seq, n_new, dtype=torch.long)
            if attention_mask is None
            else attention_mask.cpu().long()
        )
        if mask.shape[1] < n_new:
            raise ValueError(f"attention mask covers {mask.shape[1]} tokens, the input has {n_new}")
        if self.prompt_lens is None:  # the first forward is the prompt
            self.prompt_lens = mask.sum(dim=-1).tolist()
        positions = (mask.cumsum(dim=-1) - 1)[:, -n_new:].reshape(-1)  # (B * S,)
        real = mask[:, -n_new:].reshape(-1).bool()  # (B * S,)
        idx = real.nonzero().squeeze(-1)  # (N,)
        token_request = torch.arange(n_seq).repeat_interleave(n_new)[idx]  # (N,)
        token_positions = positions[idx]  # (N,)
        token_ids = None if input_ids is None else input_ids.reshape(-1).cpu()[idx]  # (N,)
        self._real = idx
        self.layout = BatchLayout(
            request_ids=[str(b) for b in range(n_seq)],
            request_args=self.request_args,
            prompt_lens=list(self.prompt_lens),
            token_request=token_request,
            positions=token_positions,
            is_prompt=token_positions < torch.tensor(self.prompt_lens)[token_request],
            token_ids=token_ids,
        )

    def apply(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, S, d) output of decoder layer `layer` -> the edited (B, S, d)."""
        layout, idx = self.layout, self._real
        assert layout is not None and idx is not None, "begin_forward runs first"
        n_seq, n_new, d_model = hidden.shape
        flat = hidden.reshape(n_seq * n_new, d_model)  # (B * S, d)
        dev_idx = idx.to(hidden.device)
        stream = flat[dev_idx]  # (N, d)
        edited = stream
        for mw in self.middleware:
            if mw.layer != layer:
                continue
            result: HookResult = mw(edited, layout)
            if result.stream is not None:
                edited = result.stream
            self._record(layout, result.side_outputs)
        if edited is stream:
            return hidden
        out = flat.clone()
        out[dev_idx] = edited.to(hidden.dtype)
        return out.reshape(n_seq, n_new, d_model)

    def _record(self, layout: BatchLayout, side_outputs: dict[str, torch.Tensor]) -> None:
        if not side_outputs:
            return
        rows = layout.token_request.tolist()
        positions = layout.positions.tolist()
        is_prompt = layout.is_prompt.tolist()
        values = {name: t.detach().cpu().tolist() for name, t in side_outputs.items()}
        for t, (r, p) in enumerate(zip(rows, positions, strict=True)):
            rec = self._records[r].setdefault(p, {})
            rec["is_prompt"] = is_prompt[t]
            for name, vals in values.items():
                rec[name] = vals[t]


@contextmanager
def attach(
    model: nn.Module,
    middleware: ResidualMiddleware | Sequence[ResidualMiddleware],
    request_args: Sequence[Mapping[str, Any]],
    prompt_lens: Sequence[int] | None = None,
) -> Iterator[OfflineSession]:
    """Hook `middleware` into `model` for a batch whose sequence b has request args
    `request_args[b]` (e.g. {"steering": {"tier": "light"}}).

    prompt_lens: real (non-padding) prompt tokens per sequence; default: all the real tokens of
    the first forward (right for `generate`; pass it when scoring prompt + completion at once).
    """
    mws = [middleware] if isinstance(middleware, ResidualMiddleware) else list(middleware)
    layers = decoder_layers(model)
    session = OfflineSession(mws, request_args, prompt_lens)

    def before_model(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        input_ids = kwargs.get("input_ids")
        if input_ids is None and args and isinstance(args[0], torch.Tensor):
            input_ids = args[0]
        session.begin_forward(input_ids, kwargs.get("inputs_embeds"), kwargs.get("attention_mask"))

    def after_layer(layer: int) -> Any:
        def hook(_: nn.Module, __: Any, output: Any) -> Any:
            # transformers 5 decoder layers return the hidden states; older ones a tuple.
            hidden = output[0] if isinstance(output, tuple) else output
            new = session.apply(layer, hidden)
            if new is hidden:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    handles = [model.register_forward_pre_hook(before_model, with_kwargs=True)]
    try:
        for layer in sorted({mw.layer for mw in mws}):
            if not 0 <= layer < len(layers):
                raise ValueError(f"middleware layer {layer} out of range: the model has {len(layers)} layers")
            # Prepended, so hooks that transformers installs to record `hidden_states` (and any
            # other hook) see the edited stream, as the next layer does.
            handles.append(layers[layer].register_forward_hook(after_layer(layer), prepend=True))
        yield session
    finally:
        for handle in handles:
            handle.remove()
