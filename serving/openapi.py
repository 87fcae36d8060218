"""The gateway's /openapi.json: the real request and response models, extension fields included.

The generation routes take the raw request on purpose (serving/ingress.py): the body is read within
bounds and validated by our own code, so every mistake is an OpenAI-shaped error with its status,
never FastAPI's bare 422. FastAPI therefore cannot see their bodies; this module describes them:
the request models of serving/protocol.py (vLLM's plus `steering`), the response models (vLLM's plus
`safety`; `text/event-stream` of chunk objects when `stream` is true) and `ErrorBody` for every
error status the route can answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from serving.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    ErrorBody,
)

__all__ = ["install_openapi", "ERROR_STATUSES"]

REF = "#/components/schemas/{model}"
# What a generation route answers besides 200, and why.
ERROR_STATUSES = {
    "400": "Invalid request (param names the field), or a prompt blocked by the policy (code content_filter).",
    "401": "Missing, malformed or unknown API key.",
    "403": "A steering override the tenant's policy locks.",
    "404": "Unknown model (code model_not_found).",
    "408": "The body did not arrive in time.",
    "413": "Body larger than limits.max_body_bytes.",
    "429": "Tenant rate limit (Retry-After).",
    "503": "Overloaded or the model server is restarting (Retry-After).",
    "504": "The request ran past admission.request_timeout_s and was aborted.",
}
_ROUTES: dict[str, tuple[type[BaseModel], type[BaseModel], type[BaseModel]]] = {
    "/v1/chat/completions": (ChatCompletionRequest, ChatCompletionResponse, ChatCompletionStreamResponse),
    "/v1/completions": (CompletionRequest, CompletionResponse, CompletionStreamResponse),
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _schemas() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(ErrorBody, "serialization")]
    for request, response, chunk in _ROUTES.values():
        models += [(request, "validation"), (response, "serialization"), (chunk, "serialization")]
    _, top = models_json_schema(models, ref_template=REF)
    return top.get("$defs", {})


def _operation(request: type[BaseModel], response: type[BaseModel], chunk: type[BaseModel]) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": _ref(ErrorBody)}}}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
        "responses": {
            "200": {
                "description": "A completion; with `stream: true`, server-sent events `data: <chunk>` ending in "
                "`data: [DONE]` (a failure after the first chunk is an event `data: {\"error\": {...}}`).",
                "content": {"application/json": {"schema": _ref(response)},
                            "text/event-stream": {"schema": {"type": "string"},
                                                  "x-steergate-event-schema": _ref(chunk)}},
            },
            **{status: {"description": why, **error} for status, why in ERROR_STATUSES.items()},
        },
    }


def install_openapi(app: FastAPI) -> None:
    """Replace `app.openapi` by one that adds the generation routes' bodies (built once, cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {}).setdefault("schemas", {}).update(_schemas())
            for path, models in _ROUTES.items():
                post = spec.get("paths", {}).get(path, {}).get("post")
                if post is not None:
                    post.update(_operation(*models))
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
