"""Request bodies are read within bounds: each limit is a clear 4xx naming it (no gateway needed)."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import Request

from serving.config import LimitsConfig
from serving.errors import GatewayError
from serving.request_limits import check_structure, read_body

LIMITS = LimitsConfig(max_body_bytes=4096, max_messages=4, max_string_chars=100, max_json_depth=6, body_timeout_s=0.5)


def _request(chunks: list[bytes], headers: dict[str, str] | None = None, stall: bool = False) -> Request:
    """A starlette Request whose body arrives in `chunks` (and then never ends when `stall`)."""
    pending = list(chunks)

    async def receive() -> dict[str, object]:
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending) or stall}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw_headers}, receive)


def _error(chunks: list[bytes], **kw: object) -> GatewayError:
    with pytest.raises(GatewayError) as e:
        asyncio.run(read_body(_request(chunks, **kw), LIMITS))  # type: ignore[arg-type]
    return e.value


def test_a_valid_body_in_pieces() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "n": 1}
    data = json.dumps(body).encode()
    assert asyncio.run(read_body(_request([data[:10], data[10:]]), LIMITS)) == body


def test_declared_and_streamed_sizes_over_the_limit_are_413() -> None:
    assert _error([b"{}"], headers={"content-length": "5000"}).error.status == 413
    err = _error([b"[" * 3000, b"]" * 3000])  # no Content-Length: cut off while reading
    assert (err.error.status, err.error.code) == (413, "request_too_large")


def test_a_body_that_never_finishes_is_408() -> None:
    err = _error([b'{"a": '], stall=True)
    assert (err.error.status, err.error.code) == (408, "request_timeout")


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe{}", b"[1]", b"null", b'{"a": 1}{"b": 2}'])
def test_not_a_json_object_is_400(data: bytes) -> None:
    err = _error([data])
    assert (err.error.status, err.error.code) == (400, "invalid_json")


def test_nesting_beyond_the_parser_and_beyond_the_limit() -> None:
    limits = LIMITS.model_copy(update={"max_body_bytes": 100_000})
    with pytest.raises(GatewayError) as e:  # deeper than Python's recursion limit
        asyncio.run(read_body(_request([b"[" * 50_000 + b"]" * 50_000]), limits))
    assert e.value.error.code == "nesting_too_deep"
    with pytest.raises(GatewayError) as e:
        check_structure({"steering": {"a": [[[[[1]]]]]}}, LIMITS)
    assert (e.value.error.status, e.value.error.param) == (400, "steering.a.0.0.0.0")  # the 7th level


def test_long_strings_and_keys_and_many_messages() -> None:
    with pytest.raises(GatewayError) as e:
        check_structure({"messages": [{"role": "user", "content": "x" * 101}]}, LIMITS)
    assert (e.value.error.code, e.value.error.param) == ("string_too_long", "messages.0.content")
    with pytest.raises(GatewayError, match="field name"):
        check_structure({"k" * 101: 1}, LIMITS)
    with pytest.raises(GatewayError) as e:
        check_structure({"messages": [{"role": "user", "content": "x"}] * 5}, LIMITS)
    assert (e.value.error.code, e.value.error.param) == ("too_many_messages", "messages")
    check_structure({"messages": [{"role": "user", "content": "x" * 100}] * 4}, LIMITS)  # at the limits: fine


@pytest.mark.parametrize("data", [b'{"model": "\\ud800"}', b'{"m": "a\xed\xa0\x80b"}', b'{"\\udfff": 1}'])
def test_strings_that_are_not_unicode_text_are_400(data: bytes) -> None:
    err = _error([data])
    assert (err.error.status, err.error.code) == (400, "invalid_unicode")
