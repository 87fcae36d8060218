"""Policy actions on a stream, with scripted chunks and side outputs: block, stop, hold-back.

The detector here has one feature: score = sigmoid(4 log1p(a) - 4), so an activation of 0.1 scores
0.03 and one of 5 scores 0.96 (and the completion-so-far score stays there once reached)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from serving.config import MiddlewareConfig
from serving.engine.base import EngineError, SSEChunk, UsageReport
from serving.engine.side_channel import RequestSideOutputs
from serving.postprocess import ResponsePostprocessor
from serving.safety_gate import CompletionGate, SafetyPlan
from tests.middleware.test_detection import write_features

PROMPT = 3


@pytest.fixture()
def pp(tmp_path: Path) -> ResponsePostprocessor:
    features = write_features(tmp_path, [3], [4.0], -4.0)
    return ResponsePostprocessor([MiddlewareConfig(cls="middleware.detection:SafetyMiddleware", layer=3,
                                                   args={"features_path": str(features)})])


def _policy(**kw: Any) -> dict[str, Any]:
    return {"policy": {"name": "p", "prompt_threshold": 0.5, "completion_threshold": 0.5, **kw}}


def _chunk(i: int, n: int) -> str:
    usage = {"prompt_tokens": PROMPT, "completion_tokens": i + 1, "total_tokens": PROMPT + i + 1}
    finish = "length" if i == n - 1 else None
    obj = {"id": "x", "object": "text_completion", "created": 1, "model": "m",
           "choices": [{"index": 0, "text": f"t{i} ", "finish_reason": finish}], "usage": usage}
    return f"data: {json.dumps(obj)}\n\n"


LOW, HIGH = 0.1, 5.0  # feature activations that score 0.03 and 0.96


def _run(pp: ResponsePostprocessor, args: dict[str, Any], n: int, prompt_acts: list[float],
         completion_acts: list[float], client_usage: bool = False) -> list[Any]:
    """Stream n one-token chunks; the activations of token i arrive just before chunk i + 1, as in
    the engine (a token is scored when it is fed back)."""
    buf = RequestSideOutputs()
    buf.add("e", {"positions": list(range(PROMPT)), "is_prompt": [True] * PROMPT,
                  "toxicity_features": [[a] for a in prompt_acts], "steered": [0.0] * PROMPT})

    async def gen() -> AsyncIterator[str]:
        for i in range(n):
            if i > 0:
                buf.add("e", {"positions": [PROMPT + i - 1], "is_prompt": [False],
                              "toxicity_features": [[completion_acts[i - 1]]], "steered": [0.0]})
            yield _chunk(i, n)
        yield f"data: {json.dumps({'id': 'x', 'choices': [], 'usage': {'prompt_tokens': PROMPT, 'completion_tokens': n}})}\n\n"
        yield "data: [DONE]\n\n"

    async def collect() -> list[Any]:
        return [x async for x in pp.stream(gen(), buf, args, client_usage=client_usage,
                                           client_continuous_usage=False, num_choices=1)]

    return asyncio.run(collect())


def _sent(items: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(i.data[6:]) for i in items if isinstance(i, SSEChunk) and i.data.startswith("data: {")]


def _text(items: list[Any]) -> str:
    return "".join(c["choices"][0]["text"] for c in _sent(items) if c.get("choices"))


def test_stop_sends_nothing_from_the_flagged_token_or_the_window_before_it(pp: ResponsePostprocessor) -> None:
    acts = [LOW, LOW, LOW, LOW, LOW, HIGH, LOW, LOW, LOW]
    items = _run(pp, _policy(completion_action="stop", holdback_tokens=2), 10, [LOW] * PROMPT, acts)
    # Token 5 is flagged; tokens 3 and 4 were still inside the 2-token window, so only 0..2 went out.
    assert _text(items) == "t0 t1 t2 "
    last = _sent(items)[-1]
    assert last["choices"][0]["finish_reason"] == "content_filter"
    assert last["safety"]["completion"]["flagged"] and last["safety"]["policy"] == "p"
    assert items[-2] == SSEChunk("data: [DONE]\n\n")
    assert isinstance(items[-1], UsageReport)


def test_holdback_zero_still_waits_for_each_token_score(pp: ResponsePostprocessor) -> None:
    acts = [LOW, LOW, HIGH, LOW]
    items = _run(pp, _policy(completion_action="stop", holdback_tokens=0), 5, [LOW] * PROMPT, acts)
    assert _text(items) == "t0 t1 "


def test_clean_stream_is_released_whole_and_annotated(pp: ResponsePostprocessor) -> None:
    items = _run(pp, _policy(completion_action="stop", holdback_tokens=3), 6, [LOW] * PROMPT, [LOW] * 5)
    assert _text(items) == "t0 t1 t2 t3 t4 t5 "
    sent = _sent(items)
    assert sent[-1]["choices"][0]["finish_reason"] == "length"
    low = round(1 / (1 + math.exp(-(4 * math.log1p(LOW) - 4))), 6)
    assert sent[-1]["safety"]["completion"] == {"toxicity": low, "flagged": False, "steered_tokens": 0}
    assert [("safety" in c) for c in sent].count(True) == 1


def test_block_refuses_a_flagged_prompt_before_any_output(pp: ResponsePostprocessor) -> None:
    items = _run(pp, _policy(prompt_action="block"), 4, [LOW, HIGH, LOW], [LOW] * 3)
    assert len(items) == 1 and isinstance(items[0], EngineError)
    err = items[0]
    assert (err.status, err.code) == (400, "content_filter")
    assert err.safety is not None and err.safety["prompt"]["toxicity"] > 0.9 and err.safety["prompt"]["flagged"]


def test_block_lets_a_clean_prompt_through_and_annotate_never_acts(pp: ResponsePostprocessor) -> None:
    items = _run(pp, _policy(prompt_action="block"), 3, [LOW] * PROMPT, [HIGH] * 2)
    assert _text(items) == "t0 t1 t2 "  # completion action is annotate: flagged but sent
    assert _sent(items)[-1]["safety"]["completion"]["flagged"]


def test_stopped_stream_assembles_into_a_body(pp: ResponsePostprocessor) -> None:
    buf = RequestSideOutputs()
    buf.add("e", {"positions": [0, 1, 2, 3, 4], "is_prompt": [True] * 3 + [False] * 2,
                  "toxicity_features": [[0.0], [LOW], [LOW], [LOW], [HIGH]], "steered": [0.0] * 5})

    async def gen() -> AsyncIterator[str]:
        for i in range(4):
            yield _chunk(i, 4)

    async def run() -> Any:
        items = pp.stream(gen(), buf, _policy(completion_action="stop"), client_usage=True,
                          client_continuous_usage=False, num_choices=1)
        return await pp.collect(items)

    body = asyncio.run(run())
    assert body["object"] == "text_completion"
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert body["choices"][0]["text"] == ""  # token 1 is flagged as soon as it is known
    assert body["safety"]["completion"]["flagged"] and body["usage"]["prompt_tokens"] == PROMPT


def test_plan_defaults_and_gate_flags_first_bad_token() -> None:
    assert SafetyPlan.from_args({}) == SafetyPlan() and not SafetyPlan().gates_output
    gate = CompletionGate(SafetyPlan(completion_action="stop"), lambda: {0: 0.1, 1: float("nan"), 2: 0.7, 3: 0.8})
    assert gate.add({"c": 1}, 1) == [] and gate.flagged_at == 2 and gate.finish() == []


MID = 1.0  # scores 0.23; with the short-text shift of 2 (below), 0.68


@pytest.fixture()
def pp_short(tmp_path: Path) -> ResponsePostprocessor:
    features = write_features(tmp_path, [3], [4.0], -4.0)
    raw = json.loads(features.read_text())
    raw["detector"] |= {"short_words": 6, "short_shift": 2.0}
    features.write_text(json.dumps(raw))
    return ResponsePostprocessor([MiddlewareConfig(cls="middleware.detection:SafetyMiddleware", layer=3,
                                                   args={"features_path": str(features)})])


def test_a_response_that_ends_short_is_judged_as_a_short_text(pp_short: ResponsePostprocessor) -> None:
    # Three words, held back whole (hold-back 8): at the end its score meets the short-text threshold.
    stop = _policy(completion_action="stop", holdback_tokens=8)
    items = _run(pp_short, stop, 3, [LOW] * PROMPT, [MID, LOW])
    assert _text(items) == ""
    last = _sent(items)[-1]
    assert last["choices"][0]["finish_reason"] == "content_filter"
    assert last["safety"]["completion"]["flagged"] and last["safety"]["completion"]["toxicity"] > 0.5
    # The same token in a ten-word response: not short, released whole, and reported unshifted.
    items = _run(pp_short, stop, 10, [LOW] * PROMPT, [MID] + [LOW] * 8)
    assert _text(items) == "".join(f"t{i} " for i in range(10))
    assert not _sent(items)[-1]["safety"]["completion"]["flagged"]


def test_a_short_prompt_is_blocked_at_the_short_text_threshold(pp_short: ResponsePostprocessor) -> None:
    block = _policy(prompt_action="block")
    short = _run(pp_short, {**block, "prompt_words": 3}, 3, [LOW, MID, LOW], [LOW] * 2)
    assert isinstance(short[0], EngineError) and short[0].code == "content_filter"
    long = _run(pp_short, {**block, "prompt_words": 30}, 3, [LOW, MID, LOW], [LOW] * 2)
    assert _text(long) == "t0 t1 t2 " and not _sent(long)[-1]["safety"]["prompt"]["flagged"]


def test_a_short_non_streamed_answer_is_scored_as_a_short_text(pp_short: ResponsePostprocessor) -> None:
    def annotated(content: str) -> dict[str, Any]:
        buf = RequestSideOutputs()
        buf.add("e", {"positions": [0, 1, 2, 3], "is_prompt": [True, True, False, False],
                      "toxicity_features": [[0.0], [LOW], [MID], [LOW]], "steered": [0.0] * 4})
        body = {"object": "chat.completion", "usage": {"prompt_tokens": 2, "completion_tokens": 3},
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
        return asyncio.run(pp_short.finish_body(body, buf, _policy()))["safety"]["completion"]

    assert annotated("Oh, you clown.")["flagged"]
    assert not annotated("Oh, you clown, said the ringmaster to the new act.")["flagged"]


def test_a_stop_at_the_end_annotates_only_the_stop_chunk(pp_short: ResponsePostprocessor) -> None:
    # Hold-back 1: the first token goes out with the last chunk's arrival, then the end-of-response
    # check stops the rest; `safety` rides on the stop chunk alone.
    stop = _policy(completion_action="stop", holdback_tokens=1)
    items = _run(pp_short, stop, 3, [LOW] * PROMPT, [MID, LOW])
    sent = _sent(items)
    assert _text(items) == "t0 " and sent[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert [("safety" in c) for c in sent].count(True) == 1 and sent[-1]["safety"]["completion"]["flagged"]
