"""Test middleware for the hook point: edits only requests that ask for it, reports a per-token value."""

from __future__ import annotations

from typing import Any

import torch

from middleware.hooks import BatchLayout, HookResult, ResidualMiddleware


class ShiftRequestHook(ResidualMiddleware):
    """Adds `shift` * a fixed random direction to every token of requests whose args carry `shift`.

    Side output `stream_norm`: the L2 norm of each token's stream before the edit, for every request.
    """

    def __init__(self, layer: int, d_model: int, seed: int = 0, **kw: Any) -> None:
        super().__init__(layer, d_model)
        gen = torch.Generator().manual_seed(seed)
        self.direction = torch.randn(d_model, generator=gen)  # (d_model,)
        self.direction /= self.direction.norm()

    def __call__(self, stream: torch.Tensor, layout: BatchLayout) -> HookResult:
        # stream: (T, d_model)
        shifts = torch.tensor([float(a.get("shift", 0.0)) for a in layout.request_args] + [0.0])
        per_token = shifts[layout.token_request]  # (T,); padding (-1) picks the trailing 0
        edited = None
        if bool((per_token != 0).any()):
            edited = stream + per_token[:, None] * self.direction.to(stream.dtype)
        return HookResult(stream=edited, side_outputs={"stream_norm": stream.norm(dim=-1)})
