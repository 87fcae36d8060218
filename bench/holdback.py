"""What the streaming hold-back window costs in time to first token, side by side in one run.

A policy that `stop`s toxic output may not send a token before it (and `holdback_tokens` more)
have been scored by the in-engine detector. This runs the gateway (embedded model, shipped SAE
safety middleware) under a generated policy file with one tenant per setting, and streams the
same requests for each, in interleaved rounds so drift hits every setting alike:

  annotate   no gate: tokens go out as vLLM produces them (the baseline)
  hold-N     completion action `stop` with holdback_tokens N (threshold 1.0, so nothing actually
             stops: what is measured is the window alone)

    .venv/bin/python bench/holdback.py [--requests 16] [--tokens 48] [--concurrency 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

import yaml
from common import Result, bench_gateway_phase, prompts

from serving.config import GatewayConfig

WINDOWS = (0, 4, 8, 16)


def policy_file(directory: Path) -> Path:
    policies = {"annotate": {"steering": {"tier": "off"}, "stream": {"holdback_tokens": 0}}}
    tenants = {"annotate": {"policy": "annotate", "keys": ["k-annotate"]}}
    for n in WINDOWS:
        policies[f"hold-{n}"] = {"extends": "annotate", "actions": {"completion": "stop"},
                                 "detection": {"completion_threshold": 1.0}, "stream": {"holdback_tokens": n}}
        tenants[f"hold-{n}"] = {"policy": f"hold-{n}", "keys": [f"k-hold-{n}"]}
    path = directory / "holdback-policies.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "anonymous_tenant": None, "policies": policies,
                                    "tenants": tenants}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=8124)
    args = parser.parse_args()
    from serving.launcher import start_gateway, stop_gateway

    tmp = Path(tempfile.mkdtemp())
    config = GatewayConfig(port=args.port, policies=str(policy_file(tmp)))
    model = config.models[0]
    texts = prompts(args.requests)
    names = ["annotate", *(f"hold-{n}" for n in WINDOWS)]
    print(f"{args.requests} streamed requests x {args.tokens} tokens, concurrency {args.concurrency}, "
          f"{os.cpu_count()} CPUs, stream_interval {model.engine.stream_interval}, {args.rounds} rounds", flush=True)
    url = start_gateway(config)
    results: dict[str, list[Result]] = {n: [] for n in names}
    try:
        asyncio.run(bench_gateway_phase(url, "k-annotate", "warm-up", model.name, texts, args.tokens,
                                        args.concurrency))
        for _ in range(args.rounds):
            for name in names:
                r = asyncio.run(bench_gateway_phase(url, f"k-{name}", name, model.name, texts, args.tokens,
                                                    args.concurrency))
                results[name].append(r)
                print(r.line(), flush=True)
    finally:
        stop_gateway()
    print()
    base = Result("annotate", 0, 0.0, [t for r in results["annotate"] for t in r.ttft_s])
    base_p50 = sorted(base.ttft_s)[len(base.ttft_s) // 2]
    for name in names:
        merged = Result(name, sum(r.tokens for r in results[name]), sum(r.seconds for r in results[name]),
                        [t for r in results[name] for t in r.ttft_s])
        p50 = sorted(merged.ttft_s)[len(merged.ttft_s) // 2]
        print(f"{merged.line()}   TTFT p50 vs annotate: {p50 / base_p50:.2f}x (+{(p50 - base_p50) * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
