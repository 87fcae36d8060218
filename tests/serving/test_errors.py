"""Client mistakes get OpenAI-shaped 4xx errors, never a bare 422 or a 500, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import MODEL

USER = [{"role": "user", "content": "hi"}]


def _post(url: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(f"{url}{path}", timeout=60, **kw)


def _assert_openai_error(r: httpx.Response, status: int, param: str | None = "any") -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if param != "any":
        assert err["param"] == param, err
    return err


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "no-such-model", "messages": USER}, 404, "model"),
        ({"model": MODEL, "messages": []}, 400, "messages"),
        ({"model": MODEL}, 400, "messages"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
        ({"model": MODEL, "messages": "hello"}, 400, "messages"),
        ({"model": MODEL, "messages": USER, "temperature": -1}, 400, "temperature"),
        ({"model": MODEL, "messages": USER, "max_tokens": 10**6}, 400, "any"),
        ({"model": MODEL, "messages": USER, "n": 1000}, 400, "n"),
        ({"model": MODEL, "messages": USER, "max_tokens": "many"}, 400, "max_tokens"),
        ({"model": MODEL, "messages": USER, "steering": {"tier": "extreme"}}, 400, "any"),
        ({"model": MODEL, "messages": USER, "steering": {"interventions": [{"feature": -1, "mode": "add"}]}}, 400, "any"),
    ],
)
def test_bad_chat_requests(gateway_url: str, body: dict[str, Any], status: int, param: str | None) -> None:
    err = _assert_openai_error(_post(gateway_url, "/v1/chat/completions", json=body), status, param)
    if status == 404:
        assert err["code"] == "model_not_found"


@pytest.mark.parametrize("stream", [False, True])
def test_context_overflow_is_400_streaming_too(gateway_url: str, stream: bool) -> None:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 5000, "stream": stream}
    _assert_openai_error(_post(gateway_url, "/v1/completions", json=body), 400)


def test_malformed_json(gateway_url: str) -> None:
    r = _post(gateway_url, "/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert _assert_openai_error(r, 400)["code"] == "invalid_json"


def test_body_not_an_object(gateway_url: str) -> None:
    _assert_openai_error(_post(gateway_url, "/v1/completions", json=[1, 2]), 400)


def test_unknown_route_and_method(gateway_url: str) -> None:
    _assert_openai_error(httpx.get(f"{gateway_url}/v1/nothing-here"), 404)
    _assert_openai_error(httpx.get(f"{gateway_url}/v1/chat/completions"), 405)


def test_still_serving_after_errors(client) -> None:
    for body in ({"x": 1}, {"model": MODEL, "messages": []}):
        httpx.post(str(client.base_url) + "/chat/completions", json=body, timeout=30)
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=4)
    assert r.choices[0].message.content is not None
