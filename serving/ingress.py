"""The HTTP surface: OpenAI-compatible routes on a FastAPI app, served by a Ray Serve ingress.

The router only converts HTTP to and from model-server calls: parse and validate the body,
pick the model server by `model`, relay its items (a JSON body or SSE chunks), record metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

from middleware.hooks import load_middleware
from middleware.metrics import GatewayMetrics
from serving.config import GatewayConfig
from serving.engine.base import EngineError, SSEChunk, UsageReport
from serving.errors import GatewayError, error_response, from_validation_error, install_error_handlers
from serving.protocol import ChatCompletionRequest, CompletionRequest, GatewayRequest

__all__ = ["app", "Ingress"]

logger = logging.getLogger(__name__)

app = FastAPI(title="steergate", description="OpenAI-compatible gateway with SAE-based safety steering")
install_error_handlers(app)

HEALTH_PROBE_TIMEOUT_S = 5.0


class Ingress:
    """Wrapped by `serve.deployment` + `serve.ingress(app)` in serving/app.py."""

    def __init__(self, config: GatewayConfig, model_handles: dict[str, Any]) -> None:
        self.config = config
        self.handles = model_handles
        # Each model's middleware may check the per-request args it will get (e.g. steering
        # feature indices against its SAE) so bad ones are a 400 here, not a surprise in the engine.
        classes = {m.name: [(load_middleware(mw.cls), mw.args) for mw in m.middleware] for m in config.models}
        self.validators = {
            name: [v for cls, args in mws if (v := cls.request_validator(args))] for name, mws in classes.items()
        }
        self.steerable = {name: any(cls.handles_steering for cls, _ in mws) for name, mws in classes.items()}
        self.registry = CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry, [m.name for m in config.models])
        self.created = int(time.time())

    # ---- plain endpoints -------------------------------------------------------------------

    @app.get("/health")
    async def health(self) -> Response:
        try:
            await asyncio.wait_for(
                asyncio.gather(*(h.ready.remote() for h in self.handles.values())), HEALTH_PROBE_TIMEOUT_S
            )
        except Exception as e:  # not started yet, or a replica is down
            return JSONResponse({"status": "unavailable", "detail": str(e) or type(e).__name__}, status_code=503)
        return JSONResponse({"status": "ok", "models": list(self.handles)})

    @app.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": m.name, "object": "model", "created": self.created, "owned_by": "steergate",
                 "max_model_len": m.engine.max_model_len}
                for m in self.config.models
            ],
        }

    @app.get("/metrics")
    async def metrics(self) -> Response:
        return PlainTextResponse(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- generation ------------------------------------------------------------------------

    @app.post("/v1/chat/completions")
    async def chat_completions(self, raw: Request) -> Response:
        return await self._generate(raw, ChatCompletionRequest, "chat")

    @app.post("/v1/completions")
    async def completions(self, raw: Request) -> Response:
        return await self._generate(raw, CompletionRequest, "completions")

    async def _generate(self, raw: Request, model_cls: type[GatewayRequest], endpoint: str) -> Response:
        started = time.monotonic()
        model = "unknown"
        try:
            body = await self._read_json(raw)
            model = self._resolve_model(body)
            request = self._validate(body, model_cls, model)
            handle = getattr(self.handles[model].options(stream=True), endpoint)
            items = handle.remote(request)
            first = await items.__anext__()
        except GatewayError as e:
            # Unknown models are not a label value: they would make the label set unbounded.
            self._observe(model if model in self.handles else "unknown", endpoint, e.error.status, started)
            return error_response(e.error, e.headers)
        except Exception:  # the model server failed: counted here, answered by the 500 handler
            self._observe(model, endpoint, 500, started)
            raise
        if isinstance(first, EngineError):
            self._observe(model, endpoint, first.status, started)
            return error_response(first)
        if isinstance(first, dict):
            usage = first.get("usage") or {}
            self.metrics.observe_usage(model, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
            self._observe(model, endpoint, 200, started)
            return JSONResponse(first)
        return StreamingResponse(
            self._relay(first, items, model, endpoint, started), media_type="text/event-stream"
        )

    async def _relay(self, first: Any, items: Any, model: str, endpoint: str, started: float) -> AsyncIterator[str]:
        """Send SSE chunks as they come; on client disconnect, cancel the model-server call
        (which aborts the engine request)."""
        first_token_seen = False
        item = first
        try:
            while True:
                if isinstance(item, SSEChunk):
                    if item.has_content and not first_token_seen:
                        first_token_seen = True
                        self.metrics.ttft.labels(model, endpoint).observe(time.monotonic() - started)
                    yield item.data
                elif isinstance(item, UsageReport):
                    self.metrics.observe_usage(model, item.prompt_tokens, item.completion_tokens)
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    break
        finally:
            items.cancel()
            self._observe(model, endpoint, 200, started)

    # ---- helpers ---------------------------------------------------------------------------

    async def _read_json(self, raw: Request) -> dict[str, Any]:
        data = await raw.body()
        if len(data) > self.config.limits.max_body_bytes:
            raise GatewayError(413, f"request body larger than {self.config.limits.max_body_bytes} bytes",
                               code="request_too_large")
        try:
            body = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GatewayError(400, f"request body is not valid JSON: {e}", code="invalid_json") from e
        if not isinstance(body, dict):
            raise GatewayError(400, "request body must be a JSON object", code="invalid_json")
        return body

    def _resolve_model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if model is None:  # OpenAI requires it; we default to the first configured model
            model = body["model"] = self.config.models[0].name
        if not isinstance(model, str):
            raise GatewayError(400, "model must be a string", param="model", code="invalid_value")
        if model not in self.handles:
            raise GatewayError(404, f"The model '{model}' does not exist. Available: {sorted(self.handles)}",
                               param="model", code="model_not_found", type="invalid_request_error")
        return model

    def _validate(self, body: dict[str, Any], model_cls: type[GatewayRequest], model: str) -> GatewayRequest:
        n = body.get("n")
        if isinstance(n, int) and not isinstance(n, bool) and n > self.config.limits.max_n:
            raise GatewayError(400, f"n must be at most {self.config.limits.max_n}, got {n}", param="n",
                               code="invalid_value")
        try:
            request = model_cls.model_validate(body)
        except ValidationError as e:
            raise from_validation_error(e) from e
        if request.steering is not None and request.steering.tier != "off":
            if not self.steerable[model]:
                raise GatewayError(400, f"steering is not configured for model '{model}' (no SAE steering "
                                   "middleware in its config)", param="steering", code="steering_unavailable")
            request_args = request.middleware_args()
            for validate in self.validators[model]:
                try:
                    validate(request_args)
                except ValueError as e:
                    raise GatewayError(400, str(e), param="steering", code="invalid_value") from e
        return request

    def _observe(self, model: str, endpoint: str, status: int, started: float) -> None:
        self.metrics.observe(model, endpoint, status, time.monotonic() - started)
