"""vLLM's AsyncLLM, plus the token ids of the requests live fluency scoring sampled.

Scoring a completion's fluency needs its exact token ids (prompt and completion), which vLLM's
OpenAI serving classes do not hand back unless the client asks for them (`return_token_ids`, which
also changes what the client is sent). They do reach `AsyncLLM.generate`'s outputs, so this
subclass copies them there, only for requests the server opened a record for (by steergate request
id, from the request args every request carries); every other request takes the unchanged path.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from vllm.outputs import RequestOutput
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from middleware.hooks import REQUEST_ARGS_KEY

__all__ = ["RecordingAsyncLLM", "TokenRecord"]


@dataclass
class TokenRecord:
    """The token ids of one engine (sub-)request: its prompt and each of its `n` completions."""

    prompt: list[int] = field(default_factory=list)
    completions: dict[int, list[int]] = field(default_factory=dict)  # output index -> token ids


class RecordingAsyncLLM(AsyncLLM):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # steergate request id -> engine (sub-)request id -> its tokens
        self.records: dict[str, dict[str, TokenRecord]] = {}

    def open_record(self, rid: str) -> None:
        self.records[rid] = {}

    def close_record(self, rid: str) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, completion ids) of every completion recorded under `rid`, in order."""
        subs = self.records.pop(rid, {})
        return [(rec.prompt, ids) for rec in subs.values() for _, ids in sorted(rec.completions.items())]

    def generate(self, prompt: Any, sampling_params: Any, request_id: str,
                 **kwargs: Any) -> AsyncGenerator[RequestOutput, None]:
        stream = super().generate(prompt, sampling_params, request_id, **kwargs)
        args = (getattr(sampling_params, "extra_args", None) or {}).get(REQUEST_ARGS_KEY) or {}
        subs = self.records.get(args.get("rid", ""))
        if subs is None:
            return stream
        delta = sampling_params.output_kind == RequestOutputKind.DELTA
        return _recorded(stream, subs.setdefault(request_id, TokenRecord()), delta)


async def _recorded(stream: AsyncGenerator[RequestOutput, None], record: TokenRecord,
                    delta: bool) -> AsyncGenerator[RequestOutput, None]:
    try:
        async for out in stream:
            if out.prompt_token_ids is not None:
                record.prompt = list(out.prompt_token_ids)
            for o in out.outputs:
                ids = record.completions.setdefault(o.index, [])
                if delta:
                    ids.extend(o.token_ids)
                else:  # cumulative / final-only outputs carry every token so far
                    ids[:] = o.token_ids
            yield out
    finally:
        # Closing this wrapper (a stopped or abandoned stream) must close vLLM's generator now: that
        # is what aborts the engine request.
        await stream.aclose()
