"""Shared pieces of the benchmarks: prompts, timing of concurrent streamed requests, raw vLLM runs."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serving.config import ModelConfig

TOPICS = ["the ocean", "a lighthouse", "bread", "volcanoes", "a chess game", "winter", "trains", "bees",
          "a library", "the moon", "coffee", "a desert", "rain", "a violin", "mountains", "a market"]


def prompts(n: int) -> list[str]:
    return [f"Here is a short story about {TOPICS[i % len(TOPICS)]} (part {i // len(TOPICS) + 1}):"
            for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    """The value at rank int(q * n) of the sorted values (nan when there are none)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


@dataclass
class Result:
    name: str
    tokens: int
    seconds: float
    ttft_s: list[float]

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds

    def line(self) -> str:
        t = self.ttft_s
        return (f"{self.name:<14} {self.tok_s:8.1f} tok/s   {self.tokens} tokens in {self.seconds:6.2f} s   "
                f"TTFT p50 {statistics.median(t) * 1000:6.0f} ms  p95 {percentile(t, 0.95) * 1000:6.0f} ms")


async def run_concurrently(texts: list[str], concurrency: int, one) -> tuple[int, float, list[float]]:
    sem = asyncio.Semaphore(concurrency)

    async def guarded(text: str) -> tuple[int, float]:
        async with sem:
            return await one(text)

    start = time.monotonic()
    done = await asyncio.gather(*(guarded(t) for t in texts))
    return sum(d[0] for d in done), time.monotonic() - start, [d[1] for d in done]


async def bench_raw(name: str, model: ModelConfig, texts: list[str], tokens: int, concurrency: int,
                    enforce_eager: bool, engine_kwargs: dict[str, Any] | None = None,
                    extra_args: Callable[[int], dict[str, Any] | None] | None = None) -> Result:
    """Run `texts` through an in-process vLLM AsyncLLM (no server). extra_args(i) gives request i's
    SamplingParams.extra_args (how per-request middleware arguments reach the engine)."""
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    from middleware.embedded import embedded_model_dir
    from serving.engine.vllm_engine import _set_cpu_env

    _set_cpu_env(model)
    e = model.engine
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(
        model=model.path or str(embedded_model_dir()), dtype=e.dtype, enforce_eager=enforce_eager,
        max_model_len=e.max_model_len, max_num_seqs=e.max_num_seqs, seed=e.seed,
        stream_interval=e.stream_interval, **(engine_kwargs or {})))
    index = {t: i for i, t in enumerate(texts)}
    counter = 0

    async def one(text: str) -> tuple[int, float]:
        nonlocal counter
        counter += 1
        params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True,
                                output_kind=RequestOutputKind.DELTA,
                                extra_args=extra_args(index[text]) if extra_args else None)
        start, first, n = time.monotonic(), None, 0
        async for out in engine.generate(text, params, request_id=f"{name}-{counter}"):
            n += len(out.outputs[0].token_ids)
            if first is None and n:
                first = time.monotonic() - start
        return n, first or 0.0

    try:
        await run_concurrently(texts[:concurrency], concurrency, one)  # warm-up: one full wave
        n, secs, ttft = await run_concurrently(texts, concurrency, one)
    finally:
        engine.shutdown()
        # Collect it now: AsyncLLM.__del__ run at interpreter exit prints a spurious TypeError.
        engine = None  # (not `del`: the closure `one` shares this variable)
        gc.collect()
    return Result(name, n, secs, ttft)


async def bench_gateway_phase(url: str, key: str, name: str, model: str, texts: list[str], tokens: int,
                              concurrency: int, warm_up: bool = False) -> Result:
    """Stream `texts` through the gateway with the openai client (completions, exactly `tokens`
    tokens each, ignore_eos) at `concurrency`; TTFT is the first chunk with text."""
    import openai

    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, timeout=600) as client:
        async def one(text: str) -> tuple[int, float]:
            start, first, n = time.monotonic(), None, 0
            stream = await client.completions.create(
                model=model, prompt=text, max_tokens=tokens, temperature=0, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].text and first is None:
                    first = time.monotonic() - start
                if chunk.usage:
                    n = chunk.usage.completion_tokens
            return n, first or 0.0

        if warm_up:
            await run_concurrently(texts[:concurrency], concurrency, one)  # one full wave
        n, secs, ttft = await run_concurrently(texts, concurrency, one)
    return Result(name, n, secs, ttft)
