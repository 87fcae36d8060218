"""Test middleware for the hook point: reports a per-token value for every request, edits nothing.

Configured into the test gateway (tests/conftest.py) after the real steering middleware, so the
side-output path (engine -> side channel -> `safety`) is checked token by token.
"""

from __future__ import annotations

from typing import Any

import torch

from middleware.hooks import BatchLayout, HookResult, ResidualMiddleware


class StreamNormHook(ResidualMiddleware):
    """Side output `stream_norm`: the L2 norm of each token's residual stream."""

    def __call__(self, stream: torch.Tensor, layout: BatchLayout) -> HookResult:
        # stream: (T, d_model)
        return HookResult(side_outputs={"stream_norm": stream.norm(dim=-1)})

    @classmethod
    def annotate(cls, args: dict[str, Any], request_args: dict[str, Any], tokens: list[dict[str, Any]],
                 safety: dict[str, Any]) -> None:
        seen = [t for t in tokens if "stream_norm" in t]
        safety["test_hook"] = {
            "prompt_tokens": sum(1 for t in seen if t["is_prompt"]),
            "completion_tokens": sum(1 for t in seen if not t["is_prompt"]),
            "positions": sorted(t["position"] for t in seen),
            "norms": [t["stream_norm"] for t in sorted(seen, key=lambda t: t["position"])],
        }
