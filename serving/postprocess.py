"""Turns an engine's raw OpenAI output into what the client gets, plus what metrics need.

Two jobs, both engine-agnostic:
- Streams: the server always asks the engine for per-chunk usage (so metrics and the
  side-output wait below know exact token counts), then strips the usage the client did not
  ask for, so the wire format is exactly what OpenAI would send.
- The `safety` annotation: each configured middleware summarises the request's per-token side
  outputs into it, on the non-streamed body or on the stream's finishing chunk.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from middleware.hooks import ResidualMiddleware, load_middleware
from serving.config import MiddlewareConfig
from serving.engine.base import EngineError, EngineItem, SSEChunk, UsageReport
from serving.engine.side_channel import RequestSideOutputs

__all__ = ["ResponsePostprocessor", "SIDE_OUTPUT_WAIT_S"]

# Side outputs travel beside the engine's output path and in practice arrive first; this bounds
# the wait for stragglers before a response is annotated with whatever has arrived.
SIDE_OUTPUT_WAIT_S = 2.0


class ResponsePostprocessor:
    def __init__(self, middleware: list[MiddlewareConfig]) -> None:
        self._annotators: list[tuple[type[ResidualMiddleware], dict[str, Any]]] = [
            (load_middleware(m.cls), m.args) for m in middleware
        ]

    def safety(self, buf: RequestSideOutputs, request_args: dict[str, Any]) -> dict[str, Any]:
        safety: dict[str, Any] = {}
        tokens = buf.tokens()
        for cls, args in self._annotators:
            cls.annotate(args, request_args, tokens, safety)
        return safety

    async def _settle(self, buf: RequestSideOutputs, expected: int) -> None:
        """Wait (bounded) until the side outputs of `expected` tokens have arrived."""
        deadline = time.monotonic() + SIDE_OUTPUT_WAIT_S
        while buf.count() < expected and (left := deadline - time.monotonic()) > 0:
            buf.updated.clear()
            try:
                await asyncio.wait_for(buf.updated.wait(), timeout=left)
            except TimeoutError:
                break

    @staticmethod
    def _expected_tokens(usage: dict[str, Any] | None, num_choices: int) -> int:
        # Every prompt token of every choice passes the hook, and every generated token but the
        # last of each choice (the last is sampled and never fed back through the model).
        if not usage:
            return 0
        return num_choices * usage.get("prompt_tokens", 0) + max(0, usage.get("completion_tokens", 0) - num_choices)

    async def finish_body(self, body: dict[str, Any], buf: RequestSideOutputs,
                          request_args: dict[str, Any]) -> dict[str, Any]:
        if self._annotators:
            await self._settle(buf, self._expected_tokens(body.get("usage"), len(body.get("choices", []))))
            body["safety"] = self.safety(buf, request_args)
        return body

    async def stream(
        self,
        chunks: AsyncIterator[str],
        buf: RequestSideOutputs,
        request_args: dict[str, Any],
        *,
        client_usage: bool,
        client_continuous_usage: bool,
        num_choices: int,
    ) -> AsyncIterator[EngineItem]:
        """Relay SSE chunks: strip unrequested usage, annotate the finishing chunk, report usage."""
        usage: dict[str, Any] | None = None
        finished = 0
        sent_any = False
        async for raw in chunks:
            payload = raw.removeprefix("data: ").strip()
            if not payload.startswith("{"):
                yield SSEChunk(raw)  # [DONE]
                continue
            obj = json.loads(payload)
            if "error" in obj and not sent_any:
                # Failed before any output: answer with a proper HTTP error instead of a 200 stream.
                yield EngineError.from_body(obj["error"], default_status=400)
                return
            sent_any = True
            if obj.get("usage"):
                usage = obj["usage"]
            choices = obj.get("choices") or []
            if not choices:  # the trailing usage-only chunk, or an error after output began
                if client_usage or "error" in obj:
                    yield SSEChunk(raw)
                continue
            if not client_continuous_usage:
                obj.pop("usage", None)
            finishing = [c for c in choices if c.get("finish_reason")]
            finished += len(finishing)
            if finishing and finished >= num_choices and self._annotators:
                # The last choice just finished: annotate this chunk (the contract's place for it).
                await self._settle(buf, self._expected_tokens(usage, num_choices))
                obj["safety"] = self.safety(buf, request_args)
            has_content = any(_delta_text(c) for c in choices)
            yield SSEChunk(f"data: {json.dumps(obj, separators=(',', ':'))}\n\n", has_content=has_content)
        if usage is not None:
            yield UsageReport(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))


def _delta_text(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content"))
    return bool(choice.get("text"))
