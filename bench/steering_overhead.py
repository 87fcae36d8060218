"""What in-engine steering costs: vLLM compiled with no hooks vs the steering middleware in the graph.

Same prompts and load in every phase (raw vLLM in this process, no server, so only the engine
differs). Phases:
  off           vLLM's fastest mode: compiled, no middleware at all
  steer-0       steering middleware in the compiled graph, no request steered (the price of the hook)
  steer-1/8/32  every request steered, with 1, 8 or 32 distinct specs in the batch; each spec
                conditionally ablates/clamps SAE features where they fire, so every step runs the SAE
                encoder for the gate features plus the decoder edit
The SAE is seeded random at the width of the SmolLM2 SAE we plan (d_sae = 8 x 576); the cost
does not depend on what its features mean.

    .venv/bin/python bench/steering_overhead.py [--requests 32] [--tokens 64] [--concurrency 16] [--eager]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from common import bench_raw, prompts

from middleware.hooks import REQUEST_ARGS_KEY
from middleware.settings import cache_dir
from serving.config import ModelConfig
from serving.engine.plugin import ADDITIONAL_CONFIG_KEY

D_MODEL, D_SAE, LAYER = 576, 8 * 576, 12


def bench_sae() -> str:
    """A fixed path, so vLLM's compile cache (keyed on the config, path included) hits on reruns."""
    path = cache_dir() / "bench" / f"random-standard-{D_MODEL}x{D_SAE}"
    if not (path / "cfg.json").exists():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.middleware.builders import build_sae

        build_sae("standard", d_in=D_MODEL, d_sae=D_SAE, seed=0).save(path)
    return str(path)


def spec(k: int) -> dict[str, Any]:
    """Distinct spec number k: gated ablation of 4 features + a clamp, different features per k."""
    feats = [(7 * k + j) % D_SAE for j in range(4)]
    return {"interventions": [{"feature": f, "mode": "ablate", "strength": 0.0} for f in feats]
            + [{"feature": (7 * k + 5) % D_SAE, "mode": "clamp", "strength": -1.0}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--eager", action="store_true", help="also measure the eager-mode fallback")
    args = parser.parse_args()

    model = ModelConfig(name="smollm2-135m-instruct")
    texts = prompts(args.requests)
    steering_cfg = {ADDITIONAL_CONFIG_KEY: {"middleware": [{
        "cls": "middleware.steering:SAESteeringMiddleware", "layer": LAYER,
        "args": {"sae_path": bench_sae(), "tiers": {}, "steer_positions": "both"}}]}}
    print(f"{args.requests} requests x {args.tokens} tokens, concurrency {args.concurrency}, {os.cpu_count()} CPUs; "
          f"SAE {D_MODEL}x{D_SAE} at layer {LAYER}", flush=True)

    def run(name: str, eager: bool, distinct: int | None) -> Any:
        kwargs: dict[str, Any] = {"enable_prefix_caching": False}
        extra = None
        if distinct is not None:
            kwargs["additional_config"] = steering_cfg
            if distinct:
                extra = lambda i: {REQUEST_ARGS_KEY: {"steering": spec(i % distinct)}}  # noqa: E731
        return asyncio.run(bench_raw(name, model, texts, args.tokens, args.concurrency, eager, kwargs, extra))

    # One engine per phase. The unhooked baseline runs first and last: the mean of the two is
    # the reference, and their spread shows how noisy this machine is.
    results = [run("off", False, None), run("steer-0", False, 0)]
    results += [run(f"steer-{k}", False, k) for k in (1, 8, 32)]
    results.append(run("off (again)", False, None))
    if args.eager:
        results += [run("off-eager", True, None), run("steer-8-eager", True, 8)]

    print()
    for r in results:
        print(r.line())
    offs = [r.tok_s for r in results if r.name.startswith("off") and "eager" not in r.name]
    base = sum(offs) / len(offs)
    print(f"\nthroughput vs vLLM compiled without hooks (mean of the two 'off' runs, {base:.1f} tok/s; "
          f"they differ by {abs(offs[0] - offs[1]) / base:.0%}):")
    for r in results:
        if not r.name.startswith("off"):
            print(f"  {r.name:<14} {r.tok_s / base:.2f}x")


if __name__ == "__main__":
    main()
