"""The engine interface the model server is built on (the Ray Serve LLM `engine_cls` pattern).

An engine turns one OpenAI request into a stream of items:
- `EngineError`: the request failed (first item only); the ingress answers with its status.
- `dict`: a complete non-streamed response body.
- `SSEChunk`: one server-sent-events chunk to send as is (`data: {...}\\n\\n`, last `data: [DONE]`).
- `UsageReport`: token counts of a stream, for metrics; never sent to the client.
- `FluencySample`: the token ids of a response sampled for live fluency scoring (last item, only
  for requests whose policy dict asks for it); never sent to the client.
The real engine is vLLM (serving/engine/vllm_engine.py); unit tests of pure logic may pass a fake.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from serving.config import ModelConfig
from serving.protocol import ChatCompletionRequest, CompletionRequest

__all__ = [
    "DONE_EVENT", "Engine", "EngineError", "error_type_for", "EngineItem", "FluencySample", "SSEChunk",
    "UsageReport",
]


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
                422: "invalid_request_error", 429: "rate_limit_error"}


def error_type_for(status: int) -> str:
    """OpenAI's `error.type` for an HTTP status."""
    return _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


@dataclass
class EngineError:
    """An OpenAI-shaped error: becomes {"error": {...}} with HTTP `status`."""

    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | int | None = None
    status: int = 400
    # The response's safety annotation when a policy refused it (code "content_filter"); for
    # the ingress' metrics and audit log, never sent to the client.
    safety: dict[str, Any] | None = None

    @classmethod
    def from_body(cls, error: dict[str, Any], default_status: int) -> EngineError:
        """An OpenAI `error` object (vLLM puts the HTTP status in `code`) as an EngineError."""
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else default_status
        return cls(error.get("message") or "request failed", type=error_type_for(status),
                   param=error.get("param"), code=code, status=status)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# The last event of every stream (OpenAI's terminator).
DONE_EVENT = "data: [DONE]\n\n"


@dataclass
class SSEChunk:
    data: str  # the full SSE event text, "data: ...\n\n"
    has_content: bool = False  # carries generated text (the first one marks time to first token)
    safety: dict[str, Any] | None = None  # the annotation, on the chunk that carries it (for metrics/audit)
    # Traced requests only (STEERGATE_TRACE_TIMINGS): the model server's stage stamps, on the first chunk
    # with content, for the ingress' trace line (serving/timing_trace.py).
    timings: dict[str, float] | None = None

    @property
    def is_done(self) -> bool:
        """The stream's terminator, `data: [DONE]`."""
        return self.data.startswith(DONE_EVENT.rstrip())

    @property
    def is_error(self) -> bool:
        """An error event: the stream failed after its 200 went out."""
        return self.data.startswith('data: {"error"')


@dataclass
class UsageReport:
    prompt_tokens: int
    completion_tokens: int


@dataclass
class FluencySample:
    """(prompt token ids, completion token ids) of each completion of a finished response."""

    sequences: list[tuple[list[int], list[int]]]


EngineItem = EngineError | dict[str, Any] | SSEChunk | UsageReport | FluencySample


class Engine(ABC):
    @classmethod
    @abstractmethod
    async def start(cls, config: ModelConfig) -> Engine:
        """Load the model and return a ready engine."""

    @abstractmethod
    def chat(self, request: ChatCompletionRequest) -> AsyncIterator[EngineItem]:
        """Run a chat completion."""

    @abstractmethod
    def completions(self, request: CompletionRequest) -> AsyncIterator[EngineItem]:
        """Run a text completion."""

    @abstractmethod
    async def check_health(self) -> None:
        """Raise if the engine cannot serve."""

    async def continuation_perplexity(self, token_ids: list[int], start: int) -> float:
        """Perplexity of `token_ids[start:]` given what precedes it under the unsteered model, at a
        priority below live requests (live fluency scoring). Engines that cannot score raise."""
        raise NotImplementedError(f"{type(self).__name__} cannot score fluency")

    @abstractmethod
    def num_unfinished_requests(self) -> int:
        """Requests the engine is still working on (used to check that aborts land)."""

    def load(self) -> dict[str, int]:
        """Requests in the engine by state ("running", "waiting"), for /metrics and the load benchmark."""
        return {"running": self.num_unfinished_requests(), "waiting": 0}

    @abstractmethod
    def shutdown(self) -> None:
        """Stop the engine and free its processes."""
