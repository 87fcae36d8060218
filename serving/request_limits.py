"""Reading a request body within bounds: size, arrival time, JSON validity, nesting, strings, messages.

Everything here runs before the request's model sees it, so a hostile body costs the gateway one
bounded read and one walk over the parsed JSON, never a tokenizer pass or an engine slot:
- size: a declared Content-Length over the limit is refused before reading; a body that streams
  in without one is cut off at the limit (413);
- time: a body that does not arrive within `body_timeout_s` is refused (408);
- JSON: not UTF-8, not JSON, nested past Python's recursion limit, or not an object (400);
- structure: nesting depth, string length and message count, walked without recursion (400, with
  the offending field's path in `param`);
- text: strings that are not Unicode text (lone surrogates, which Python's JSON parser lets through
  both as `\\ud800` escapes and as raw surrogate bytes) are refused here, before a tokenizer or a
  response encoder chokes on them (400).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request

from serving.config import LimitsConfig
from serving.errors import GatewayError

__all__ = ["read_body", "check_structure"]


async def read_body(raw: Request, limits: LimitsConfig) -> dict[str, Any]:
    """The request's JSON object, or a GatewayError (400, 408, 413)."""
    declared = raw.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(limits)
    try:
        data = await asyncio.wait_for(_read_bounded(raw, limits), limits.body_timeout_s)
    except TimeoutError:
        raise GatewayError(408, f"the request body did not arrive within {limits.body_timeout_s:g} s",
                           code="request_timeout") from None
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GatewayError(400, f"request body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:
        raise _too_deep(limits, None) from None
    if not isinstance(body, dict):
        raise GatewayError(400, "request body must be a JSON object", code="invalid_json")
    check_structure(body, limits)
    return body


async def _read_bounded(raw: Request, limits: LimitsConfig) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in raw.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise _too_large(limits)
        chunks.append(chunk)
    return b"".join(chunks)


def check_structure(body: dict[str, Any], limits: LimitsConfig) -> None:
    """Raise GatewayError (400) for nesting deeper than max_json_depth, a string (or key) longer than
    max_string_chars, or more than max_messages messages."""
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise GatewayError(400, f"messages: at most {limits.max_messages} messages per request, got {len(messages)}",
                           param="messages", code="too_many_messages")
    stack: list[tuple[Any, int, str]] = [(body, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            if len(value) > limits.max_string_chars:
                raise GatewayError(400, f"{path or 'body'}: strings may be at most {limits.max_string_chars} "
                                   f"characters, got {len(value)}", param=path or None, code="string_too_long")
            _check_text(value, path)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > limits.max_json_depth:
            raise _too_deep(limits, path)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and len(key) > limits.max_string_chars:
                raise GatewayError(400, f"a field name in {path or 'the body'} is longer than "
                                   f"{limits.max_string_chars} characters", param=path or None,
                                   code="string_too_long")
            if isinstance(key, str):
                _check_text(key, path)
            stack.append((item, depth + 1, f"{path}.{key}" if path else str(key)))


def _check_text(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise GatewayError(400, f"{path or 'body'}: not valid Unicode text (a lone surrogate)", param=path or None,
                           code="invalid_unicode") from None


def _too_large(limits: LimitsConfig) -> GatewayError:
    return GatewayError(413, f"request body larger than {limits.max_body_bytes} bytes", code="request_too_large")


def _too_deep(limits: LimitsConfig, path: str | None) -> GatewayError:
    where = f"{path}: " if path else ""
    return GatewayError(400, f"{where}JSON nested deeper than {limits.max_json_depth} levels", param=path,
                        code="nesting_too_deep")
