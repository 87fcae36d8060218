"""What live fluency scoring costs live traffic: tokens/s and TTFT p50 at sample rates 0, 0.1 and 1.0,
side by side in one run.

One gateway (embedded model, shipped SAE safety middleware, vLLM priority scheduling) under a
generated policy file with one tenant per sample rate (otherwise identical: annotate, no steering).
The same streamed requests go through each tenant in interleaved rounds, so drift hits every rate
alike. Between phases the bench waits for the scoring queue to drain, so each phase pays for its
own scoring and no other; it prints how many samples each rate scored and dropped.

    .venv/bin/python bench/fluency.py [--requests 16] [--tokens 48] [--concurrency 8] [--rounds 2]

`--scheduler` adds the cost of vLLM's priority scheduler itself: the same requests through an
in-process engine with scheduling_policy fcfs and priority (no gateway, no scoring).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from common import Result, bench_gateway_phase, bench_raw, prompts

from serving.config import GatewayConfig

RATES = (0.0, 0.1, 1.0)


def name(rate: float) -> str:
    return f"rate-{rate:g}"


def policy_file(directory: Path) -> Path:
    policies = {name(r): {"steering": {"tier": "off"}, "stream": {"holdback_tokens": 0},
                          "fluency": {"sample_rate": r}} for r in RATES}
    tenants = {name(r): {"policy": name(r), "keys": [f"k-{name(r)}"]} for r in RATES}
    path = directory / "fluency-policies.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "anonymous_tenant": None, "policies": policies,
                                    "tenants": tenants}))
    return path


def scoring(url: str) -> dict[str, float]:
    """{policy: samples scored} plus "queued" and "dropped", from the gateway's /metrics."""
    out: dict[str, float] = {"queued": 0.0, "dropped": 0.0}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        value = float(line.rsplit(" ", 1)[1]) if line and not line.startswith("#") else 0.0
        if line.startswith("steergate_fluency_perplexity_count{"):
            policy = line.split('policy="', 1)[1].split('"', 1)[0]
            out[policy] = out.get(policy, 0.0) + value
        elif line.startswith("steergate_fluency_queue_depth"):
            out["queued"] += value
        elif line.startswith("steergate_fluency_dropped_total{"):
            out["dropped"] += value
    return out


def drain(url: str, timeout_s: float = 600) -> float:
    """Wait until the scoring queue is empty and the last score has landed; seconds waited."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout_s:
        now = scoring(url)
        if now["queued"] == 0 and now == last:
            break
        last = now
        time.sleep(1.0)
    return time.monotonic() - start


def scheduler_cost(model: GatewayConfig, texts: list[str], tokens: int, concurrency: int) -> None:
    print("\nvLLM scheduler alone (in-process engine, no gateway, no scoring):", flush=True)
    m = model.models[0]
    results = {policy: asyncio.run(bench_raw(policy, m, texts, tokens, concurrency, m.engine.enforce_eager,
                                             engine_kwargs={"scheduling_policy": policy}))
               for policy in ("fcfs", "priority")}
    for r in results.values():
        print(r.line(), flush=True)
    ratio = results["priority"].tok_s / results["fcfs"].tok_s
    print(f"priority vs fcfs: {ratio:.3f}x tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=8126)
    parser.add_argument("--scheduler", action="store_true", help="also measure fcfs vs priority scheduling")
    args = parser.parse_args()
    from serving.launcher import start_gateway, stop_gateway

    tmp = Path(tempfile.mkdtemp())
    config = GatewayConfig(port=args.port, policies=str(policy_file(tmp)))
    model = config.models[0]
    texts = prompts(args.requests)
    print(f"{args.requests} streamed requests x {args.tokens} tokens, concurrency {args.concurrency}, "
          f"{os.cpu_count()} CPUs, scheduling_policy {model.engine.scheduling_policy}, fluency queue "
          f"{config.fluency.queue_size} x {config.fluency.workers} worker(s), {args.rounds} rounds",
          flush=True)
    url = start_gateway(config)
    results: dict[float, list[Result]] = {r: [] for r in RATES}
    drained: dict[float, list[float]] = {r: [] for r in RATES}
    try:
        asyncio.run(bench_gateway_phase(url, f"k-{name(0.0)}", "warm-up", model.name, texts, args.tokens,
                                        args.concurrency))
        for _ in range(args.rounds):
            for rate in RATES:
                r = asyncio.run(bench_gateway_phase(url, f"k-{name(rate)}", name(rate), model.name, texts,
                                                    args.tokens, args.concurrency))
                drained[rate].append(drain(url))
                results[rate].append(r)
                print(f"{r.line()}   scoring drained {drained[rate][-1]:.1f} s after", flush=True)
        scored = scoring(url)
    finally:
        stop_gateway()
    print()
    merged = {rate: Result(name(rate), sum(r.tokens for r in rs), sum(r.seconds for r in rs),
                           [t for r in rs for t in r.ttft_s]) for rate, rs in results.items()}
    base = merged[0.0]
    for rate, m in merged.items():
        p50, base_p50 = statistics.median(m.ttft_s), statistics.median(base.ttft_s)
        sent = args.requests * args.rounds
        print(f"{m.line()}   vs rate 0: {m.tok_s / base.tok_s:.3f}x tok/s, TTFT p50 {p50 / base_p50:.2f}x   "
              f"scored {scored.get(name(rate), 0):g}/{sent} responses")
    print(f"dropped (queue full or error): {scored['dropped']:g}")
    if args.scheduler:
        scheduler_cost(config, texts, args.tokens, args.concurrency)


if __name__ == "__main__":
    main()
