"""OpenAI request models: vLLM's own, plus steergate's extension fields.

We reuse vLLM's protocol models (chat templating, sampling-param mapping and validation stay
vLLM's) and add only what is not in the OpenAI spec. Per-request data for the in-engine
middleware rides in `SamplingParams.extra_args[REQUEST_ARGS_KEY]`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as _VllmChatRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest as _VllmCompletionRequest
from vllm.sampling_params import SamplingParams

from middleware.hooks import REQUEST_ARGS_KEY
from middleware.interventions import Mode
from middleware.tiers import SteerPositions

__all__ = [
    "Intervention",
    "SteeringRequest",
    "ChatCompletionRequest",
    "CompletionRequest",
    "GatewayRequest",
    "MAX_INTERVENTIONS",
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

    def middleware_args(self) -> dict[str, Any]:
        """What the in-engine middleware and the response post-processing get from this request."""
        args: dict[str, Any] = {}
        if self.steering is not None:
            args["steering"] = self.steering.model_dump(exclude_none=True)
        if self._policy is not None:
            args["policy"] = self._policy
        return args

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


class CompletionRequest(_SteergateFields, _VllmCompletionRequest):
    pass


GatewayRequest = ChatCompletionRequest | CompletionRequest
