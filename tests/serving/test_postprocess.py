"""Stream post-processing: usage stripped unless asked for, `safety` on the finishing chunk only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from serving.config import MiddlewareConfig
from serving.engine.base import EngineError, SSEChunk, UsageReport
from serving.engine.side_channel import RequestSideOutputs
from serving.postprocess import ResponsePostprocessor

HOOK = [MiddlewareConfig(cls="tests.serving.hooks:StreamNormHook", layer=1)]


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def _chunks(n_tokens: int, prompt: int = 3) -> list[str]:
    out = []
    for i in range(n_tokens):
        usage = {"prompt_tokens": prompt, "completion_tokens": i + 1, "total_tokens": prompt + i + 1}
        finish = "length" if i == n_tokens - 1 else None
        out.append(_sse({"id": "x", "choices": [{"index": 0, "text": f"t{i}", "finish_reason": finish}],
                         "usage": usage}))
    out.append(_sse({"id": "x", "choices": [], "usage": usage}))
    out.append("data: [DONE]\n\n")
    return out


async def _collect(pp: ResponsePostprocessor, chunks: list[str], buf: RequestSideOutputs, **kw: Any) -> list[Any]:
    async def gen() -> AsyncIterator[str]:
        for c in chunks:
            yield c

    return [item async for item in pp.stream(gen(), buf, {}, num_choices=1, **kw)]


def _buf(positions: int) -> RequestSideOutputs:
    buf = RequestSideOutputs()
    buf.add("engine-1", {"positions": list(range(positions)), "is_prompt": [p < 3 for p in range(positions)],
                         "stream_norm": [1.0] * positions})
    return buf


def test_usage_stripped_when_not_requested() -> None:
    items = asyncio.run(_collect(ResponsePostprocessor([]), _chunks(3), _buf(0),
                                 client_usage=False, client_continuous_usage=False))
    sent = [json.loads(i.data[6:]) for i in items if isinstance(i, SSEChunk) and "[DONE]" not in i.data]
    assert len(sent) == 3 and all("usage" not in s for s in sent)
    assert items[-1] == UsageReport(3, 3)  # still reported to metrics


def test_final_usage_chunk_kept_when_requested() -> None:
    items = asyncio.run(_collect(ResponsePostprocessor([]), _chunks(2), _buf(0),
                                 client_usage=True, client_continuous_usage=False))
    sent = [json.loads(i.data[6:]) for i in items if isinstance(i, SSEChunk) and "[DONE]" not in i.data]
    assert [("usage" in s) for s in sent] == [False, False, True]


def test_safety_only_on_finishing_chunk() -> None:
    items = asyncio.run(_collect(ResponsePostprocessor(HOOK), _chunks(4), _buf(3 + 3),
                                 client_usage=False, client_continuous_usage=False))
    sent = [json.loads(i.data[6:]) for i in items if isinstance(i, SSEChunk) and "[DONE]" not in i.data]
    assert [("safety" in s) for s in sent] == [False, False, False, True]
    assert sent[-1]["safety"]["test_hook"] == {"prompt_tokens": 3, "completion_tokens": 3,
                                               "positions": list(range(6)), "norms": [1.0] * 6}


def test_error_before_output_becomes_http_error() -> None:
    err = _sse({"error": {"message": "too long", "type": "BadRequestError", "param": None, "code": 400}})
    items = asyncio.run(_collect(ResponsePostprocessor([]), [err], _buf(0),
                                 client_usage=False, client_continuous_usage=False))
    assert items == [EngineError("too long", type="invalid_request_error", param=None, code=400, status=400)]
