"""What removing the host sync from apply_steering costs on CPU: dense vs gathered, side by side.

apply_steering can gather the steerable tokens first (`nonzero`: a host sync on a GPU, and a
data-dependent shape a CUDA graph cannot capture) or compute every token and mask (dense: no sync).
On a CPU there is nothing to wait for, so the only question is work. This times both on the shipped
SAE (the embedded model's TopK SAE) and the `light` tier's plan (ablate the toxicity features where
one fires), interleaved, for a decode-like batch (every token steerable) and a prefill-like one (a
long prompt of which only a few tokens may be steered: steering applies to generated tokens).

    .venv/bin/python -m bench.steering_sync [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from middleware.assets import EMBEDDED_FEATURES
from middleware.detection import FeatureSet
from middleware.interventions import PlanBatch, SteeringPlan, apply_steering
from middleware.sae import load_sae
from middleware.tiers import parse_preset


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    features = FeatureSet.load(EMBEDDED_FEATURES)
    sae = load_sae(features.sae_path)
    tier = parse_preset("light", features.tiers()["light"])
    plan = SteeringPlan.compile(tier.interventions, sae, tier.gate)
    cases = {  # name: (tokens, steerable tokens, requests)
        "decode: 64 requests x 1 token, all steerable": (64, 64, 64),
        "prefill: 512 prompt tokens, 8 steerable": (512, 8, 1),
    }
    print(f"{'batch':<48} {'gathered':>10} {'dense':>10} {'dense/gathered':>15}")
    for name, (n, steerable, requests) in cases.items():
        h = torch.randn(n, sae.cfg.d_in) * 4
        rows = torch.arange(n) * requests // n
        batch = PlanBatch.from_plans([plan] * requests, rows, sae)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[n - steerable:] = True
        timings = {"gathered": [], "dense": []}
        for _ in range(3):  # interleaved rounds, so drift hits both alike
            for mode in timings:
                timings[mode].append(_time(lambda: apply_steering(h, sae, batch, mask, dense=mode == "dense"),
                                           args.repeats // 3))
        g, d = statistics.median(timings["gathered"]), statistics.median(timings["dense"])
        print(f"{name:<48} {g * 1e3:8.3f} ms {d * 1e3:8.3f} ms {d / g:14.2f}x")


if __name__ == "__main__":
    main()
