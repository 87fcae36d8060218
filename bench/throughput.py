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

from common import bench_gateway_phase, bench_raw, prompts

from serving.config import GatewayConfig


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
        results["gateway"] = asyncio.run(bench_gateway_phase(url, "unused", "gateway", model.name, texts,
                                                             args.tokens, args.concurrency, warm_up=True))
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
