"""Session-wide heavy fixtures: one real gateway (Ray Serve + vLLM + SmolLM2) for all tests.

The gateway under test is the production app with two in-engine middleware at layer HOOK_LAYER:
the real SAE steering middleware, over a seeded random SAE of SmolLM2's width (the trained SAE
and toxicity features arrive with issue 4; steering mechanics do not depend on them), and
tests/serving/hooks.py:StreamNormHook, which checks side outputs token by token.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from middleware.steering import default_tiers
from serving.config import GatewayConfig, MiddlewareConfig, ModelConfig
from serving.embedded import EMBEDDED_MODEL_NAME
from tests.middleware.builders import build_sae

ROOT = Path(__file__).resolve().parents[1]
MODEL = EMBEDDED_MODEL_NAME
HOOK_LAYER = 12
D_MODEL = 576  # SmolLM2-135M
D_SAE = 256
TIER_FEATURES = [0, 1, 2, 3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_test_sae(directory: Path) -> str:
    build_sae("standard", d_in=D_MODEL, d_sae=D_SAE, seed=0).save(directory)
    return str(directory)


def gateway_config(port: int, sae_path: str) -> GatewayConfig:
    steering = MiddlewareConfig(
        cls="middleware.steering:SAESteeringMiddleware", layer=HOOK_LAYER,
        args={"sae_path": sae_path, "tiers": default_tiers(TIER_FEATURES)},
    )
    record = MiddlewareConfig(cls="tests.serving.hooks:StreamNormHook", layer=HOOK_LAYER)
    return GatewayConfig(port=port, models=[ModelConfig(name=MODEL, middleware=[steering, record])])


@pytest.fixture(scope="session")
def test_sae_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_test_sae(tmp_path_factory.mktemp("sae"))


@pytest.fixture(scope="session")
def gateway_url(test_sae_path: str) -> Iterator[str]:
    from serving.launcher import start_gateway, stop_gateway

    # Ray workers (and vLLM's engine processes under them) must import tests.serving.hooks.
    runtime_env = {"env_vars": {"PYTHONPATH": str(ROOT)}}
    try:
        yield start_gateway(gateway_config(_free_port(), test_sae_path), runtime_env=runtime_env,
                            health_timeout_s=900)
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
