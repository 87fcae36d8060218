"""The in-engine hook point: per-request edits inside one shared batch, side outputs back to the response.

The test gateway runs the SAE steering middleware and tests/serving/hooks.py:StreamNormHook in the
compiled vLLM graph (tests/conftest.py). A request opts into an edit with `steering`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai

from serving.app import model_deployment_name
from serving.launcher import APP_NAME
from tests.conftest import MODEL, async_openai

PROMPTS = [f"Write one sentence about {topic}." for topic in ("rivers", "bread", "trains", "owls", "glass")]
SHIFT = {"steering": {"interventions": [{"feature": 0, "mode": "add", "strength": 40.0}]}}


async def _batch(gateway_url: str, steered: int | None) -> list[Any]:
    """All prompts at once (one engine batch); only index `steered` asks for the edit."""
    async with async_openai(gateway_url) as client:
        return await asyncio.gather(*(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=24, temperature=0,
                # Same lengths for every request keeps the batch shape identical between runs.
                extra_body={"ignore_eos": True, **(SHIFT if i == steered else {})},
            )
            for i, p in enumerate(PROMPTS)
        ))


def test_hook_changes_only_the_steered_request(gateway_url: str) -> None:
    base = asyncio.run(_batch(gateway_url, steered=None))
    mixed = asyncio.run(_batch(gateway_url, steered=2))
    texts = lambda rs: [r.choices[0].message.content for r in rs]  # noqa: E731
    assert texts(mixed)[2] != texts(base)[2], "the hook did not change the steered request"
    for i in (0, 1, 3, 4):
        assert texts(mixed)[i] == texts(base)[i], f"request {i} changed although only request 2 was steered"


def test_side_outputs_reach_their_own_response(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPTS[0]}],
                                       max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
    seen = r.model_extra["safety"]["test_hook"]
    # Every prompt token and every generated token but the last (never fed back) passed the hook.
    assert seen["prompt_tokens"] == r.usage.prompt_tokens
    assert seen["completion_tokens"] == r.usage.completion_tokens - 1
    assert seen["positions"] == list(range(r.usage.prompt_tokens + r.usage.completion_tokens - 1))


def test_side_outputs_with_n_choices(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, n=3, temperature=0.8,
                                  seed=7, extra_body={"ignore_eos": True})
    seen = r.model_extra["safety"]["test_hook"]
    assert seen["prompt_tokens"] == 3 * r.usage.prompt_tokens
    assert seen["completion_tokens"] == r.usage.completion_tokens - 3


def test_side_outputs_on_last_stream_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPTS[1]}], max_tokens=8, temperature=0,
        stream=True, extra_body={"ignore_eos": True}))
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    seen = last.model_extra["safety"]["test_hook"]
    assert seen["completion_tokens"] == 7
    assert all("safety" not in (c.model_extra or {}) for c in chunks if c is not last)


def test_streaming_steered_equals_non_streaming_steered(client: openai.OpenAI) -> None:
    kw = dict(model=MODEL, messages=[{"role": "user", "content": PROMPTS[3]}], max_tokens=12, temperature=0,
              extra_body=SHIFT)
    full = client.chat.completions.create(**kw).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or ""
                       for c in client.chat.completions.create(stream=True, **kw) if c.choices)
    assert streamed == full


def test_client_disconnect_aborts_engine_request(gateway_url: str) -> None:
    from ray import serve

    handle = serve.get_deployment_handle(model_deployment_name(MODEL), app_name=APP_NAME)
    body = {"model": MODEL, "prompt": "Count forever:", "max_tokens": 1500, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{gateway_url}/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()  # keep the iterator alive: closing it closes the connection
        for _ in range(6):
            next(lines)
        assert handle.num_unfinished_requests.remote().result() >= 1
    # Leaving the block closed the connection mid-stream.
    # 1500 tokens take far longer than this on CPU; only an abort empties the engine in time.
    deadline = time.monotonic() + 10
    while handle.num_unfinished_requests.remote().result() > 0:
        assert time.monotonic() < deadline, "engine request still running after the client left"
        time.sleep(0.2)
