"""The `steering` request field end to end: validation, per-request steering in a shared batch,
and the `safety` annotation (tier, steered_tokens), through the real gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import D_SAE, MODEL, async_openai

MSG = [{"role": "user", "content": "Tell me about your favourite season."}]
ADD = {"interventions": [{"feature": 5, "mode": "add", "strength": 40.0}]}


def _chat(client: openai.OpenAI, steering: dict[str, Any] | None, **kw: Any) -> Any:
    extra = {"ignore_eos": True, **({"steering": steering} if steering else {})}
    return client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=kw.pop("max_tokens", 16),
                                          temperature=0, extra_body=extra, **kw)


def test_strong_add_shifts_greedy_output(client: openai.OpenAI) -> None:
    plain, steered = _chat(client, None), _chat(client, ADD)
    assert steered.choices[0].message.content != plain.choices[0].message.content
    assert steered.model_extra["safety"]["tier"] == "custom"
    # "generated" positions: every generated token fed back through the model was steered.
    assert steered.model_extra["safety"]["completion"]["steered_tokens"] == steered.usage.completion_tokens - 1
    assert steered.model_extra["safety"]["prompt"]["steered_tokens"] == 0


def test_request_can_steer_its_prompt(client: openai.OpenAI) -> None:
    """steer_positions "both": the prompt's tokens are steered too (chat-template tokens excepted)."""
    r = _chat(client, {**ADD, "steer_positions": "both"}, max_tokens=4)
    assert 0 < r.model_extra["safety"]["prompt"]["steered_tokens"] < r.usage.prompt_tokens
    assert r.model_extra["safety"]["completion"]["steered_tokens"] == 3
    with pytest.raises(openai.BadRequestError) as e:
        _chat(client, {"tier": "strong", "steer_positions": "everywhere"})
    assert e.value.body["param"].startswith("steering")


def test_unsteered_request_is_annotated_off(client: openai.OpenAI) -> None:
    r = _chat(client, None)
    assert r.model_extra["safety"]["tier"] == "off"
    assert r.model_extra["safety"]["completion"]["steered_tokens"] == 0


def test_tier_off_equals_no_steering(client: openai.OpenAI) -> None:
    assert _chat(client, {"tier": "off"}).choices[0].message.content == _chat(client, None).choices[0].message.content


def test_strong_tier_steers_generated_tokens_only(client: openai.OpenAI) -> None:
    # The calibrated strong tier may be gated (tiers.json), so it steers at most every generated token.
    r = _chat(client, {"tier": "strong"})
    assert r.model_extra["safety"]["tier"] == "strong"
    assert 0 <= r.model_extra["safety"]["completion"]["steered_tokens"] <= r.usage.completion_tokens - 1
    assert r.model_extra["safety"]["prompt"]["steered_tokens"] == 0


def test_light_tier_only_where_features_fire(client: openai.OpenAI) -> None:
    r = _chat(client, {"tier": "light"}, max_tokens=24)
    safety = r.model_extra["safety"]
    assert safety["tier"] == "light"
    assert 0 <= safety["completion"]["steered_tokens"] <= r.usage.completion_tokens - 1


def test_mixed_specs_in_one_batch(gateway_url: str) -> None:
    other = {"interventions": [{"feature": 7, "mode": "add", "strength": -40.0}]}
    specs: list[dict[str, Any] | None] = [None, other, None, ADD, {"tier": "light"}, None]

    async def run(with_steering: bool) -> list[str]:
        async with async_openai(gateway_url) as client:
            rs = await asyncio.gather(*(
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"Describe object number {i}."}],
                    max_tokens=20, temperature=0,
                    extra_body={"ignore_eos": True, **({"steering": s} if with_steering and s else {})})
                for i, s in enumerate(specs)))
        return [r.choices[0].message.content for r in rs]

    plain, mixed = asyncio.run(run(False)), asyncio.run(run(True))
    for i, spec in enumerate(specs):
        if spec is None:
            assert mixed[i] == plain[i], f"unsteered request {i} changed"
    assert mixed[1] != plain[1] and mixed[3] != plain[3]


def test_steering_with_n_choices(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="My day was", max_tokens=6, n=2, temperature=0.9, seed=3,
                                  extra_body={"ignore_eos": True, "steering": ADD})
    assert r.model_extra["safety"]["completion"]["steered_tokens"] == r.usage.completion_tokens - 2


def test_steered_stream_annotated(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=8, temperature=0,
                                                 stream=True, extra_body={"ignore_eos": True, "steering": ADD}))
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert last.model_extra["safety"]["tier"] == "custom"
    assert last.model_extra["safety"]["completion"]["steered_tokens"] == 7


@pytest.mark.parametrize("steering", [
    {"tier": "extreme"},
    {"interventions": [{"feature": D_SAE, "mode": "add", "strength": 1.0}]},
    {"interventions": [{"feature": 1, "mode": "boost", "strength": 1.0}]},
    {"interventions": [{"feature": 1, "mode": "add", "strength": 1.0}] * 17},
    {"tier": "light", "interventions": []},
    {"interventions": [{"feature": 1, "mode": "add", "strength": 1.0, "extra": 2}]},
])
def test_bad_steering_is_400(gateway_url: str, steering: dict[str, Any]) -> None:
    r = httpx.post(f"{gateway_url}/v1/chat/completions", timeout=30,
                   json={"model": MODEL, "messages": MSG, "steering": steering})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith("steering")


def test_non_finite_strength_is_400(gateway_url: str) -> None:
    body = ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}], '
            '"steering": {"interventions": [{"feature": 1, "mode": "add", "strength": Infinity}]}}' % MODEL)
    r = httpx.post(f"{gateway_url}/v1/chat/completions", content=body, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "finite" in r.json()["error"]["message"]
