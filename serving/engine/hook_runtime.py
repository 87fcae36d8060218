"""Runs residual-stream middleware inside vLLM's forward pass, compiled graph included.

How it fits into vLLM (0.32, V1 engine):
- `install_layer_hooks` swaps the class of each hooked decoder layer for a subclass whose
  forward ends in `torch.ops.steergate.residual_hook(hidden, residual, layer)`. This happens
  right after the model is loaded and before vLLM compiles it, so the op is a node of the
  compiled graph (forward hooks registered on modules are not: the compiled graph ignores them).
- The op is opaque to the compiler (a Python custom op, like vLLM's own attention op), so at run
  time it calls back into `HookRuntime.apply` with real tensors.
- `HookRuntime.begin_step` runs before each model forward with the runner's view of the batch
  (request order, token spans, positions) and `end_step` after it ships the step's per-token
  side outputs to the serving process over the side channel.

The parameter names of the model do not change (the layer object stays, only its class is
swapped), so vLLM's weight loading is untouched.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from middleware.hooks import (
    REQUEST_ARGS_KEY,
    BatchLayout,
    ResidualMiddleware,
    load_middleware,
    route_side_outputs,
)
from serving.engine.side_channel import SideChannelSender

__all__ = ["HookRuntime", "install_layer_hooks", "get_runtime", "set_runtime"]

logger = logging.getLogger(__name__)


@torch.library.custom_op("steergate::residual_hook", mutates_args=())
def residual_hook(hidden: torch.Tensor, residual: torch.Tensor, layer: int) -> torch.Tensor:
    """Apply the middleware of `layer` to the stream (hidden + residual); returns the new hidden.

    hidden, residual: (T, d_model). vLLM's decoder layers return the stream split in two
    (the next layer's fused add-norm sums them), so an edit of the stream is an edit of hidden.
    """
    runtime = _RUNTIME
    if runtime is None:
        return hidden.clone()
    return runtime.apply(hidden, residual, layer)


@residual_hook.register_fake
def _residual_hook_fake(hidden: torch.Tensor, residual: torch.Tensor, layer: int) -> torch.Tensor:
    return torch.empty_like(hidden)


def _hooked_class(base: type[torch.nn.Module]) -> type[torch.nn.Module]:
    def forward(self: Any, positions: torch.Tensor, hidden_states: torch.Tensor, residual: Any, **kw: Any):
        hidden_states, residual = base.forward(self, positions, hidden_states, residual, **kw)
        hidden_states = torch.ops.steergate.residual_hook(hidden_states, residual, self.steergate_layer)
        return hidden_states, residual

    return type(f"SteergateHooked{base.__name__}", (base,), {"forward": forward})


def install_layer_hooks(model: torch.nn.Module, layers: list[int]) -> None:
    """Make decoder layers `layers` call the residual hook at the end of their forward."""
    decoder_layers = _find_decoder_layers(model)
    for idx in sorted(set(layers)):
        if not 0 <= idx < len(decoder_layers):
            raise ValueError(f"hook layer {idx} out of range: model has {len(decoder_layers)} layers")
        layer = decoder_layers[idx]
        layer.__class__ = _hooked_class(type(layer))
        layer.steergate_layer = idx
    logger.info("steergate: residual hooks installed after decoder layers %s", sorted(set(layers)))


def _find_decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    # vLLM's causal LMs keep their decoder stack at model.model.layers (Llama, Mistral, Qwen, Gemma...).
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise TypeError(f"cannot find decoder layers on {type(model).__name__} (expected model.model.layers)")
    return layers


class HookRuntime:
    """The middleware of one engine process and the batch layout of the step in flight."""

    def __init__(self, middleware: dict[int, list[ResidualMiddleware]], sender: SideChannelSender | None):
        self.middleware = middleware
        self.sender = sender
        self.layout: BatchLayout | None = None  # host tensors: routing reads them without a device wait
        self._device_layout: BatchLayout | None = None  # the same on the stream's device, once per step
        self._rids: dict[str, str] = {}  # engine request id -> steergate request id, this step
        # steergate request id -> engine request id -> token records of this step
        self._pending: dict[str, dict[str, dict[str, list[Any]]]] = {}

    @classmethod
    def from_config(cls, cfg: dict[str, Any], d_model: int) -> HookRuntime:
        """cfg: {"middleware": [{"cls": "mod:Class", "layer": int, "args": {...}}], "side_channel": addr}"""
        middleware: dict[int, list[ResidualMiddleware]] = {}
        for spec in cfg.get("middleware", []):
            mw_cls = load_middleware(spec["cls"])
            mw = mw_cls(layer=int(spec["layer"]), d_model=d_model, **spec.get("args", {}))
            middleware.setdefault(mw.layer, []).append(mw)
        address = cfg.get("side_channel")
        return cls(middleware, SideChannelSender(address) if address else None)

    @property
    def layers(self) -> list[int]:
        return sorted(self.middleware)

    def begin_step(self, runner: Any, input_ids: torch.Tensor | None) -> None:
        """Record which request owns each token of the step vLLM's runner is about to run.

        input_ids: (T_padded,) the step's input tokens (None when the model runs on embeddings).
        """
        batch = runner.input_batch
        num_reqs = batch.num_reqs
        req_ids = list(batch.req_ids[:num_reqs])
        qsl = runner.query_start_loc.cpu[: num_reqs + 1].tolist()
        computed = batch.num_computed_tokens_cpu[:num_reqs].tolist()
        states = [runner.requests[r] for r in req_ids]
        args = [((s.sampling_params.extra_args or {}).get(REQUEST_ARGS_KEY) or {}) if s.sampling_params else {}
                for s in states]
        self._rids = {r: a["rid"] for r, a in zip(req_ids, args, strict=True) if "rid" in a}
        self.layout = BatchLayout.from_spans(
            request_ids=req_ids,
            spans=list(zip(qsl[:-1], qsl[1:], strict=True)),
            start_positions=computed,
            prompt_lens=[s.num_prompt_tokens for s in states],
            request_args=args,
            # Left on the engine's device: on a GPU, a host copy would wait for the previous step.
            token_ids=None if input_ids is None else input_ids[: qsl[-1]].long(),
        )

    def end_step(self) -> None:
        self.layout = self._device_layout = None
        if self._pending and self.sender is not None:
            self.sender.send(self._pending)
        self._pending = {}

    def apply(self, hidden: torch.Tensor, residual: torch.Tensor, layer: int) -> torch.Tensor:
        layout = self.layout
        if layout is None or layout.num_tokens == 0:  # profiling / warm-up runs
            return hidden.clone()
        n = layout.num_tokens  # hidden may carry padding rows past n
        stream = hidden[:n] + residual[:n]  # (n, d_model)
        if self._device_layout is None:  # the first hooked layer of the step
            self._device_layout = layout.to(hidden.device)  # one copy per step, not one per use
        edited = stream
        for mw in self.middleware.get(layer, []):
            result = mw(edited, self._device_layout)
            if result.stream is not None:
                edited = result.stream
            for req_id, rec in route_side_outputs(layout, result.side_outputs).items():
                self._merge(req_id, rec)
        out = hidden.clone()
        if edited is not stream:
            # Add the difference rather than recomputing hidden = stream - residual: rows no
            # middleware touched get an exact +0 and stay bit-identical to an unhooked run.
            out[:n] += edited - stream
        return out

    def _merge(self, engine_request_id: str, rec: dict[str, list[Any]]) -> None:
        assert self.layout is not None
        rid = self._rids.get(engine_request_id)
        if rid is None:  # a request that did not come through steergate's server: nobody to tell
            return
        bucket = self._pending.setdefault(rid, {}).setdefault(engine_request_id, {})
        bucket.update(rec)  # several middleware of one step share positions/is_prompt


_RUNTIME: HookRuntime | None = None


def get_runtime() -> HookRuntime | None:
    return _RUNTIME


def set_runtime(runtime: HookRuntime | None) -> None:
    global _RUNTIME
    _RUNTIME = runtime
