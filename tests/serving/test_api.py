"""The OpenAI surface of the running gateway, through the official openai client."""

from __future__ import annotations

import asyncio

import httpx
import openai

from tests.conftest import MODEL, async_openai

CHAT = [{"role": "user", "content": "Name three colours."}]


def test_models_lists_embedded_default(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert MODEL in ids


def test_health(gateway_url: str) -> None:
    r = httpx.get(f"{gateway_url}/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_chat_completion_and_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_greedy_is_deterministic(client: openai.OpenAI) -> None:
    a = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=16, temperature=0)
    b = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=16, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_completion_with_logprobs(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                  temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == r.usage.completion_tokens == 6
    assert all(len(t) == 2 for t in lp.top_logprobs)
    assert "Paris" in r.choices[0].text


def test_chat_top_logprobs(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert all(len(t.top_logprobs) == 3 for t in content)


def test_n_choices_and_seed(client: openai.OpenAI) -> None:
    kw = dict(model=MODEL, messages=CHAT, max_tokens=10, temperature=1.0, n=3, seed=1234, logprobs=True)
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    # usage counts every choice's tokens
    assert a.usage.completion_tokens == sum(len(c.logprobs.content) for c in a.choices)


def test_stop_sequence(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0, stop=[" 7"])
    assert r.choices[0].finish_reason == "stop"
    assert " 7" not in r.choices[0].text and "6" in r.choices[0].text


def test_streaming_chat_matches_non_streaming(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=16, temperature=0,
                                                 stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    # Usage was not asked for, so no chunk may carry it (the gateway asks vLLM for it internally).
    assert all(c.usage is None for c in chunks)


def test_streaming_include_usage(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model=MODEL, prompt="Hello", max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_ends_with_done(gateway_url: str) -> None:
    body = {"model": MODEL, "messages": CHAT, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"


def test_eight_concurrent_requests(gateway_url: str) -> None:
    async def run() -> list:
        async with async_openai(gateway_url) as client:
            return await asyncio.gather(*(
                client.completions.create(model=MODEL, prompt=f"Fact {i}:", max_tokens=16, temperature=0,
                                          extra_body={"ignore_eos": True})
                for i in range(10)
            ))

    results = asyncio.run(run())
    assert [r.usage.completion_tokens for r in results] == [16] * 10


def test_metrics_exposed(client: openai.OpenAI, gateway_url: str) -> None:
    client.completions.create(model=MODEL, prompt="hi", max_tokens=3)
    text = httpx.get(f"{gateway_url}/metrics").text
    for name in ("steergate_requests_total", "steergate_request_duration_seconds",
                 "steergate_time_to_first_token_seconds", "steergate_generated_tokens_total"):
        assert name in text
    line = next(l for l in text.splitlines()
                if l.startswith("steergate_requests_total{") and 'endpoint="completions"' in l and 'status="200"' in l)
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert f'steergate_generated_tokens_total{{arm="",experiment="",model="{MODEL}",policy="open"}}' in text


def test_ttft_recorded_for_streams(client: openai.OpenAI, gateway_url: str) -> None:
    list(client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=3, stream=True))
    text = httpx.get(f"{gateway_url}/metrics").text
    count = next(l for l in text.splitlines()
                 if l.startswith("steergate_time_to_first_token_seconds_count") and 'endpoint="chat"' in l)
    assert float(count.rsplit(" ", 1)[1]) >= 1


def test_streaming_usage_counts_every_choice(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model=MODEL, prompt="Once", max_tokens=5, n=2, temperature=0.7,
                                            top_p=0.9, seed=11, stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    assert chunks[-1].usage.completion_tokens == 10
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}
