"""Session-wide heavy fixtures: one real gateway (Ray Serve + vLLM + SmolLM2) for all tests.

The gateway under test is the production app with one extra in-engine middleware,
tests/serving/hooks.py:ShiftRequestHook, which proves the hook point.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.config import GatewayConfig, MiddlewareConfig, ModelConfig
from serving.embedded import EMBEDDED_MODEL_NAME

ROOT = Path(__file__).resolve().parents[1]
MODEL = EMBEDDED_MODEL_NAME
HOOK_LAYER = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_config(port: int) -> GatewayConfig:
    return GatewayConfig(
        port=port,
        models=[
            ModelConfig(
                name=MODEL,
                middleware=[MiddlewareConfig(cls="tests.serving.hooks:ShiftRequestHook", layer=HOOK_LAYER)],
            )
        ],
    )


@pytest.fixture(scope="session")
def gateway_url() -> Iterator[str]:
    from serving.launcher import start_gateway, stop_gateway

    # Ray workers (and vLLM's engine processes under them) must import tests.serving.hooks.
    runtime_env = {"env_vars": {"PYTHONPATH": str(ROOT)}}
    try:
        yield start_gateway(gateway_config(_free_port()), runtime_env=runtime_env, health_timeout_s=900)
    finally:
        stop_gateway()


@pytest.fixture(scope="session")
def client(gateway_url: str):
    import openai

    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0, timeout=120)


def async_openai(gateway_url: str):
    """A fresh async client: each asyncio.run() has its own event loop, and a client is bound to one."""
    import openai

    return openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0, timeout=120)
