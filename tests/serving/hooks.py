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


class TokenIdHook(ResidualMiddleware):
    """Side output `token_id`: the input token at each position, so a response's annotation says exactly
    which tokens' side outputs reached it (tests/serving/test_faults.py: no request gets another's)."""

    def __call__(self, stream: torch.Tensor, layout: BatchLayout) -> HookResult:
        # stream: (T, d_model); token_ids: (T,) or None when the model runs on embeddings
        ids = layout.token_ids if layout.token_ids is not None else torch.full((stream.shape[0],), -1)
        return HookResult(side_outputs={"token_id": ids.to(torch.float32)})

    @classmethod
    def annotate(cls, args: dict[str, Any], request_args: dict[str, Any], tokens: list[dict[str, Any]],
                 safety: dict[str, Any]) -> None:
        seen = sorted((t["position"], int(t["token_id"]), bool(t["is_prompt"])) for t in tokens if "token_id" in t)
        safety["token_ids"] = [[pos, tid, is_prompt] for pos, tid, is_prompt in seen]
