"""Request validation in the ingress, without Ray: the pure checks before a request leaves it."""

from __future__ import annotations

import pytest

from serving.config import GatewayConfig
from serving.errors import GatewayError
from serving.ingress import Ingress
from serving.protocol import ChatCompletionRequest

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def ingress() -> Ingress:
    return Ingress(GatewayConfig(), model_handles={})  # the default model has no steering middleware


def test_steering_refused_where_no_middleware_steers(ingress: Ingress) -> None:
    body = {"model": "smollm2-135m-instruct", "messages": MSG, "steering": {"tier": "light"}}
    with pytest.raises(GatewayError) as e:
        ingress._validate(body, ChatCompletionRequest, "smollm2-135m-instruct")
    assert e.value.error.status == 400 and e.value.error.code == "steering_unavailable"


def test_tier_off_is_always_accepted(ingress: Ingress) -> None:
    body = {"model": "smollm2-135m-instruct", "messages": MSG, "steering": {"tier": "off"}}
    assert ingress._validate(body, ChatCompletionRequest, "smollm2-135m-instruct").steering.tier == "off"


def test_n_limit(ingress: Ingress) -> None:
    with pytest.raises(GatewayError, match="n must be at most 8"):
        ingress._validate({"messages": MSG, "n": 9}, ChatCompletionRequest, "smollm2-135m-instruct")
