"""One OpenAI-shaped error for every client mistake: {"error": {message, type, param, code}}.

FastAPI's default would answer a bare 422; `install_error_handlers` turns validation errors,
HTTP errors and unexpected exceptions into the OpenAI shape with a proper status.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.engine.base import EngineError, error_type_for

__all__ = ["GatewayError", "error_event", "error_response", "from_validation_error", "install_error_handlers"]

logger = logging.getLogger(__name__)

class GatewayError(Exception):
    """Raised anywhere in request handling; answered as an OpenAI error."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | int | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.error = EngineError(message, type=type or error_type_for(status),
                                 param=param, code=code, status=status)
        self.headers = headers


class _AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error message may quote what the client sent, and a string that
    is not valid Unicode must still render (as an escape) rather than fail the error response itself."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def error_response(error: EngineError, headers: dict[str, str] | None = None) -> JSONResponse:
    return _AsciiJSONResponse(error.body(), status_code=error.status, headers=headers)


def error_event(error: EngineError) -> str:
    """The error as a server-sent event, for a stream that fails after its 200 went out (the openai
    client raises APIError on it)."""
    return f"data: {json.dumps(error.body(), separators=(',', ':'))}\n\n"


def _loc(loc: tuple[Any, ...]) -> str | None:
    # Drop FastAPI's "body" prefix and pydantic's union-member tags so param reads like `messages.0.role`.
    parts = [str(p) for p in loc if p != "body" and not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
    return ".".join(parts) or None


def from_validation_error(exc: ValidationError | RequestValidationError) -> GatewayError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = _loc(tuple(first.get("loc", ())))
    msg = first.get("msg", "invalid request")
    message = f"{param}: {msg}" if param else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return GatewayError(400, message, param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway(_: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc.error, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(from_validation_error(exc).error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        code = "not_found" if status == 404 else ("method_not_allowed" if status == 405 else None)
        return error_response(EngineError(str(exc.detail), type=error_type_for(status),
                                          code=code, status=status))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return error_response(EngineError("internal server error", type="server_error", code="internal_error",
                                          status=500))
