"""What the in-graph detector costs per decode step: two features files side by side, in one run.

The engine calls `SafetyMiddleware` once per step with the step's flattened batch; this times
exactly that call (pure torch, CPU, fp32) for the features file at a git revision (the
baseline, e.g. the one before a reselection) and the working tree's (or `--features FILE`, e.g.
a detector on another layer's SAE), interleaved so drift on a shared machine hits both alike, for
a decode step (one token per request, nobody steered) and for a steered step (every request on
tier `medium`). The server's side of the detector is timed too: combining one token's m feature
activations into the running score (RunningScore.add), which grows with m.

    .venv/bin/python bench/detector_cost.py [--baseline e1d9eb1] [--features FILE] [--requests 16]
                                            [--iters 400]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from middleware.assets import EMBEDDED_ASSETS, EMBEDDED_FEATURES
from middleware.detection import FeatureSet, RunningScore, SafetyMiddleware
from middleware.hooks import BatchLayout
from middleware.sae import load_sae_config

REPO = Path(__file__).resolve().parents[1]


def checkout_assets(rev: str, into: Path) -> Path:
    """The features file and SAE at `rev`, written under `into`; returns the features file."""
    rel = EMBEDDED_ASSETS.relative_to(REPO)
    for name in ("features.json", "sae/cfg.json", "sae/sae_weights.safetensors"):
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(subprocess.run(["git", "show", f"{rev}:{rel / name}"], cwd=REPO, check=True,
                                          capture_output=True).stdout)
    return into / "features.json"


def decode_step(requests: int, tier: str) -> BatchLayout:
    """One generated token per request (positions past the prompt)."""
    return BatchLayout.from_spans([f"r{i}" for i in range(requests)], [(i, i + 1) for i in range(requests)],
                                  [20] * requests, [8] * requests,
                                  request_args=[{"steering": {"tier": tier}} for _ in range(requests)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="e1d9eb1", help="git revision of the baseline features file")
    parser.add_argument("--features", type=Path, default=EMBEDDED_FEATURES,
                        help="features file to compare with the baseline (default: the shipped one)")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--iters", type=int, default=400)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        other = "working tree" if args.features == EMBEDDED_FEATURES else args.features.parent.name
        baseline = checkout_assets(args.baseline, Path(tmp))
        files = {f"baseline ({args.baseline})": baseline, other: args.features}
        mids = {name: SafetyMiddleware(layer=load_sae_config(FeatureSet.load(path).sae_path).hook_layer, d_model=576,
                                       features_path=str(path)) for name, path in files.items()}
        stream = torch.randn(args.requests, 576) * 3  # (T, d)
        for tier in ("off", "medium"):
            layout = decode_step(args.requests, tier)
            times: dict[str, list[float]] = {name: [] for name in mids}
            for i in range(args.iters):
                for name, mid in (list(mids.items()) if i % 2 else list(mids.items())[::-1]):
                    start = time.perf_counter()
                    mid(stream, layout)
                    times[name].append(time.perf_counter() - start)
            base = statistics.median(times[next(iter(times))])
            for name, ts in times.items():
                m = len(mids[name].feature_set.features)
                print(f"tier {tier:6s} {name:24s} {m:3d} features  median {statistics.median(ts) * 1e6:8.1f} us/step"
                      f"  ratio {statistics.median(ts) / base:.3f}")
        # The server: one token's activations (m,) into the request's running score.
        adds: dict[str, list[float]] = {name: [] for name in mids}
        for i in range(args.iters):
            for name, mid in (list(mids.items()) if i % 2 else list(mids.items())[::-1]):
                score = RunningScore(mid.feature_set.params())
                rows = torch.rand(16, len(mid.feature_set.features)).tolist()
                start = time.perf_counter()
                for row in rows:
                    score.add(row)
                adds[name].append((time.perf_counter() - start) / len(rows))
        base = statistics.median(adds[next(iter(adds))])
        for name, ts in adds.items():
            m = len(mids[name].feature_set.features)
            print(f"server {name:24s} {m:3d} features  median {statistics.median(ts) * 1e6:8.1f} us/token"
                  f"  ratio {statistics.median(ts) / base:.3f}")


if __name__ == "__main__":
    main()
