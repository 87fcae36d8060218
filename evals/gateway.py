"""The gateway an evaluation talks to: a running one (by URL), or one it starts and stops itself.

A started gateway serves the embedded model with SafetyMiddleware over a features file (the
shipped one by default, or e.g. an SAE at another layer) and, optionally, extra tier presets:
the calibration puts every candidate tier in one gateway and asks for each by name. It runs
under the shipped default policy, which lets every request choose its own `steering`.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["GatewayTarget", "free_port", "gateway", "tokenizer_for"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayTarget:
    """What to evaluate against: a URL, or a features file (+ tiers) for a gateway to start."""

    def __init__(self, url: str | None = None, features_path: str | Path | None = None,
                 tiers: Mapping[str, Any] | None = None, model: str | None = None) -> None:
        from middleware.assets import EMBEDDED_FEATURES
        from middleware.embedded import EMBEDDED_MODEL_NAME

        self.url = url
        self.model = model or EMBEDDED_MODEL_NAME
        self.features_path = Path(features_path or EMBEDDED_FEATURES).resolve()
        self._tiers = dict(tiers) if tiers is not None else None

    def tiers(self) -> dict[str, Any] | None:
        """The tier presets the gateway serves, where known (None for a gateway given by URL)."""
        if self.url is not None:
            return None
        if self._tiers is not None:
            return self._tiers
        from middleware.detection import FeatureSet

        return FeatureSet.load(self.features_path).tiers()

    def cache_context(self) -> dict[str, Any]:
        """What results depend on besides each request: the model and its SAE + features."""
        if self.url is not None:
            return {"model": self.model, "url": self.url}
        from middleware.detection import FeatureSet

        fs = FeatureSet.load(self.features_path)
        digest = hashlib.sha256()
        digest.update(self.features_path.read_bytes())
        digest.update((Path(fs.sae_path) / "sae_weights.safetensors").read_bytes())
        return {"model": self.model, "features": digest.hexdigest()[:16]}


@contextmanager
def gateway(target: GatewayTarget, port: int | None = None, eager: bool = False,
            policies: Path | None = None) -> Iterator[str]:
    """The base URL to talk to; a started gateway is stopped on exit (nothing of it outlives it).

    eager: skip torch.compile (slower steps, but a start without the compile, which is redone at
    every start since the engine's config carries a per-start side-channel address).
    policies: a policy file for a started gateway (default: the shipped default policy)."""
    if target.url is not None:
        yield target.url
        return
    from serving.config import EngineConfig, GatewayConfig, ModelConfig, embedded_middleware
    from serving.launcher import start_gateway, stop_gateway

    middleware = embedded_middleware(str(target.features_path), tiers=target._tiers)
    model = ModelConfig(name=target.model, middleware=middleware, engine=EngineConfig(enforce_eager=eager))
    config = GatewayConfig(port=port or free_port(), models=[model],
                           policies=str(policies) if policies is not None else None)
    try:
        yield start_gateway(config, health_timeout_s=900)
    finally:
        stop_gateway()


def tokenizer_for(path: str | Path | None = None) -> Any:
    """The served model's tokenizer (the embedded SmolLM2's by default), for the cloze items."""
    from transformers import AutoTokenizer

    from middleware.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(str(path or embedded_model_dir()))


def describe(target: GatewayTarget) -> str:
    return json.dumps({"url": target.url, "features": str(target.features_path), "model": target.model})
