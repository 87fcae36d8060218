"""The safety hook on a GPU: what one engine step pays for it, and whether it makes the host wait.

vLLM calls `HookRuntime.apply` inside the forward pass, once per hooked layer per step. On a GPU
the host only queues work; any device->host wait there (`.tolist()`, `.item()`, `nonzero`, a copy
from pageable memory) stalls the host until the GPU has caught up, so the rest of the forward is
launched late. This runs the shipped SafetyMiddleware (embedded SAE, detection plus a tier) through
the real `HookRuntime.apply` for a decode step of R requests (one token each) and for a prefill
chunk, on the CPU and on CUDA, interleaved, and counts the host waits of one CUDA step with
torch's sync debug mode, naming the line of each.

    python -m bench.gpu_step [--requests 1,16,64,256] [--tiers off,light,strong] [--iters 100]

Needs torch, numpy, safetensors, tqdm and pyzmq only (no vLLM), so it runs on a bare GPU machine.
The waits that remain are the side outputs' copies to the host (one per output per step), which the
side channel needs as Python values. Torch's sync debug mode is a prototype and says it may miss
some waits, so "2" is a floor. The times are wall-clock per step with the GPU idle before and
after, so they are launch and Python cost, not GPU time; the CPU column runs on the same machine.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from middleware.assets import EMBEDDED_FEATURES
from middleware.detection import FeatureSet, SafetyMiddleware
from middleware.hooks import BatchLayout
from middleware.sae import load_sae_config
from serving.engine.hook_runtime import HookRuntime

REPO = Path(__file__).resolve().parents[1]


def step_layout(requests: int, tokens_each: int, tier: str) -> BatchLayout:
    """R requests of `tokens_each` tokens; 1 = a decode step (past a 20-token prompt), more = prefill."""
    decode = tokens_each == 1
    return BatchLayout.from_spans(
        [f"r{i}" for i in range(requests)],
        [(i * tokens_each, (i + 1) * tokens_each) for i in range(requests)],
        [20 if decode else 0] * requests, [8 if decode else tokens_each] * requests,
        request_args=[{"rid": f"s{i}", "steering": {"tier": tier}} for i in range(requests)],
        token_ids=torch.randint(100, 1000, (requests * tokens_each,)))


def runtime_on(layer: int) -> HookRuntime:
    mw = SafetyMiddleware(layer=layer, d_model=576, features_path=str(EMBEDDED_FEATURES))
    return HookRuntime({layer: [mw]}, sender=None)


def one_step(runtime: HookRuntime, layout: BatchLayout, hidden: torch.Tensor, residual: torch.Tensor,
             layer: int) -> torch.Tensor:
    """What the engine does per step: begin (layout), the hook op, end (side outputs shipped)."""
    runtime.layout = layout
    runtime._rids = {r: a["rid"] for r, a in zip(layout.request_ids, layout.request_args, strict=True)}
    out = runtime.apply(hidden, residual, layer)
    runtime.end_step()
    return out


def host_waits(fn: Callable[[], object]) -> collections.Counter[str]:
    """The device->host waits `fn` makes on CUDA, by the line of ours (or torch's) that made them."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")

    def where(w: warnings.WarningMessage) -> str:
        path = Path(w.filename)
        return f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{w.lineno}"

    return collections.Counter(where(w) for w in caught if "called a synchronizing" in str(w.message))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", default="1,16,64,256", help="requests per decode step")
    parser.add_argument("--tiers", default="off,light,strong")
    parser.add_argument("--prefill", type=int, default=512, help="tokens of the prefill chunk (one request)")
    parser.add_argument("--iters", type=int, default=100)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    torch.manual_seed(0)
    layer = load_sae_config(FeatureSet.load(EMBEDDED_FEATURES).sae_path).hook_layer
    devices = {"cpu": torch.device("cpu"), "cuda": torch.device("cuda")}
    runtimes = {name: runtime_on(layer) for name in devices}
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; shipped SAE at layer {layer}, fp32; "
          f"median of {args.iters} steps, CPU and CUDA interleaved\n")
    print("| step | tier | CPU us/step | CUDA us/step | host waits per CUDA step (where) | CUDA == CPU |")
    print("|---|---|---|---|---|---|")
    cases = [(f"decode, {r} req", int(r), 1) for r in args.requests.split(",")]
    cases += [("decode, 16/15 req alternating", 16, 1), (f"prefill, {args.prefill} tok", 1, args.prefill)]
    for label, requests, each in cases:
        for tier in args.tiers.split(","):
            # The alternating case changes the batch every step, so the steering tables are rebuilt.
            layouts = [step_layout(requests, each, tier)]
            if "alternating" in label:
                layouts.append(step_layout(requests - 1, each, tier))
            steps = []
            for layout in layouts:
                n = layout.num_tokens
                hidden, residual = torch.randn(n, 576) * 2, torch.randn(n, 576) * 2  # (T, d)
                steps.append((layout, {name: (hidden.to(d), residual.to(d)) for name, d in devices.items()}))
            same = True
            for layout, inputs in steps:  # warm-up, and CUDA's result against the CPU's
                outs = {name: one_step(runtimes[name], layout, *inputs[name], layer) for name in devices}
                same &= torch.allclose(outs["cuda"].cpu(), outs["cpu"], rtol=1e-3, atol=1e-3)

            def run(name: str, i: int) -> None:
                layout, inputs = steps[i % len(steps)]
                one_step(runtimes[name], layout, *inputs[name], layer)

            waits = host_waits(lambda: [run("cuda", i) for i in range(len(steps))])
            times: dict[str, list[float]] = {name: [] for name in devices}
            for i in range(args.iters):
                for name in (list(devices) if i % 2 else list(devices)[::-1]):
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    run(name, i)
                    torch.cuda.synchronize()
                    times[name].append(time.perf_counter() - start)
            where = ", ".join(f"{k} x{v}" for k, v in waits.most_common()) or "-"
            print(f"| {label} | {tier} | {statistics.median(times['cpu']) * 1e6:.0f} | "
                  f"{statistics.median(times['cuda']) * 1e6:.0f} | {sum(waits.values()) / len(steps):g} "
                  f"({where}) | {same} |", flush=True)

if __name__ == "__main__":
    main()
