"""OpenAI request and response models: vLLM's own, plus steergate's extension fields.

We reuse vLLM's protocol models (chat templating, sampling-param mapping and validation stay
vLLM's) and add only what is not in the OpenAI spec. Per-request data for the in-engine
middleware rides in `SamplingParams.extra_args[REQUEST_ARGS_KEY]`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as _VllmChatRequest
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionResponse as _VllmChatResponse
from vllm.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionStreamResponse as _VllmChatStreamResponse,
)
from vllm.entrypoints.openai.completion.protocol import CompletionRequest as _VllmCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionResponse as _VllmCompletionResponse
from vllm.entrypoints.openai.completion.protocol import (
    CompletionStreamResponse as _VllmCompletionStreamResponse,
)
from vllm.sampling_params import SamplingParams

from middleware.hooks import REQUEST_ARGS_KEY
from middleware.steering_names import Mode
from middleware.tiers import SteerPositions

__all__ = [
    "Intervention",
    "SteeringRequest",
    "ChatCompletionRequest",
    "CompletionRequest",
    "GatewayRequest",
    "MAX_INTERVENTIONS",
    "PhaseSafety",
    "SafetyAnnotation",
    "ChatCompletionResponse",
    "ChatCompletionStreamResponse",
    "CompletionResponse",
    "CompletionStreamResponse",
    "ErrorInfo",
    "ErrorBody",
]

MAX_INTERVENTIONS = 16


class Intervention(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature: int = Field(ge=0, description="SAE feature index of the model's configured SAE.")
    mode: Mode
    strength: float = 0.0

    @field_validator("strength")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("strength must be a finite number")
        return v


class SteeringRequest(BaseModel):
    """`steering` extension field: a named tier or explicit interventions, not both."""

    model_config = ConfigDict(extra="forbid")

    # Any tier the model's steering middleware configures (off/light/medium/strong by default;
    # operators and the calibration may add more); unknown names are a 400 from its validator.
    tier: str | None = Field(None, min_length=1)
    interventions: list[Intervention] | None = Field(None, max_length=MAX_INTERVENTIONS)
    steer_positions: SteerPositions | None = Field(
        None, description="Which tokens are steered (prompt, generated, both); default: the tier's.")

    @model_validator(mode="after")
    def _one_of(self) -> SteeringRequest:
        if (self.tier is None) == (self.interventions is None):
            raise ValueError("steering needs exactly one of 'tier' or 'interventions'")
        return self


class _SteergateFields(BaseModel):
    # --8<-- not in the OpenAI spec -->8--
    steering: SteeringRequest | None = None

    # Set by the model server, never by the client: what the in-engine middleware sees.
    _engine_args: dict[str, Any] = PrivateAttr(default_factory=dict)
    # Set by the ingress from the caller's policy (see `set_policy`), never by the client.
    _policy: dict[str, Any] | None = PrivateAttr(default=None)

    # vLLM's field, not ours: with priority scheduling on (EngineConfig.scheduling_policy), a priority
    # the client picks would let one tenant's requests overtake everyone's. The gateway sets them.
    @field_validator("priority", check_fields=False)
    @classmethod
    def _gateway_sets_priority(cls, v: int) -> int:
        if v != 0:
            raise ValueError("priority is set by the gateway: omit it (or send 0)")
        return v

    def middleware_args(self) -> dict[str, Any]:
        """What the in-engine middleware and the response post-processing get from this request."""
        args: dict[str, Any] = {}
        if self.steering is not None:
            args["steering"] = self.steering.model_dump(exclude_none=True)
        if self._policy is not None:
            args["policy"] = self._policy
        if (words := self.prompt_words()) is not None:
            args["prompt_words"] = words  # the detector's short-text shift (middleware/detection.py)
        return args

    def prompt_words(self) -> int | None:
        """The length in words of what the client sent as the prompt; None where it is not text."""
        return None

    def set_policy(self, policy: dict[str, Any]) -> None:
        """The resolved policy's runtime view: name, thresholds, actions, hold-back (serving/safety_gate.py)."""
        self._policy = policy

    @property
    def policy(self) -> dict[str, Any] | None:
        return self._policy

    def set_engine_args(self, args: dict[str, Any]) -> None:
        self._engine_args = args

    def to_sampling_params(self, *args: Any, **kwargs: Any) -> SamplingParams:
        params = super().to_sampling_params(*args, **kwargs)  # type: ignore[misc]
        if self._engine_args:
            params.extra_args = {**(params.extra_args or {}), REQUEST_ARGS_KEY: self._engine_args}
        return params


# vLLM accepts any role string (for custom chat templates); the OpenAI API does not.
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class ChatCompletionRequest(_SteergateFields, _VllmChatRequest):
    @model_validator(mode="before")
    @classmethod
    def _arrays_are_arrays(cls, data: Any) -> Any:
        # The message TypedDicts type `content` parts and `tool_calls` as Iterable, which pydantic fills
        # from any iterable, strict or not, and vLLM's own before-validator turns any iterable into a
        # list: `"tool_calls": {}` passed as zero tool calls (schemathesis). Runs before vLLM's.
        messages = data.get("messages") if isinstance(data, dict) else None
        for i, message in enumerate(messages if isinstance(messages, list) else ()):
            if not isinstance(message, dict):
                continue
            if isinstance(message.get("content"), dict):
                raise ValueError(f"messages[{i}].content must be a string or an array of content parts")
            if message.get("tool_calls") is not None and not isinstance(message["tool_calls"], list):
                raise ValueError(f"messages[{i}].tool_calls must be an array")
        return data

    @field_validator("messages")
    @classmethod
    def _non_empty(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("messages must contain at least one message")
        for i, message in enumerate(v):
            role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
            if role not in CHAT_ROLES:
                raise ValueError(f"messages[{i}].role must be one of {', '.join(CHAT_ROLES)}; got {role!r}")
        return v

    def prompt_words(self) -> int | None:
        # Every message's text counts (a long earlier turn gives the max over tokens as many chances
        # as a long prompt); the template's own default system prompt does not, as in find-features.
        words = 0
        for message in self.messages:
            content = message.get("content") if isinstance(message, dict) else getattr(message, "content", "")
            if isinstance(content, str):
                words += len(content.split())
            elif isinstance(content, list):
                parts = [part.get("text", "") for part in content if isinstance(part, dict)]
                words += sum(len(str(text).split()) for text in parts)
        return words


class CompletionRequest(_SteergateFields, _VllmCompletionRequest):
    def prompt_words(self) -> int | None:
        # Several prompts: the longest decides (a shift for short text must hold for every one).
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not prompts or not all(isinstance(p, str) for p in prompts):
            return None  # token ids (or embeds): no text to count
        return max(len(p.split()) for p in prompts)


GatewayRequest = ChatCompletionRequest | CompletionRequest


# ---- responses: vLLM's models plus the `safety` annotation (for /openapi.json) --------------------

class PhaseSafety(BaseModel):
    """What the in-engine detector and steering found in one phase (prompt or completion)."""

    model_config = ConfigDict(extra="allow")  # a configured middleware may report more fields

    toxicity: float | None = Field(description="SAE detector score in [0, 1], higher is more toxic; null on a "
                                   "model without a detector.")
    flagged: bool = Field(description="toxicity at or above the policy's threshold for this phase.")
    steered_tokens: int = Field(0, description="Tokens whose residual stream the steering moved.")


class SafetyAnnotation(BaseModel):
    """`safety`: top level of a body; on a stream, the last content chunk (the one with finish_reason)."""

    model_config = ConfigDict(extra="allow")

    policy: str = Field(description="The tenant's policy that served the request.")
    tier: str = Field(description="Steering tier applied: off, light, medium, strong, or custom.")
    experiment: str | None = Field(None, description="A/B experiment, where one assigned the request.")
    arm: str | None = Field(None, description="The experiment's arm for this request.")
    prompt: PhaseSafety
    completion: PhaseSafety


class ChatCompletionResponse(_VllmChatResponse):
    # --8<-- not in the OpenAI spec -->8--
    safety: SafetyAnnotation | None = None


class ChatCompletionStreamResponse(_VllmChatStreamResponse):
    # --8<-- not in the OpenAI spec -->8--
    safety: SafetyAnnotation | None = None


class CompletionResponse(_VllmCompletionResponse):
    # --8<-- not in the OpenAI spec -->8--
    safety: SafetyAnnotation | None = None


class CompletionStreamResponse(_VllmCompletionStreamResponse):
    # --8<-- not in the OpenAI spec -->8--
    safety: SafetyAnnotation | None = None


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | int | None


class ErrorBody(BaseModel):
    """Every error, whatever its status: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorInfo
