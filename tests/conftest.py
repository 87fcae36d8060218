"""Session-wide heavy fixtures: one real gateway (Ray Serve + vLLM + SmolLM2) for all tests.

The gateway under test is the production app with the embedded model's default middleware (the
shipped SAE's SafetyMiddleware: toxicity detection + steering) plus
tests/serving/hooks.py:StreamNormHook at the same layer, which checks side outputs token by
token. It runs under tests/policies.yaml (copied, so reload tests can rewrite it), whose
anonymous tenant answers plain requests with annotation only and no default steering.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from middleware.assets import EMBEDDED_FEATURES
from middleware.detection import FeatureSet
from middleware.embedded import EMBEDDED_MODEL_NAME
from middleware.sae import load_sae_config
from serving.config import GatewayConfig, MiddlewareConfig, ModelConfig, embedded_middleware

ROOT = Path(__file__).resolve().parents[1]
MODEL = EMBEDDED_MODEL_NAME
SHIPPED = FeatureSet.load(EMBEDDED_FEATURES)
SAE_PATH = SHIPPED.sae_path
HOOK_LAYER = load_sae_config(SAE_PATH).hook_layer
D_MODEL = 576  # SmolLM2-135M
D_SAE = load_sae_config(SAE_PATH).d_sae
TIER_FEATURES = SHIPPED.features
# Bearer keys of tests/policies.yaml's tenants.
PUBLIC_KEY, ACME_KEY, BETA_KEY, KID_KEY, STOPPER_KEY = "sk-public", "sk-acme", "sk-beta", "sk-kid", "sk-stopper"
RECORDER_KEY = "sk-recorder"
AB_KEY, AB2_KEY, AB_QUIET_KEY, AB_HEADER_KEY, AB_REPORT_KEY = (
    "sk-ab", "sk-ab2", "sk-ab-quiet", "sk-ab-header", "sk-ab-report")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_config(port: int, policies: Path, audit_log: Path) -> GatewayConfig:
    record = MiddlewareConfig(cls="tests.serving.hooks:StreamNormHook", layer=HOOK_LAYER)
    return GatewayConfig(port=port, models=[ModelConfig(name=MODEL, middleware=[*embedded_middleware(), record])],
                         policies=str(policies), audit_log=str(audit_log), policy_reload_interval_s=0.5)


@pytest.fixture(scope="session")
def test_sae_path() -> str:
    return SAE_PATH


@pytest.fixture(scope="session")
def gateway_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gateway")
    policies = d / "policies.yaml"
    shutil.copy(ROOT / "tests" / "policies.yaml", policies)
    return {"policies": policies, "audit": d / "audit.jsonl", "original": ROOT / "tests" / "policies.yaml"}


@pytest.fixture(scope="session")
def gateway_url(gateway_files: dict[str, Path]) -> Iterator[str]:
    from serving.launcher import start_gateway, stop_gateway

    # Ray workers (and vLLM's engine processes under them) must import tests.serving.hooks.
    runtime_env = {"env_vars": {"PYTHONPATH": str(ROOT)}}
    config = gateway_config(_free_port(), gateway_files["policies"], gateway_files["audit"])
    try:
        yield start_gateway(config, runtime_env=runtime_env, health_timeout_s=900)
    finally:
        stop_gateway()


@pytest.fixture(scope="session")
def client(gateway_url: str):
    return openai_client(gateway_url, PUBLIC_KEY)


def openai_client(gateway_url: str, key: str):
    import openai

    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0, timeout=120)


def async_openai(gateway_url: str):
    """A fresh async client: each asyncio.run() has its own event loop, and a client is bound to one."""
    import openai

    return openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=PUBLIC_KEY, max_retries=0, timeout=120)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run only where a CUDA device is visible (a GPU machine with
    `make install ENGINE=gpu`); elsewhere they are skipped with the reason."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible here); run on a GPU machine after "
                            "`make install ENGINE=gpu`")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
