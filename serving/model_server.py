"""Ray Serve deployment that owns one engine for one configured model.

The engine class is passed in (Ray Serve LLM's `engine_cls` pattern): production binds the
vLLM engine; everything the ingress needs goes through the few methods below.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from serving.config import ModelConfig
from serving.engine.base import Engine, EngineItem
from serving.protocol import ChatCompletionRequest, CompletionRequest

__all__ = ["ModelServer"]

logger = logging.getLogger(__name__)


class ModelServer:
    """Wrapped by `serve.deployment` in serving/app.py (kept a plain class so it reads top-down)."""

    async def __init__(self, config: ModelConfig, engine_cls: type[Engine]) -> None:
        self.config = config
        self.engine = await engine_cls.start(config)

    async def chat(self, request: ChatCompletionRequest) -> AsyncIterator[EngineItem]:
        async for item in self.engine.chat(request):
            yield item

    async def completions(self, request: CompletionRequest) -> AsyncIterator[EngineItem]:
        async for item in self.engine.completions(request):
            yield item

    async def score_fluency(self, prompt_ids: list[int], completion_ids: list[int]) -> float:
        """Perplexity of a completion under the unsteered model, below live requests' priority."""
        return await self.engine.continuation_perplexity(prompt_ids + completion_ids, len(prompt_ids))

    async def check_health(self) -> None:
        """Ray Serve calls this periodically; raising marks the replica unhealthy and restarts it."""
        await self.engine.check_health()

    async def ready(self) -> bool:
        await self.engine.check_health()
        return True

    async def num_unfinished_requests(self) -> int:
        return self.engine.num_unfinished_requests()

    async def load(self) -> dict[str, int]:
        return self.engine.load()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            try:
                engine.shutdown()
            except Exception:  # interpreter teardown: best effort
                pass
