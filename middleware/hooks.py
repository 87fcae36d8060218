"""The residual-stream hook point: what a middleware sees and returns inside the forward pass.

The engine flattens every scheduled token of every request in a step into one batch of
T tokens. After the configured decoder layer, each middleware gets the residual stream of
that batch plus a `BatchLayout` saying which token belongs to which request, at which
position, and whether it is a prompt or a generated token. It may return an edited stream
and per-token side outputs (e.g. toxicity scores); the engine routes each token's side
outputs back to its own request's response.

This module is pure torch: the same middleware runs inside vLLM (serving/engine/) and on a
plain transformers model by hooks (offline tools and tests).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "BatchLayout",
    "HookResult",
    "ResidualMiddleware",
    "load_middleware",
    "route_side_outputs",
    "to_device",
    "REQUEST_ARGS_KEY",
]

# Per-request middleware arguments travel in SamplingParams.extra_args under this key.
REQUEST_ARGS_KEY = "steergate"


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`. From the host to a GPU the copy goes through pinned memory and does not
    block: a plain copy of a host tensor makes the host wait for the GPU's queue, which a step
    inside the forward pass must not do (the rest of the forward would be launched late)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=t.is_pinned())


@dataclass(frozen=True)
class BatchLayout:
    """Which request owns each of the T tokens of a flattened step batch.

    Padding tokens (engines may pad T for kernels) have `token_request == -1`.
    """

    request_ids: list[str]  # engine request id, batch order; (R,)
    request_args: list[dict[str, Any]]  # extra_args[REQUEST_ARGS_KEY] of each request; (R,)
    prompt_lens: list[int]  # (R,)
    token_request: torch.Tensor  # (T,) long: index into request_ids, -1 for padding
    positions: torch.Tensor  # (T,) long: absolute position of the token in its sequence
    is_prompt: torch.Tensor  # (T,) bool: position < prompt length
    token_ids: torch.Tensor | None = None  # (T,) long: the input token at each position, when known

    @property
    def num_tokens(self) -> int:
        return int(self.token_request.shape[0])

    def spans(self) -> list[tuple[int, int]]:
        """[start, end) token range of each request; requests are contiguous in the batch."""
        out: list[tuple[int, int]] = []
        counts = torch.bincount(self.token_request[self.token_request >= 0], minlength=len(self.request_ids))
        start = 0
        for n in counts.tolist():
            out.append((start, start + n))
            start += n
        return out

    def to(self, device: torch.device) -> BatchLayout:
        """The same layout with its tensors on `device` (itself when they are already there)."""
        if self.token_request.device == device:
            return self
        return BatchLayout(self.request_ids, self.request_args, self.prompt_lens,
                           to_device(self.token_request, device), to_device(self.positions, device),
                           to_device(self.is_prompt, device),
                           None if self.token_ids is None else to_device(self.token_ids, device))

    @staticmethod
    def from_spans(
        request_ids: list[str],
        spans: list[tuple[int, int]],
        start_positions: list[int],
        prompt_lens: list[int],
        request_args: list[dict[str, Any]] | None = None,
        num_tokens: int | None = None,
        token_ids: torch.Tensor | None = None,
    ) -> BatchLayout:
        """Build a layout from contiguous per-request spans (how vLLM lays out a step)."""
        total = num_tokens if num_tokens is not None else (spans[-1][1] if spans else 0)
        token_request = torch.full((total,), -1, dtype=torch.long)
        positions = torch.zeros(total, dtype=torch.long)
        is_prompt = torch.zeros(total, dtype=torch.bool)
        for r, ((s, e), p0, plen) in enumerate(zip(spans, start_positions, prompt_lens, strict=True)):
            token_request[s:e] = r
            positions[s:e] = torch.arange(p0, p0 + (e - s))
            is_prompt[s:e] = positions[s:e] < plen
        return BatchLayout(
            request_ids=list(request_ids),
            request_args=request_args if request_args is not None else [{} for _ in request_ids],
            prompt_lens=list(prompt_lens),
            token_request=token_request,
            positions=positions,
            is_prompt=is_prompt,
            token_ids=token_ids,
        )


@dataclass
class HookResult:
    """What a middleware returns for one step.

    stream: the edited residual stream (T, d_model), or None to leave it unchanged.
    side_outputs: per-token values, each tensor (T,) or (T, k), routed to the owning request.
    """

    stream: torch.Tensor | None = None
    side_outputs: dict[str, torch.Tensor] = field(default_factory=dict)


class ResidualMiddleware(ABC):
    """One hook on the residual stream after decoder layer `layer`.

    Subclasses are built in the engine process from config: `cls(layer=..., d_model=..., **args)`.
    `__call__` must not depend on other requests of the batch for a request's result: that is
    what keeps requests isolated from each other.
    """

    # True for middleware that acts on the request's `steering` field: a model without one
    # answers steering requests with a 400 instead of silently ignoring them.
    handles_steering: bool = False

    def __init__(self, layer: int, d_model: int, **_: Any) -> None:
        self.layer = layer
        self.d_model = d_model

    @abstractmethod
    def __call__(self, stream: torch.Tensor, layout: BatchLayout) -> HookResult:
        """stream: (T, d_model) residual stream after `layer`; returns edits and side outputs."""

    @classmethod
    def resolved_args(cls, args: Mapping[str, Any]) -> dict[str, Any]:
        """The config args with whatever they imply filled in (e.g. from a file they name).

        The serving side calls this once at start-up and hands the result to `annotate` and
        `request_validator`. Default: the args as given.
        """
        return dict(args)

    @classmethod
    def annotate(
        cls,
        args: dict[str, Any],
        request_args: dict[str, Any],
        tokens: list[dict[str, Any]],
        safety: dict[str, Any],
    ) -> None:
        """Summarise one response's token records into its `safety` annotation (serving side).

        args: the middleware's config args. request_args: what the engine got for this request
        (extra_args[REQUEST_ARGS_KEY]). tokens: [{"position", "is_prompt", <side output>: value}]
        of all the request's sub-requests. Runs in the server process, not the engine, so it
        gets the config rather than an instance. Default: add nothing.
        """
        return None

    @classmethod
    def request_validator(cls, args: dict[str, Any]) -> Callable[[dict[str, Any]], None] | None:
        """A check the API layer runs on each request's args before it reaches the engine.

        The returned callable raises ValueError (-> HTTP 400) for args this middleware cannot
        serve. Built once per config at start-up. Default: no check.
        """
        return None


def load_middleware(import_path: str) -> type[ResidualMiddleware]:
    """Resolve 'package.module:ClassName' to a ResidualMiddleware subclass."""
    module_name, _, attr = import_path.partition(":")
    if not attr:
        raise ValueError(f"middleware must be 'module:Class', got {import_path!r}")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, ResidualMiddleware)):
        raise TypeError(f"{import_path} is not a ResidualMiddleware subclass")
    return cls


def route_side_outputs(
    layout: BatchLayout, side_outputs: dict[str, torch.Tensor]
) -> dict[str, dict[str, list[Any]]]:
    """Split per-token side outputs by request.

    Returns {request_id: {"positions": [...], "is_prompt": [...], name: [...]}} for the
    requests that have tokens in this step.
    """
    routed: dict[str, dict[str, list[Any]]] = {}
    if not side_outputs:
        return routed
    # One host copy per tensor, then list slices: a .tolist() per request would be R x outputs
    # device->host waits per step on a GPU, and as many Python calls on a CPU.
    positions, is_prompt = layout.positions.tolist(), layout.is_prompt.tolist()
    values = {name: v.tolist() for name, v in side_outputs.items()}
    for r, (s, e) in enumerate(layout.spans()):
        if e == s:
            continue
        rec: dict[str, list[Any]] = {"positions": positions[s:e], "is_prompt": is_prompt[s:e]}
        for name, v in values.items():
            rec[name] = v[s:e]
        routed[layout.request_ids[r]] = rec
    return routed
