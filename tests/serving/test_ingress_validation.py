"""Request validation in the ingress, without Ray: the pure checks before a request leaves it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving.config import GatewayConfig, ModelConfig
from serving.errors import GatewayError
from serving.ingress import Ingress, _Call
from serving.protocol import ChatCompletionRequest, CompletionRequest

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def ingress() -> Iterator[Ingress]:
    # A model without steering middleware, under the shipped default policy (light steering).
    config = GatewayConfig(models=[ModelConfig(name="smollm2-135m-instruct", middleware=[])])
    ingress = Ingress(config, model_handles={})
    yield ingress
    ingress.policies.stop()


def _validate(ingress: Ingress, body: dict) -> ChatCompletionRequest:
    policy = ingress.policies.current.policies["default"]
    ctx = _Call(endpoint="chat", request_id="req-test")  # outside any experiment
    return ingress._validate(body, ChatCompletionRequest, "smollm2-135m-instruct", policy, ctx)


def test_steering_refused_where_no_middleware_steers(ingress: Ingress) -> None:
    body = {"model": "smollm2-135m-instruct", "messages": MSG, "steering": {"tier": "light"}}
    with pytest.raises(GatewayError) as e:
        _validate(ingress, body)
    assert e.value.error.status == 400 and e.value.error.code == "steering_unavailable"


def test_tier_off_is_always_accepted(ingress: Ingress) -> None:
    body = {"model": "smollm2-135m-instruct", "messages": MSG, "steering": {"tier": "off"}}
    assert _validate(ingress, body).steering.tier == "off"


def test_policy_default_tier_is_dropped_where_no_middleware_steers(ingress: Ingress) -> None:
    request = _validate(ingress, {"model": "smollm2-135m-instruct", "messages": MSG})
    assert request.steering is None and request.policy is not None and request.policy["name"] == "default"


def test_n_limit(ingress: Ingress) -> None:
    with pytest.raises(GatewayError, match="n must be at most 8"):
        _validate(ingress, {"messages": MSG, "n": 9})


@pytest.mark.parametrize("body, words", [
    ({"messages": [{"role": "user", "content": "You absolute clown!"}]}, 3),
    ({"messages": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": [{"type": "text", "text": "hello there"}]}]}, 4),
    ({"prompt": "Stop it, captain."}, 3),
    ({"prompt": ["one two", "three four five"]}, 3),  # several prompts: the longest
    ({"prompt": [101, 102, 103]}, None),  # token ids: no text to count
])
def test_prompt_length_in_words_reaches_the_detector(body: dict, words: int | None) -> None:
    # The detector's short-text shift (middleware/detection.py) reads request_args["prompt_words"].
    cls = ChatCompletionRequest if "messages" in body else CompletionRequest
    args = cls.model_validate({"model": "m", **body}).middleware_args()
    assert args.get("prompt_words") == words
