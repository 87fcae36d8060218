"""The one serving config: which models, how each is deployed, and the gateway's limits.

Strict like Ray Serve LLM's `LLMConfig`: every model forbids unknown fields, so a typo in
`--config FILE` is an error with its field path instead of a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from middleware.embedded import EMBEDDED_MODEL_NAME

__all__ = [
    "StrictModel",
    "EngineConfig",
    "AutoscalingConfig",
    "DeploymentConfig",
    "MiddlewareConfig",
    "ModelConfig",
    "embedded_middleware",
    "IngressConfig",
    "FrontConfig",
    "LimitsConfig",
    "AdmissionConfig",
    "FluencyConfig",
    "GatewayConfig",
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EngineConfig(StrictModel):
    """vLLM engine settings. Defaults are what measured best on a 2-core CPU box."""

    enforce_eager: bool = Field(
        False,
        description="Skip torch.compile. Compiled is ~30% faster on CPU but takes ~80 s more to start "
        "(once: vLLM caches the compiled graph). Steering hooks work in both modes.",
    )
    dtype: str = Field("float32", description="Weights/activations dtype. bf16 is ~5x slower on AVX2 CPUs.")
    max_model_len: int = Field(2048, gt=0, description="Context window (prompt + completion tokens).")
    max_num_seqs: int = Field(64, gt=0, description="Most sequences the engine batches in one step.")
    cpu_kv_cache_gib: int = Field(2, gt=0, description="KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE).")
    cpu_threads_bind: str = Field(
        "auto", description="VLLM_CPU_OMP_THREADS_BIND; 'auto' binds all cores of the machine."
    )
    seed: int = Field(0, description="Engine seed (per-request `seed` still overrides sampling).")
    stream_interval: int = Field(
        4, ge=1,
        description="Stream a chunk every N tokens (the first token is always sent at once). Each chunk costs "
        "CPU in three processes (model server, ingress, HTTP proxy) that the engine competes with; see "
        "bench/throughput.py for the measured trade-off. 1 = a chunk per token.",
    )
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "priority",
        description="vLLM's scheduler. 'priority': live fluency scoring waits behind live requests (both "
        "otherwise run first come first served); 'fcfs': scoring competes as an equal. Measured: "
        "bench/fluency.py.",
    )
    extra_engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Passed verbatim to vllm AsyncEngineArgs (escape hatch)."
    )


class AutoscalingConfig(StrictModel):
    min_replicas: int = Field(1, ge=0, description="Fewest replicas.")
    max_replicas: int = Field(1, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(16, gt=0, description="Requests per replica to aim for.")


class DeploymentConfig(StrictModel):
    """How Ray Serve runs a model server. Each replica owns one engine."""

    num_replicas: int = Field(1, ge=1, description="Fixed replica count (ignored when autoscaling is set).")
    autoscaling: AutoscalingConfig | None = Field(None, description="Autoscale between min and max replicas.")
    num_cpus: float = Field(1, ge=0, description="CPUs Ray reserves per replica (the engine uses its own threads).")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests Ray routes to one replica at once.")
    max_queued_requests: int = Field(
        256, ge=-1, description="Requests each caller (ingress replica) may queue for this deployment beyond "
        "what its replicas take; more are refused at once (503 + Retry-After). -1: unbounded (Ray's default).",
    )


class MiddlewareConfig(StrictModel):
    """A residual-stream middleware run inside the engine's forward pass (see middleware/hooks.py)."""

    cls: str = Field(description="Import path 'package.module:Class' of a ResidualMiddleware subclass.")
    layer: int = Field(ge=0, description="Decoder layer whose output stream the middleware sees.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the class.")


class ModelConfig(StrictModel):
    name: str = Field(description="The `model` clients ask for.")
    path: str | None = Field(
        None, description="Hugging Face model directory; None means the embedded SmolLM2 (converted on first use)."
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine settings.")
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig, description="Ray Serve settings.")
    middleware: list[MiddlewareConfig] | None = Field(
        None,
        description="In-engine hooks, in order. null: the model's default (for the embedded SmolLM2, the "
        "shipped SAE safety middleware: toxicity detection + steering tiers; otherwise none). [] = none.",
    )

    @model_validator(mode="after")
    def _default_middleware(self) -> ModelConfig:
        if self.middleware is None:
            self.middleware = embedded_middleware() if self.path is None else []
        return self


def embedded_middleware(features_path: str | None = None,
                        tiers: dict[str, Any] | None = None) -> list[MiddlewareConfig]:
    """The embedded model's default hook: SafetyMiddleware over the shipped SAE and features file
    (or another features file, e.g. an SAE at another layer), at the layer its SAE was trained on;
    `tiers` replaces the tiers the features file implies."""
    from middleware.assets import EMBEDDED_FEATURES
    from middleware.detection import FeatureSet
    from middleware.sae import load_sae_config

    features_path = str(features_path or EMBEDDED_FEATURES)
    layer = load_sae_config(FeatureSet.load(features_path).sae_path).hook_layer
    if layer is None:
        raise ValueError(f"the SAE named in {features_path} has no hook layer")
    args: dict[str, Any] = {"features_path": features_path}
    if tiers is not None:
        args["tiers"] = tiers
    return [MiddlewareConfig(cls="middleware.detection:SafetyMiddleware", layer=layer, args=args)]


class IngressConfig(StrictModel):
    num_replicas: int = Field(1, ge=1, description="HTTP ingress replicas.")
    # On a 2-core box the model server takes a CPU; an ingress asking for one too would never schedule.
    num_cpus: float = Field(0, ge=0, description="CPUs Ray reserves per ingress replica.")


class FrontConfig(StrictModel):
    """Ray Serve's HTTP front, before the ingress, and how the gateway stops."""

    haproxy: bool = Field(
        True, description="Ray Serve's HAProxy front (and its throughput mode) instead of its Python HTTP proxy: "
        "less CPU per streamed chunk (bench/throughput.py: 0.83x -> 0.89x of raw vLLM on 2 cores).",
    )
    haproxy_stats_port: int | None = Field(
        None, ge=1, le=65535, description="Port of HAProxy's stats page, bound on the gateway's host; null: off.",
    )
    haproxy_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Port of HAProxy's own Prometheus exporter, bound on the gateway's host; "
        "null: off (the gateway's metrics are on its /metrics).",
    )
    drain_s: float = Field(
        5.0, ge=0, le=25, description="On stop, how long in-flight requests get to finish before replicas are "
        "stopped (a stop completes within a Kubernetes grace period of 30 s).",
    )


class LimitsConfig(StrictModel):
    """What one request body may hold; beyond it the answer is a 4xx naming the limit (serving/request_limits.py)."""

    max_n: int = Field(8, ge=1, description="Largest `n` (choices per request) accepted.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body accepted (413).")
    max_messages: int = Field(512, ge=1, description="Most chat messages in one request (400).")
    max_string_chars: int = Field(
        100_000, ge=1, description="Longest string anywhere in the body, e.g. a message's content (400). "
        "The context window refuses long prompts anyway; this refuses them before tokenizing.",
    )
    max_json_depth: int = Field(32, ge=4, description="Deepest nesting of JSON arrays and objects (400).")
    body_timeout_s: float = Field(30.0, gt=0, description="Longest a client may take to send its body (408).")


class AdmissionConfig(StrictModel):
    """Backpressure at each ingress replica (serving/admission.py): how much work it holds at once, and
    how long a request may take, so overload is refused quickly instead of queueing without bound."""

    max_in_flight: int = Field(
        128, ge=1, description="Generation requests one ingress replica holds at once (waiting or generating); "
        "the next is answered 503 with Retry-After at once. Default: twice the engine batch (max_num_seqs 64).",
    )
    queue_timeout_s: float = Field(
        60.0, gt=0, description="Longest a streamed request waits for its first chunk (queueing + prefill) "
        "before it is refused with 503 and Retry-After.",
    )
    request_timeout_s: float = Field(
        600.0, gt=0, description="Longest a request may run; then its engine request is aborted and the client gets "
        "504 (or, on a stream already under way, an error event).",
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After on an overload refusal.")


class FluencyConfig(StrictModel):
    """Live fluency scoring (policy `fluency.sample_rate`), per ingress replica."""

    queue_size: int = Field(
        64, ge=1, description="Sampled completions waiting to be scored; when full, new samples are dropped "
        "and counted (steergate_fluency_dropped_total{reason=\"queue_full\"}).",
    )
    workers: int = Field(1, ge=1, le=64, description="Scoring calls in flight at once.")


class GatewayConfig(StrictModel):
    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    models: list[ModelConfig] = Field(
        default_factory=lambda: [ModelConfig(name=EMBEDDED_MODEL_NAME)],
        description="Served models; the first is the default.",
    )
    ingress: IngressConfig = Field(default_factory=IngressConfig, description="Ingress deployment.")
    front: FrontConfig = Field(default_factory=FrontConfig, description="HTTP front and stopping.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request limits.")
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig, description="Backpressure and timeouts.")
    fluency: FluencyConfig = Field(default_factory=FluencyConfig, description="Live fluency scoring.")
    policies: str | None = Field(
        None, description="Policy file (policies/, `steergate policy check FILE`); null: the shipped default "
        "(no key, annotate + light steering). Reloaded on change.",
    )
    policy_reload_interval_s: float = Field(1.0, gt=0, description="How often replicas check the policy file.")
    audit_log: str | None = Field(
        None, description="JSON-lines file for safety events (flag, block, stop); null: the 'steergate.audit' "
        "logger (Ray's replica logs).",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> GatewayConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        if not names:
            raise ValueError("at least one model must be configured")
        return self

    @model_validator(mode="after")
    def _absolute_paths(self) -> GatewayConfig:
        # Replicas run in Ray workers with their own working directory.
        for name in ("policies", "audit_log"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_absolute():
                setattr(self, name, str(Path(value).resolve()))
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> GatewayConfig:
        """Load a YAML config; relative file paths in it are relative to the file."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        for name in ("policies", "audit_log"):
            if isinstance(data.get(name), str) and not Path(data[name]).is_absolute():
                data[name] = str((Path(path).parent / data[name]).resolve())
        return cls.model_validate(data)

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)
