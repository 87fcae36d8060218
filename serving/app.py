"""Binds the Ray Serve application: one model-server deployment per model, one ingress.

`build_app(config)` is used by `steergate serve`; `app_builder(args)` lets `serve run
deploy/serve_config.yaml` (and `serve deploy` on KubeRay) build the same app from a YAML file.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from serving.config import GatewayConfig, ModelConfig
from serving.engine.base import Engine
from serving.ingress import Ingress, app
from serving.model_server import ModelServer

__all__ = ["build_app", "app_builder", "model_deployment_name"]


# Ray's default is 10 s, so a dead engine core was replaced only ~30 s after it died.
MODEL_HEALTH_CHECK_PERIOD_S = 3


def model_deployment_name(model: str) -> str:
    return "model-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in model)


def _engine_cls() -> type[Engine]:
    # Imported lazily: only model-server replicas need vLLM's engine code.
    from serving.engine.vllm_engine import VLLMEngine

    return VLLMEngine


def _model_server(cfg: ModelConfig, engine_cls: type[Engine], drain_s: float) -> Application:
    dep = cfg.deployment
    options: dict[str, Any] = {
        "name": model_deployment_name(cfg.name),
        "ray_actor_options": {"num_cpus": dep.num_cpus},
        "max_ongoing_requests": dep.max_ongoing_requests,
        # A bound on each caller's queue: beyond it the ingress gets BackPressureError, answered 503.
        "max_queued_requests": dep.max_queued_requests,
        # Loading and (first-time) compiling the model takes minutes on a small CPU box.
        "health_check_timeout_s": 120,
        # A dead engine fails check_health; Serve replaces the replica after 3 failures in a row.
        "health_check_period_s": MODEL_HEALTH_CHECK_PERIOD_S,
        # In-flight requests get this long to finish when a replica stops (GatewayConfig.front.drain_s).
        "graceful_shutdown_timeout_s": drain_s,
    }
    if dep.autoscaling is not None:
        options["autoscaling_config"] = {
            "min_replicas": dep.autoscaling.min_replicas,
            "max_replicas": dep.autoscaling.max_replicas,
            "target_ongoing_requests": dep.autoscaling.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = dep.num_replicas
    return serve.deployment(ModelServer).options(**options).bind(cfg, engine_cls)


def build_app(config: GatewayConfig, engine_cls: type[Engine] | None = None) -> Application:
    engine_cls = engine_cls or _engine_cls()
    handles = {m.name: _model_server(m, engine_cls, config.front.drain_s) for m in config.models}
    ingress = serve.deployment(serve.ingress(app)(Ingress)).options(
        name="ingress",
        num_replicas=config.ingress.num_replicas,
        ray_actor_options={"num_cpus": config.ingress.num_cpus},
        max_ongoing_requests=1000,
        graceful_shutdown_timeout_s=config.front.drain_s,
    )
    return ingress.bind(config, handles)


def app_builder(args: dict[str, Any]) -> Application:
    """Ray Serve config entry point: args {"config": path-to-yaml} (optional)."""
    path = args.get("config")
    return build_app(GatewayConfig.from_file(path) if path else GatewayConfig())
