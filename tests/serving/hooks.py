"""Test middleware for the hook point: edits only requests that ask for it, reports a per-token value.

Configured into the test gateway (tests/conftest.py). A request asks for an edit through the
contract's `steering` field: the summed strength of its `add` interventions becomes the shift.
"""

from __future__ import annotations

from typing import Any

import torch

from middleware.hooks import BatchLayout, HookResult, ResidualMiddleware


def _shift(args: dict[str, Any]) -> float:
    steering = args.get("steering") or {}
    return float(sum(i.get("strength", 0.0) for i in steering.get("interventions") or [] if i.get("mode") == "add"))


class ShiftRequestHook(ResidualMiddleware):
    """Adds `shift` * a fixed random unit direction to every token of requests that ask for it.

    Side output `stream_norm`: the L2 norm of each token's stream before the edit, for every request.
    """

    def __init__(self, layer: int, d_model: int, seed: int = 0, **kw: Any) -> None:
        super().__init__(layer, d_model)
        gen = torch.Generator().manual_seed(seed)
        self.direction = torch.randn(d_model, generator=gen)  # (d_model,)
        self.direction /= self.direction.norm()

    def __call__(self, stream: torch.Tensor, layout: BatchLayout) -> HookResult:
        # stream: (T, d_model)
        shifts = torch.tensor([_shift(a) for a in layout.request_args] + [0.0])  # (R + 1,)
        per_token = shifts[layout.token_request]  # (T,); padding (-1) picks the trailing 0
        edited = None
        if bool((per_token != 0).any()):
            edited = stream + per_token[:, None] * self.direction.to(stream.dtype)
        return HookResult(stream=edited, side_outputs={"stream_norm": stream.norm(dim=-1)})

    @classmethod
    def annotate(cls, args: dict[str, Any], tokens: list[dict[str, Any]], safety: dict[str, Any]) -> None:
        seen = [t for t in tokens if "stream_norm" in t]
        safety["test_hook"] = {
            "prompt_tokens": sum(1 for t in seen if t["is_prompt"]),
            "completion_tokens": sum(1 for t in seen if not t["is_prompt"]),
            "positions": sorted(t["position"] for t in seen),
        }
