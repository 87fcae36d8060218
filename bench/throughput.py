"""Gateway vs raw vLLM on the same prompts, side by side in one run.

Phases, one after another so they never share the CPU:
  raw-compiled  vLLM AsyncLLM in this process, torch.compile, no hooks (vLLM's fastest mode)
  raw-eager     the same with enforce_eager (what forward hooks would need)
  gateway       the full path: openai client -> HTTP -> Ray Serve ingress -> model server -> vLLM,
                with the serving config given (default: the one `make serve` uses)
Every phase runs the same N streamed requests of exactly T tokens (ignore_eos) at concurrency C,
after a warm-up, and reports tokens/s and time to first token. Ratios are gateway / raw.

    .venv/bin/python bench/throughput.py [--requests 32] [--tokens 64] [--concurrency 16] [--config FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from common import Result, bench_raw, prompts, run_concurrently

from serving.config import GatewayConfig


async def bench_gateway(url: str, model: str, texts: list[str], tokens: int, concurrency: int) -> Result:
    import openai

    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600) as client:
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

        await run_concurrently(texts[:concurrency], concurrency, one)  # warm-up: one full wave
        n, secs, ttft = await run_concurrently(texts, concurrency, one)
    return Result("gateway", n, secs, ttft)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--config", help="gateway serving config YAML (default: the built-in default)")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--stream-interval", type=int, help="override engine.stream_interval for all phases")
    args = parser.parse_args()

    config = GatewayConfig.from_file(args.config) if args.config else GatewayConfig()
    config = config.model_copy(update={"port": args.port})
    if args.stream_interval:
        for m in config.models:
            m.engine.stream_interval = args.stream_interval
    model = config.models[0]
    texts = prompts(args.requests)
    gateway_mode = "eager" if model.engine.enforce_eager else "compiled"
    hooks = f"{len(model.middleware)} middleware" if model.middleware else "no middleware"
    print(f"{args.requests} requests x {args.tokens} tokens, concurrency {args.concurrency}, "
          f"{os.cpu_count()} CPUs; stream_interval {model.engine.stream_interval}; "
          f"gateway engine: {gateway_mode}, {hooks}", flush=True)

    results = {
        "raw-compiled": asyncio.run(bench_raw("raw-compiled", model, texts, args.tokens, args.concurrency, False)),
        "raw-eager": asyncio.run(bench_raw("raw-eager", model, texts, args.tokens, args.concurrency, True)),
    }
    from serving.launcher import start_gateway, stop_gateway

    url = start_gateway(config)
    try:
        results["gateway"] = asyncio.run(bench_gateway(url, model.name, texts, args.tokens, args.concurrency))
    finally:
        stop_gateway()

    print()
    for r in results.values():
        print(r.line())
    g = results["gateway"].tok_s
    same_mode = results[f"raw-{gateway_mode}"].tok_s
    print(f"\ngateway / raw vLLM in the gateway's engine mode ({gateway_mode}): {g / same_mode:.2f}x")
    print(f"gateway / raw vLLM fastest mode (compiled, no hooks):        {g / results['raw-compiled'].tok_s:.2f}x")


if __name__ == "__main__":
    main()
